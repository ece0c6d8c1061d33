//! Shared helpers: the tiny BitNet fixture converted once per test binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use trit_convert::{ConvertOptions, WeightType};
use trit_finetune::{LoraSpec, SessionParams, ALL_TARGETS};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn converted(ty: WeightType) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trit-finetune-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("tiny-{ty:?}.gguf"));
    let opts = ConvertOptions { weight_type: ty, ..Default::default() };
    trit_convert::convert(&workspace().join("tests/fixtures/bitnet-2b4t-bf16"), &out, &opts).unwrap();
    out
}

/// The bitnet-2b4t fixture (2 layers, hidden 256, vocab 512) as TQ2_0.
pub fn tq2_model() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| converted(WeightType::Tq2_0))
}

/// The same fixture with F16 projections (smooth in the activations: finite differences).
pub fn f16_model() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| converted(WeightType::F16))
}

pub fn spec(rank: u32) -> LoraSpec {
    LoraSpec { rank, alpha: 16.0, targets: ALL_TARGETS.iter().map(|s| s.to_string()).collect() }
}

pub fn params(n_ctx: u32) -> SessionParams {
    SessionParams {
        n_ctx,
        n_batch: n_ctx,
        n_ubatch: n_ctx,
        n_threads: 2,
        gradient_checkpointing: false,
        checkpoint_keep: Default::default(),
    }
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trit-ft-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub const TEXT: &str = "The quick brown fox jumps over the lazy dog. \
    A stitch in time saves nine. The early bird catches the worm. \
    All that glitters is not gold. Actions speak louder than words. ";
