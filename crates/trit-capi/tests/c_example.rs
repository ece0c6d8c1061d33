//! examples/c/generate.c, compiled with the system `cc` against libtrit (shared and static),
//! loads a converted fixture model and generates: the token ids must equal trit-llama's
//! greedy tokens, and trit_generate must report bad input as -1, not crash.

use std::path::{Path, PathBuf};
use std::process::Command;

use trit_llama::{Batch, Context, ContextParams, Model, ModelParams, Sampler, SamplerParams, Token};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// target/release (or debug): where cargo put libtrit.so and libtrit.a.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn fixture_model(dir: &Path) -> PathBuf {
    let out = dir.join("model.gguf");
    let opts = trit_convert::ConvertOptions::default();
    trit_convert::convert(&root().join("tests/fixtures/bitnet-2b4t-bf16"), &out, &opts).unwrap();
    out
}

fn greedy_ids(model: &Path, prompt: &str, n: usize) -> Vec<Token> {
    let model = Model::load(model, &ModelParams::default()).unwrap();
    let toks = model.tokenize(prompt, true, true).unwrap();
    let params = ContextParams { n_ctx: 256, n_batch: 256, n_ubatch: 256, n_threads: 2, ..Default::default() };
    let mut ctx = Context::new(&model, &params).unwrap();
    let mut s = Sampler::new(&SamplerParams { temp: 0.0, ..Default::default() }, model.n_vocab());
    let mut batch = Batch::new(toks.len());
    for (i, &t) in toks.iter().enumerate() {
        batch.push(t, i as i32, 0, i + 1 == toks.len()).unwrap();
    }
    let mut out = Vec::new();
    for i in 0..n {
        ctx.decode(&batch).unwrap();
        let t = s.sample(&ctx, -1);
        out.push(t);
        batch.clear();
        batch.push(t, (toks.len() + i) as i32, 0, true).unwrap();
    }
    out
}

fn compile(dir: &Path, name: &str, link: &[&str]) -> PathBuf {
    let exe = dir.join(name);
    let out = Command::new("cc")
        .arg(root().join("examples/c/generate.c"))
        .arg("-I")
        .arg(root().join("crates/trit-capi/include"))
        .arg("-I")
        .arg(env!("TRIT_LLAMA_INCLUDE"))
        .arg("-I")
        .arg(env!("TRIT_GGML_INCLUDE"))
        .arg("-o")
        .arg(&exe)
        .args(link)
        .output()
        .expect("the system C compiler `cc`");
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

fn check(exe: &Path, model: &Path, want: &[Token]) {
    let out = Command::new(exe).arg(model).arg("The capital of France is").arg("12").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let ids: Vec<Token> = lines[0].split(' ').map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids, want, "the C program's greedy tokens");
    assert_eq!(lines[2], lines[1], "trit_generate's text equals the llama.h loop's");
    assert!(lines[3].starts_with("-1 ") && lines[3].contains("NULL"), "{}", lines[3]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trit 0.") && stderr.contains("llama-cpp-sys-2"), "{stderr}");
}

#[test]
fn c_example_links_libtrit_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model(dir.path());
    let want = greedy_ids(&model, "The capital of France is", 12);
    let libs = lib_dir();
    assert!(libs.join("libtrit.so").is_file() && libs.join("libtrit.a").is_file(), "{}", libs.display());
    assert!(trit::n_exported_llama_functions() >= 200);

    let shared = compile(
        dir.path(),
        "gen-shared",
        &["-L", libs.to_str().unwrap(), "-ltrit", &format!("-Wl,-rpath,{}", libs.display())],
    );
    check(&shared, &model, &want);

    let static_lib = libs.join("libtrit.a");
    let stat = compile(
        dir.path(),
        "gen-static",
        &[static_lib.to_str().unwrap(), "-lstdc++", "-lgomp", "-lm", "-lpthread", "-ldl"],
    );
    check(&stat, &model, &want);
}
