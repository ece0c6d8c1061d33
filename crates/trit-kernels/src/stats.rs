//! How long trit's MUL_MAT hooks run inside a real model, and how many weight bytes they
//! read, when asked for (`TRIT_KERNEL_STATS=1`): the decode roofline compares a whole token
//! with the memory bandwidth, and these numbers split that token into the kernels' streams
//! (their own GB/s) and everything else (ggml's other ops, its barriers, the host).
//!
//! Each hook call adds, per thread, its wall time and its op's weight bytes divided by the
//! op's thread count, so the sums are an op's mean thread time and its bytes. Threads take
//! chunks from a shared counter and finish within about one chunk of each other, so the mean
//! is close to the op's wall time. Off (the default), a hook pays one relaxed load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// What a hook call computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A ternary (TQ2_0/TQ1_0) product with at most 3 activation columns (decode).
    TernaryMatVec,
    /// A ternary product with more columns (prefill, batches).
    TernaryMatMat,
    /// An f16 product of one weight matrix (the tied output head at decode).
    F16MatVec,
    /// f16 products per attention head (over the KV cache).
    F16Attention,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::TernaryMatVec, Kind::TernaryMatMat, Kind::F16MatVec, Kind::F16Attention];

    /// A short name for logs and scripts.
    pub fn name(self) -> &'static str {
        match self {
            Kind::TernaryMatVec => "ternary-matvec",
            Kind::TernaryMatMat => "ternary-matmat",
            Kind::F16MatVec => "f16-matvec",
            Kind::F16Attention => "f16-attention",
        }
    }
}

/// The sums for one [`Kind`] since the last [`take`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelTime {
    pub kind: Kind,
    /// Hook calls (ops).
    pub ops: u64,
    /// Weight bytes the ops read.
    pub bytes: u64,
    /// The ops' wall time (mean over each op's threads), seconds.
    pub secs: f64,
}

impl KernelTime {
    /// Weight bytes per second, in GB/s (0 when nothing ran).
    pub fn gbps(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / self.secs / 1e9
        } else {
            0.0
        }
    }
}

struct Sums {
    ops: AtomicU64,
    bytes: AtomicU64,
    ns: AtomicU64,
}

static SUMS: [Sums; 4] =
    [const { Sums { ops: AtomicU64::new(0), bytes: AtomicU64::new(0), ns: AtomicU64::new(0) } }; 4];
static ON: AtomicBool = AtomicBool::new(false);

/// Whether the hooks record (TRIT_KERNEL_STATS=1, read once; or [`enable`]).
pub fn enabled() -> bool {
    static FROM_ENV: OnceLock<()> = OnceLock::new();
    FROM_ENV.get_or_init(|| {
        if std::env::var("TRIT_KERNEL_STATS").is_ok_and(|v| v == "1") {
            ON.store(true, Ordering::Relaxed);
        }
    });
    ON.load(Ordering::Relaxed)
}

/// Turn recording on or off (tests; the CLI reads the environment).
pub fn enable(on: bool) {
    enabled();
    ON.store(on, Ordering::Relaxed);
}

/// The start of a hook's work on one thread, when recording.
pub(crate) fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// The end of a hook's work on thread `ith` of `nth`, begun at `t0` (from [`start`]), for an
/// op of `kind` that read `bytes` weight bytes in all.
pub(crate) fn record(t0: Option<Instant>, kind: Kind, ith: usize, nth: usize, bytes: usize) {
    let Some(t0) = t0 else { return };
    let nth = nth.max(1) as u64;
    let s = &SUMS[kind as usize];
    s.ns.fetch_add(t0.elapsed().as_nanos() as u64 / nth, Ordering::Relaxed);
    // Thread 0 counts the op and its bytes once (every thread runs the hook).
    if ith == 0 {
        s.ops.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The sums since the last call (one entry per kind, zeros included), and start again.
pub fn take() -> Vec<KernelTime> {
    Kind::ALL
        .iter()
        .map(|&kind| {
            let s = &SUMS[kind as usize];
            KernelTime {
                kind,
                ops: s.ops.swap(0, Ordering::Relaxed),
                bytes: s.bytes.swap(0, Ordering::Relaxed),
                secs: s.ns.swap(0, Ordering::Relaxed) as f64 / 1e9,
            }
        })
        .collect()
}
