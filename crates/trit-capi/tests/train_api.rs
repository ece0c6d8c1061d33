//! trit.h's training calls from Rust, as a C caller uses them: step counts with gradient
//! accumulation, reproducibility from the seed, JSONL data, save errors, trit's CPU kernels.

use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use trit::*;

mod common;

use common::{c, last_error, root};

/// The 2B-4T layout fixture as TQ2_0 (through trit_convert) and a plain-text data file.
fn fixture() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static F: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.gguf");
        let src = c(&root().join("tests/fixtures/bitnet-2b4t-bf16"));
        // SAFETY: valid strings.
        let rc = unsafe { trit_convert(src.as_ptr(), c(&model).as_ptr(), TRIT_WEIGHT_TQ2_0, TRIT_EMBED_F16) };
        assert_eq!(rc, TRIT_OK, "{}", last_error());
        let data = dir.path().join("train.txt");
        std::fs::write(&data, "The quick brown fox jumps over the lazy dog. A stitch in time saves nine.\n".repeat(20))
            .unwrap();
        (dir, model, data)
    })
}

struct Trainer(*mut trit_trainer);

impl Drop for Trainer {
    fn drop(&mut self) {
        // SAFETY: a handle from trit_train_start, freed once.
        unsafe { trit_train_free(self.0) };
    }
}

fn start(data: &Path, p: &trit_train_params) -> Trainer {
    let (_, model, _) = fixture();
    let mut t = null_mut();
    // SAFETY: valid strings, params and out pointer.
    let rc = unsafe { trit_train_start(c(model).as_ptr(), c(data).as_ptr(), p, &mut t) };
    assert_eq!(rc, TRIT_OK, "{}", last_error());
    assert!(!t.is_null());
    Trainer(t)
}

fn params() -> trit_train_params {
    trit_train_params {
        n_ctx: 256,
        n_threads: 2,
        learning_rate: 2e-3,
        weight_decay: 0.0,
        ..trit_train_default_params()
    }
}

fn step(t: &Trainer) -> f64 {
    let mut loss = f64::NAN;
    // SAFETY: live handle, valid out pointer.
    assert_eq!(unsafe { trit_train_step(t.0, &mut loss) }, TRIT_OK, "{}", last_error());
    loss
}

#[test]
fn gradient_accumulation_counts_adamw_steps_per_window() {
    let p = trit_train_params { n_ctx: 512, n_batch: 256, n_ubatch: 128, lora_rank: 4, ..params() };
    let t = start(&fixture().2, &p);
    // SAFETY: live handle; a NULL loss pointer is allowed.
    unsafe {
        assert!(trit_train_n_windows(t.0) >= 1);
        assert_eq!(trit_train_n_steps(t.0), 0);
        assert_eq!(trit_train_step(t.0, null_mut()), TRIT_OK, "{}", last_error());
        assert_eq!(trit_train_n_steps(t.0), 2, "n_ctx / n_batch AdamW steps per window");
    }
    let l = step(&t);
    assert!(l.is_finite() && l > 0.0);
    // SAFETY: live handle.
    assert_eq!(unsafe { trit_train_n_steps(t.0) }, 4);
}

#[test]
fn the_same_seed_gives_the_same_losses_and_another_seed_does_not() {
    let data = &fixture().2;
    let run = |seed: u64| -> Vec<f64> {
        let t = start(data, &trit_train_params { seed, ..params() });
        (0..3).map(|_| step(&t)).collect()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert!(a.iter().all(|l| l.is_finite()));
    assert_ne!(a, run(8));
}

#[test]
fn jsonl_chat_data_with_assistant_only_loss() {
    let chat = root().join("examples/finetune/chat.jsonl");
    let lines = std::fs::read_to_string(&chat).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    let t = start(&chat, &trit_train_params { assistant_only: true, ..params() });
    // SAFETY: live handle.
    assert_eq!(unsafe { trit_train_n_windows(t.0) }, lines as i64, "one window per conversation");
    let l = step(&t);
    assert!(l.is_finite() && l > 0.0);

    // Plain text has no assistant turns to single out: an error, not a silent full-text loss.
    let (_, model, data) = fixture();
    let mut none = null_mut();
    let p = trit_train_params { assistant_only: true, ..params() };
    // SAFETY: valid strings, params and out pointer.
    let rc = unsafe { trit_train_start(c(model).as_ptr(), c(data).as_ptr(), &p, &mut none) };
    assert_eq!(rc, TRIT_ERR_FAILED);
    assert!(last_error().contains("JSONL"), "{}", last_error());
    assert!(none.is_null());
}

#[test]
fn save_reports_bad_paths_and_writes_a_loadable_adapter() {
    let t = start(&fixture().2, &trit_train_params { lora_targets: c"attn_q,ffn_down".as_ptr(), ..params() });
    step(&t);
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: live handle; valid or NULL strings.
    unsafe {
        let bad = c(&dir.path().join("no-such-dir/a.gguf"));
        assert_eq!(trit_train_save(t.0, bad.as_ptr()), TRIT_ERR_FAILED);
        assert!(last_error().contains("no-such-dir"), "{}", last_error());
        assert_eq!(trit_train_save(t.0, c"".as_ptr()), TRIT_ERR_INVALID_ARGUMENT);
        assert_eq!(trit_train_save(t.0, null()), TRIT_ERR_INVALID_ARGUMENT);
        let good = dir.path().join("a.gguf");
        assert_eq!(trit_train_save(t.0, c(&good).as_ptr()), TRIT_OK, "{}", last_error());
        assert_eq!(last_error(), "");
        let w = trit_finetune::LoraWeights::load(&good).unwrap();
        assert_eq!(w.targets(), ["attn_q", "ffn_down"]);
        assert_eq!(w.pairs.len(), 4, "2 layers x 2 targets");
    }
}

/// libtrit routes the CPU backend's ternary and gradient products to trit's kernels, as trit's
/// binaries do: a training step runs trit's OUT_PROD hook.
#[test]
fn training_runs_trits_cpu_kernels() {
    let t = start(&fixture().2, &params());
    let before = trit_kernels::ggml::out_prod_hook_runs();
    step(&t);
    assert!(trit_kernels::ggml::out_prod_hook_runs() > before, "a CPU training step did not run trit's OUT_PROD");
}
