//! The dispatch-boundary probe (src/probe.rs, kernels/chain_probe.comp): a chain of
//! dependent integer mat-vec stages run as one dispatch per stage and as one chained
//! dispatch (with and without weights loaded before the wait) must all equal the host's
//! reference bit for bit, and no waiting workgroup may give up.
//!
//! On lavapipe the chain is checked on one of its threads (LP_NUM_THREADS=1, set here before
//! the device exists): workgroups then run one after another in the order they take their
//! index, so this checks the chain's indexing, slots and counter resets but not its memory
//! ordering. lavapipe 22.3 (Debian 12's) does not run a workgroup that spins on another
//! workgroup's counter as written: on 4 threads its polling loop ended with the counter one
//! short of its target, or read the previous stage's output stale, in up to 7 runs of 10
//! (every form tried: one poller, one per subgroup, every invocation polling with atomic
//! OR, compare-and-swap or a subgroup vote). GPUs check the ordering for real:
//! `scripts/device-chain-probe.sh` runs this binary, every mode against the reference.
//!
//! `TRIT_CHAIN_PROBE=stages,rows,row_words,tokens[,workgroup]` also runs that shape (on the device
//! machine: `150,2560,86,32`, a 2B-4T token's ternary bytes in 150 stages) and prints the
//! time per token of each mode; timings are printed, never asserted.
//!
//! Needs a Vulkan device (lavapipe in CI). TRIT_VULKAN_OPTIONAL=1 skips, loudly.

mod common;

use trit_vulkan::probe::{self, ChainMode, ChainProbe};

fn available() -> bool {
    static ONE_LAVAPIPE_THREAD: std::sync::Once = std::sync::Once::new();
    // Before any Vulkan device exists in this process (every test comes through here first).
    // TRIT_VULKAN_PROBE=1: the probe's kernels are built only when asked for.
    ONE_LAVAPIPE_THREAD.call_once(|| {
        std::env::set_var("LP_NUM_THREADS", "1");
        std::env::set_var("TRIT_VULKAN_PROBE", "1");
    });
    common::vulkan_device().is_some()
}

fn check(cfg: &ChainProbe, want: Option<&[u32]>) -> Vec<probe::ChainRun> {
    let runs = probe::run(cfg, &ChainMode::ALL).expect("probe runs");
    let first = runs[0].output.clone();
    for r in &runs {
        assert!(!r.poll_gave_up, "{:?}: a workgroup gave up waiting ({cfg:?})", r.mode);
        assert_eq!(r.output, first, "{:?} differs from {:?} ({cfg:?})", r.mode, runs[0].mode);
        if let Some(w) = want {
            assert_eq!(r.output, w, "{:?} differs from the host's reference ({cfg:?})", r.mode);
        }
    }
    runs
}

#[test]
fn chained_stages_equal_dispatched_stages_and_the_reference() {
    if !available() {
        return;
    }
    // Rows not a multiple of the workgroup's 8 or 32; rows longer and shorter than the 256 words
    // loaded before the wait; several tokens (the counters reset between dispatches); many
    // short stages of many workgroups.
    for (stages, rows, row_words, tokens) in
        [(5, 60, 300, 3), (7, 128, 3, 2), (1, 8, 40, 2), (12, 36, 257, 1), (24, 512, 16, 4)]
    {
        for workgroup in [256, 1024] {
            let cfg = ChainProbe { stages, rows, row_words, tokens, poll_limit: 1 << 30, workgroup };
            let want = probe::reference(&cfg);
            check(&cfg, Some(&want));
        }
    }
}

#[test]
fn probe_fails_on_a_wrong_shape() {
    if !available() {
        return;
    }
    let cfg = ChainProbe { stages: 2, rows: 6, row_words: 4, tokens: 1, poll_limit: 1 << 20, workgroup: 256 };
    assert!(probe::run(&cfg, &ChainMode::ALL).is_err(), "rows not a multiple of 4 must be refused");
    let cfg = ChainProbe { rows: 8, workgroup: 512, ..cfg };
    assert!(probe::run(&cfg, &ChainMode::ALL).is_err(), "a workgroup size without a kernel must be refused");
}

#[test]
fn timed_shape_from_the_environment() {
    let Ok(spec) = std::env::var("TRIT_CHAIN_PROBE") else { return };
    if !available() {
        return;
    }
    let v: Vec<u32> = spec.split(',').map(|x| x.trim().parse().expect("TRIT_CHAIN_PROBE: numbers")).collect();
    assert!(v.len() == 4 || v.len() == 5, "TRIT_CHAIN_PROBE=stages,rows,row_words,tokens[,workgroup]");
    let workgroup = v.get(4).copied().unwrap_or(256);
    let cfg = ChainProbe { stages: v[0], rows: v[1], row_words: v[2], tokens: v[3], poll_limit: 1 << 22, workgroup };
    let gb = cfg.bytes_per_token() as f64 / 1e9;
    println!("chain probe {cfg:?}: {:.3} GB of weights per token", gb);
    for round in 0..3 {
        for r in check(&cfg, None) {
            let t = r.secs_per_token_submitted;
            println!(
                "round {round}: {:<76} {:9.1} us/token ({:9.1} with recording)  {:7.1} GB/s  {:6.2} us/stage",
                r.mode.name(),
                t * 1e6,
                r.secs_per_token * 1e6,
                gb / t,
                t * 1e6 / cfg.stages as f64
            );
        }
    }
}
