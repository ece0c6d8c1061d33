//! The C examples, compiled with the system `cc` against libtrit and run:
//! * examples/c/generate.c (shared and static) loads a converted fixture model and generates:
//!   the token ids must equal trit-llama's greedy tokens, and trit_generate must report bad
//!   input as -1, not crash;
//! * examples/c/finetune.c converts a fixture with trit_convert, generates, trains a LoRA
//!   adapter for a few steps with trit_train_*, saves it and loads it with llama.cpp's
//!   llama_adapter_lora_init: the losses must be finite and fall, the adapter must load here
//!   too and make the training text likelier, and bad arguments must come back as errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use trit_llama::{Batch, Context, ContextParams, Model, ModelParams, Sampler, SamplerParams, Token};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// libtrit.so and libtrit.a as built for this test run: cargo writes them next to the test
/// binary (target/release/deps); `cargo build` copies them up to target/release, which can be
/// older than the tests, so that copy is only the fallback.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    if deps.join("libtrit.so").is_file() && deps.join("libtrit.a").is_file() {
        deps.to_path_buf()
    } else {
        deps.parent().unwrap().to_path_buf()
    }
}

fn fixture_model(dir: &Path) -> PathBuf {
    let out = dir.join("model.gguf");
    let opts = trit_convert::ConvertOptions::default();
    trit_convert::convert(&root().join("tests/fixtures/bitnet-2b4t-bf16"), &out, &opts).unwrap();
    out
}

fn greedy_ids(model: &Path, prompt: &str, n: usize) -> Vec<Token> {
    // As the C programs do: trit_init() routes the CPU products to trit's kernels (whose
    // logits differ from ggml's in float summation order, enough to flip a near-tie of this
    // random-weight model's greedy choice).
    assert_eq!(trit::trit_init(), trit::TRIT_OK);
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

fn compile(dir: &Path, source: &str, name: &str, link: &[&str]) -> PathBuf {
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg(root().join("examples/c").join(source))
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

/// A compiled example, to run. cargo test sets LD_LIBRARY_PATH to target/release first, which
/// would override the executable's run path and load an older libtrit.so from there.
fn c_program(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env_remove("LD_LIBRARY_PATH");
    c
}

fn check(exe: &Path, model: &Path, want: &[Token]) {
    let out = c_program(exe).arg(model).arg("The capital of France is").arg("12").output().unwrap();
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
        "generate.c",
        "gen-shared",
        &["-L", libs.to_str().unwrap(), "-ltrit", &format!("-Wl,-rpath,{}", libs.display())],
    );
    check(&shared, &model, &want);

    let static_lib = libs.join("libtrit.a");
    let stat = compile(
        dir.path(),
        "generate.c",
        "gen-static",
        &[static_lib.to_str().unwrap(), "-lstdc++", "-lgomp", "-lm", "-lpthread", "-ldl"],
    );
    check(&stat, &model, &want);
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. \
    The early bird catches the worm. All that glitters is not gold.";

/// The value after `key` on the line that starts with it.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == key).unwrap_or_else(|| panic!("no '{key}' in {line:?}"));
    words.next().unwrap_or_else(|| panic!("nothing after '{key}' in {line:?}"))
}

#[test]
fn c_finetune_example_converts_generates_trains_and_saves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.txt");
    std::fs::write(&data, format!("{TEXT}\n").repeat(8)).unwrap();
    let libs = lib_dir();
    let shared = compile(
        dir.path(),
        "finetune.c",
        "finetune-shared",
        &["-L", libs.to_str().unwrap(), "-ltrit", &format!("-Wl,-rpath,{}", libs.display()), "-lm"],
    );
    let static_lib = libs.join("libtrit.a");
    let stat = compile(
        dir.path(),
        "finetune.c",
        "finetune-static",
        &[static_lib.to_str().unwrap(), "-lstdc++", "-lgomp", "-lm", "-lpthread", "-ldl"],
    );
    for exe in [shared, stat] {
        let out_dir = dir.path().join(format!("{}.out", exe.file_name().unwrap().to_string_lossy()));
        std::fs::create_dir(&out_dir).unwrap();
        check_finetune(&exe, &data, &out_dir);
    }
}

/// Run examples/c/finetune.c's program and check each stage it prints.
fn check_finetune(exe: &Path, data: &Path, out_dir: &Path) {
    const STEPS: usize = 8;
    let out = c_program(exe)
        .arg(root().join("tests/fixtures/bitnet-2b4t-bf16"))
        .arg(data)
        .arg(out_dir)
        .arg(STEPS.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let with = |key: &str| -> Vec<&str> { lines.iter().copied().filter(|l| l.starts_with(key)).collect() };

    // Conversion through trit_convert wrote a model llama.cpp loads (the C program generated with it).
    let model_path = out_dir.join("model.gguf");
    assert_eq!(with("converted "), [format!("converted {}", model_path.display())]);
    let base: Vec<Token> = with("base ")[0].split(' ').skip(1).map(|s| s.parse().unwrap()).collect();
    assert_eq!(base, greedy_ids(&model_path, "The quick brown fox", 8), "the C program's greedy tokens");

    // Training: one line per window, finite losses that fall.
    let n_windows: i64 = field(with("windows ")[0], "windows").parse().unwrap();
    assert!(n_windows >= 1);
    let steps = with("step ");
    assert_eq!(steps.len(), STEPS, "{stdout}");
    let mut losses = Vec::new();
    for (i, l) in steps.iter().enumerate() {
        assert_eq!(field(l, "step"), (i + 1).to_string(), "one AdamW step per 256-token window");
        let loss: f64 = field(l, "loss").parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{l}");
        losses.push(loss);
    }
    let (first, last) = (losses[0], losses[STEPS - 1]);
    assert!(last < 0.8 * first, "the loss did not fall: {losses:?}");

    // The adapter: written, loadable by llama.cpp (here too), trained (B no longer zero).
    let adapter = out_dir.join("adapter.gguf");
    assert_eq!(with("saved "), [format!("saved {}", adapter.display())]);
    let w = trit_finetune::LoraWeights::load(&adapter).unwrap();
    assert_eq!(w.pairs[0].rank, 8);
    assert_eq!(w.alpha, 16.0);
    assert_eq!(w.targets(), trit_finetune::ALL_TARGETS);
    assert!(w.pairs.iter().all(|p| p.b.iter().any(|&v| v != 0.0)), "every B was updated");
    let model = Model::load(&model_path, &ModelParams::default()).unwrap();
    trit_llama::LoraAdapter::load(&model, &adapter).expect("llama_adapter_lora_init loads the adapter");
    let nll = with("nll ")[0];
    let (nll_base, nll_tuned): (f64, f64) = (field(nll, "base").parse().unwrap(), field(nll, "tuned").parse().unwrap());
    assert!(nll_tuned < nll_base, "the adapter should make the training text likelier: {nll}");
    assert_eq!(with("tuned ")[0].split(' ').count(), 9);

    // Bad arguments: negative codes and a message naming the problem.
    let errors = with("error ");
    assert_eq!(errors.len(), 4, "{stdout}");
    let expect = [
        ("-1", "model_path must not be NULL"),
        ("-1", "trainer must not be NULL"),
        ("-1", "weight_type 42"),
        ("-2", "/nonexistent/data.txt"),
    ];
    for (line, (code, msg)) in errors.iter().zip(expect) {
        assert_eq!(field(line, "error"), code, "{line}");
        assert!(line.contains(msg), "{line}");
    }
}
