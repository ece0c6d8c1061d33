//! A measurement for issue #4's roofline target (`kernels/chain_probe.comp`): a decode
//! token is ~157 dependent dispatches, and what each dispatch boundary costs decides how
//! close to the memory roofline a token can get. This runs the same chain of synthetic
//! integer mat-vec stages several ways and times them:
//!
//! * [`ChainMode::Dispatch`]: one dispatch per stage behind a pipeline barrier (as the decode
//!   path records a token today);
//! * [`ChainMode::Chain`]: all stages in one dispatch, each workgroup taking its index from a
//!   counter as it starts and waiting only for the previous stage's workgroups (which started
//!   before it); `prefetch`: each workgroup loads its first weight words before it waits, so
//!   weight reads overlap the previous stage; `one_poller`: one invocation polls the counter
//!   for its workgroup instead of every invocation.
//!
//! Results are exact integers: every mode must equal [`reference`] bit for bit.

use std::time::Instant;

use crate::dispatch::{Push, Recorder};
use crate::error::{Error, Result};

/// Lanes per row in the kernel (`LANES`).
const LANES: u32 = 32;
/// Largest vector the kernel keeps in shared memory (`MAX_N`).
const MAX_N: u32 = 4096;
/// INIT's invocations (256 per workgroup).
const INIT_GROUPS: u32 = 1024;

/// The chain's shape.
#[derive(Clone, Copy, Debug)]
pub struct ChainProbe {
    /// Dependent stages per token.
    pub stages: u32,
    /// Rows per stage (= the vector length; a multiple of 4, at most 4096).
    pub rows: u32,
    /// 16-byte weight words per row.
    pub row_words: u32,
    /// Tokens recorded into one submission.
    pub tokens: u32,
    /// Polls before a waiting workgroup gives up (and the run is reported as failed).
    pub poll_limit: u32,
    /// Invocations per workgroup: 256 (8 rows) or 1024 (32 rows, the `_w` kernels).
    pub workgroup: u32,
}

impl ChainProbe {
    /// Weight bytes one token reads.
    pub fn bytes_per_token(&self) -> u64 {
        self.stages as u64 * self.rows as u64 * self.row_words as u64 * 16
    }

    fn groups(&self) -> u32 {
        self.rows.div_ceil(self.workgroup / LANES)
    }

    /// The kernel of this workgroup size.
    fn kernel(&self, one_poller: bool) -> &'static str {
        match (self.workgroup == 1024, one_poller) {
            (false, false) => "chain_probe",
            (false, true) => "chain_probe_one",
            (true, false) => "chain_probe_w",
            (true, true) => "chain_probe_one_w",
        }
    }

    fn check(&self) -> Result<()> {
        let q = self.stages as u64 * self.rows as u64 * self.row_words as u64;
        if self.stages == 0
            || self.rows == 0
            || self.rows % 4 != 0
            || self.rows > MAX_N
            || self.row_words == 0
            || self.tokens == 0
            || !(self.workgroup == 256 || self.workgroup == 1024)
            || q >= 1 << 30
            || self.stages as u64 * self.groups() as u64 > u32::MAX as u64
        {
            return Err(Error::Unsupported {
                node: "chain probe".into(),
                op: String::new(),
                why: format!("unsupported shape {self:?}"),
            });
        }
        Ok(())
    }
}

/// How the stages are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainMode {
    Dispatch,
    Chain { prefetch: bool, one_poller: bool },
}

impl ChainMode {
    /// Every mode, in the order the device script prints them.
    pub const ALL: [ChainMode; 5] = [
        ChainMode::Dispatch,
        ChainMode::Chain { prefetch: false, one_poller: false },
        ChainMode::Chain { prefetch: true, one_poller: false },
        ChainMode::Chain { prefetch: false, one_poller: true },
        ChainMode::Chain { prefetch: true, one_poller: true },
    ];

    pub fn name(self) -> String {
        match self {
            ChainMode::Dispatch => "dispatch per stage".into(),
            ChainMode::Chain { prefetch, one_poller } => format!(
                "one dispatch, chained{}{}",
                if prefetch { ", weights loaded before the wait" } else { "" },
                if one_poller { ", one poller per workgroup" } else { "" }
            ),
        }
    }
}

/// One mode's run.
#[derive(Debug)]
pub struct ChainRun {
    pub mode: ChainMode,
    /// Wall time from recording to results, per token.
    pub secs_per_token: f64,
    /// Wall time from the final submission to results, per token: the GPU's time when the
    /// whole recording is submitted at once (`TRIT_VULKAN_CHUNK` larger than its dispatches).
    pub secs_per_token_submitted: f64,
    /// The vector after the last token.
    pub output: Vec<u32>,
    /// A waiting workgroup gave up polling (the output is then not to be trusted).
    pub poll_gave_up: bool,
}

fn h(mut i: u32) -> u32 {
    i ^= i >> 16;
    i = i.wrapping_mul(0x7feb352d);
    i ^= i >> 15;
    i = i.wrapping_mul(0x846ca68b);
    i ^= i >> 16;
    i
}

