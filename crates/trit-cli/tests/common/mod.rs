//! Shared helpers for the end-to-end tests: the built `trit` binary, the committed
//! transformers fixtures, and converted GGUFs cached for the whole test binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub const MODELS: [&str; 3] = ["bitnet-2b4t-bf16", "bitnet-2b4t-packed", "bitnet-1bitllm"];

pub fn trit() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trit"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

/// Run the binary (as `prog`, for multi-call names) and return its output.
pub fn run_as(prog: &Path, args: &[&str]) -> Output {
    Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", prog.display()))
}

pub fn run(args: &[&str]) -> Output {
    run_as(&trit(), args)
}

/// Run and require success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "trit {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Random-weight fixtures may emit partial UTF-8 sequences: compare lossy text.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `trit convert` a fixture once per (model, weight type) for this test binary.
pub fn converted(model: &str, ty: &str) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.get(&(model.to_string(), ty.to_string())) {
        return p.clone();
    }
    let out = scratch().join(format!("{model}-{ty}.gguf"));
    let dir = fixtures().join(model);
    ok(&["convert", dir.to_str().unwrap(), "-o", out.to_str().unwrap(), "--type", ty, "--no-progress"]);
    guard.insert((model.to_string(), ty.to_string()), out.clone());
    out
}

/// One prompt of a fixture's reference.json.
pub struct RefPrompt {
    pub text: String,
    pub ids: Vec<i32>,
    pub logits: (Vec<usize>, Vec<f32>),
    pub weight_only: (Vec<usize>, Vec<f32>),
}

pub fn reference(model: &str) -> Vec<RefPrompt> {
    let dir = fixtures().join(model);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| RefPrompt {
            text: p["text"].as_str().unwrap().to_string(),
            ids: p["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect(),
            logits: trit_cli::npy::read_f32(&dir.join(p["logits_file"].as_str().unwrap())).unwrap(),
            weight_only: trit_cli::npy::read_f32(&dir.join(p["weight_only_logits_file"].as_str().unwrap())).unwrap(),
        })
        .collect()
}

/// `trit logits` for token ids; returns (shape, data).
pub fn trit_logits(model: &Path, ids: &[i32], extra: &[&str]) -> (Vec<usize>, Vec<f32>) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = scratch().join(format!("logits-{n}.npy"));
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let ids = ids.join(",");
    let mut args = vec!["logits", "-m", model.to_str().unwrap(), "--ids", &ids, "-o", out.to_str().unwrap(), "-t", "2"];
    args.extend_from_slice(extra);
    ok(&args);
    trit_cli::npy::read_f32(&out).unwrap()
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0
}

/// top-1 minus top-2 of a row.
pub fn margin(row: &[f32]) -> f32 {
    let mut v = row.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    v[0] - v[1]
}

/// Compare logits with a reference: returns (max |a-b| / max |ref|, max |a-b|).
pub fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "logit shapes differ");
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (max_diff / max_ref, max_diff)
}