/// The first token's input vector.
fn initial(rows: u32) -> Vec<u32> {
    (0..rows).map(|i| h(i ^ 0x9e37_79b9)).collect()
}

/// The vector after `cfg.tokens` tokens, on the host (wrapping integer arithmetic, as the
/// kernel's).
pub fn reference(cfg: &ChainProbe) -> Vec<u32> {
    let (n, kw) = (cfg.rows as usize, cfg.row_words as usize);
    let mut x = initial(cfg.rows);
    for _ in 0..cfg.tokens {
        for s in 0..cfg.stages as usize {
            let y: Vec<u32> = (0..n)
                .map(|r| {
                    let base = ((s * n + r) * kw) as u32;
                    let mut acc = 0u32;
                    for j in 0..kw {
                        let e = (4 * j) % n;
                        let q = 4 * (base + j as u32);
                        for c in 0..4 {
                            acc = acc.wrapping_add(h(q + c as u32).wrapping_mul(x[e + c]));
                        }
                    }
                    acc ^ s as u32
                })
                .collect();
            x = y;
        }
    }
    x
}

/// Run the chain in each of `modes` on the backend's device, each from the same input. The
/// device must have been created with `TRIT_VULKAN_PROBE=1` in the environment (the probe's
/// kernels are not built otherwise).
pub fn run(cfg: &ChainProbe, modes: &[ChainMode]) -> Result<Vec<ChainRun>> {
    cfg.check()?;
    crate::ffi::backend_reg().map_err(Error::Unavailable)?;
    let gpu = crate::ffi::gpu().ok_or_else(|| Error::Unavailable("no Vulkan device".into()))?;
    if !gpu.has_pipeline("chain_probe_init") {
        return Err(Error::Unavailable(
            "the probe's kernels were not built: set TRIT_VULKAN_PROBE=1 before the Vulkan device is created".into(),
        ));
    }
    // Weights; S + 1 vector slots; the index counter, the give-up flag and S stage counters.
    let wbytes = cfg.bytes_per_token();
    let xbytes = (cfg.stages as u64 + 1) * cfg.rows as u64 * 4;
    let cbytes = (2 + cfg.stages as u64) * 4;
    let w = gpu.alloc(wbytes)?;
    let x = gpu.alloc(xbytes)?;
    let c = gpu.alloc(cbytes)?;
    let result = (|| {
        let mut rec = Recorder::new(gpu.clone())?;
        let (n, g, s) = (cfg.rows, cfg.groups(), cfg.stages);
        let base_push = Push { d_ne: [n, cfg.row_words, g, s], ..Default::default() };
        let bind = |rec: &Recorder| -> Result<_> {
            Ok([
                rec.bind_bytes_aligned(&w, 0, wbytes, 16)?,
                rec.bind_bytes(&x, 0, xbytes, 4)?,
                rec.bind_bytes(&c, 0, cbytes, 4)?,
            ])
        };
        rec.begin()?;
        let mut push = base_push;
        push.d_nb[2] = INIT_GROUPS * 256;
        rec.dispatch_n("chain_probe_init", &bind(&rec)?, &[true, false, false], push, INIT_GROUPS as u64)?;
        rec.finish()?;

        let x0: Vec<u8> = initial(n).iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut runs = Vec::new();
        for &mode in modes {
            gpu.write(&x, 0, &x0)?;
            gpu.fill(&c, 0)?;
            let t0 = Instant::now();
            rec.begin()?;
            let bufs = bind(&rec)?;
            let written = [false, true, true];
            for t in 0..cfg.tokens {
                let mut push = base_push;
                push.d_nb[1] = cfg.poll_limit;
                push.d_nb[3] = t;
                match mode {
                    ChainMode::Dispatch => {
                        for stage in 0..s {
                            push.d_nb[0] = stage;
                            rec.dispatch_n(cfg.kernel(false), &bufs, &written, push, g as u64)?;
                        }
                    }
                    ChainMode::Chain { prefetch, one_poller } => {
                        push.m1[1] = 1 | if prefetch { 2 } else { 0 };
                        rec.dispatch_n(cfg.kernel(one_poller), &bufs, &written, push, s as u64 * g as u64)?;
                    }
                }
            }
            let t1 = Instant::now();
            rec.finish()?;
            let per_token = |t: Instant| t.elapsed().as_secs_f64() / cfg.tokens as f64;
            let (secs, secs_submitted) = (per_token(t0), per_token(t1));
            let mut out = vec![0u8; n as usize * 4];
            // After T tokens of S stages the vector is in slot (T * S) mod (S + 1).
            let slot = (cfg.tokens as u64 * s as u64) % (s as u64 + 1);
            gpu.read(&x, slot * n as u64 * 4, &mut out)?;
            let mut flag = [0u8; 4];
            gpu.read(&c, 4, &mut flag)?;
            runs.push(ChainRun {
                mode,
                secs_per_token: secs,
                secs_per_token_submitted: secs_submitted,
                output: out.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                poll_gave_up: u32::from_le_bytes(flag) != 0,
            });
        }
        Ok(runs)
    })();
    for a in [&w, &x, &c] {
        gpu.free(a);
    }
    result
}
