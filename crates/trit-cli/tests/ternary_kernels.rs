//! Whole-model check of the trit ternary kernels inside ggml graphs: the fixture model,
//! converted to TQ2_0 and TQ1_0, gives the same logits with `--ternary-kernels trit` as
//! with ggml's own TQ kernels (odd thread count, so the row split has a ragged end), for a
//! 17-token prompt and for a single token (whose output head is a mat-vec, so trit's f16
//! kernel runs it). TQ1_0 runs on trit's kernels re-encoded as TQ2_0 at load (the
//! TRIT_REPACK buffer type); with `--no-repack` its logits are bit-identical. Token by token
//! without flash attention, leaving out the KV cells the mask hides changes no bit.

use std::path::Path;
use std::process::Command;

use trit_cli::npy;

const IDS: &str = "480,39,68,75,75,78,465,75,67,12,300,7,81,99,401,5,480";

/// Run trit; its stderr (llama.cpp's log with `-v`).
fn trit(args: &[&str]) -> String {
    trit_with_env(args, &[])
}

/// [`trit`] with these environment variables set.
fn trit_with_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_trit")).args(args).envs(env.iter().copied()).output().expect("run trit");
    assert!(out.status.success(), "trit {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The largest |logit| of `reference`, and the largest difference of `other` from it.
fn spread(reference: &[f32], other: &[f32]) -> (f32, f32) {
    let max_abs = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = reference.iter().zip(other).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (max_abs, diff)
}

/// Whether llama.cpp's load log puts weights in the repack buffer type.
fn repacked(log: &str) -> bool {
    log.lines().any(|l| l.contains("TRIT_REPACK model buffer size"))
}

#[test]
fn trit_kernels_match_ggml_logits_on_fixtures() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bitnet-2b4t-bf16");
    if !fixture.join("config.json").exists() {
        eprintln!("tests/fixtures not present; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for ty in ["tq2_0", "tq1_0"] {
        let gguf = tmp.path().join(format!("{ty}.gguf"));
        let g = gguf.to_str().unwrap();
        trit(&["convert", fixture.to_str().unwrap(), "-o", g, "--type", ty]);
        let mut logits = Vec::new();
        for (kern, threads, repack) in [("ggml", "3", ""), ("trit", "3", ""), ("trit", "1", ""), ("trit", "3", "-nr")] {
            let out = tmp.path().join(format!("{ty}-{kern}-{threads}{repack}.npy"));
            let mut args = vec!["logits", "-m", g, "--ids", IDS, "-t", threads, "--ternary-kernels", kern, "-v", "-o"];
            args.push(out.to_str().unwrap());
            if !repack.is_empty() {
                args.push(repack);
            }
            let log = trit(&args);
            // Only TQ1_0 weights, only with trit's kernels, only unless --no-repack.
            let expect = ty == "tq1_0" && kern == "trit" && repack.is_empty();
            assert_eq!(repacked(&log), expect, "{ty} {kern} {repack}: TRIT_REPACK buffer in the load log");
            let (shape, data) = npy::read_f32(&out).unwrap();
            assert_eq!(shape, vec![17, 512]);
            logits.push(data);
        }
        let (max_abs, diff) = spread(&logits[0], &logits[1]);
        eprintln!("{ty}: max |logit| {max_abs}, max |trit - ggml| {diff}");
        assert!(max_abs > 0.1, "degenerate logits");
        // Same Q8_K activations, exact integer block sums; only the f32 order of the per-block
        // accumulation differs from ggml, amplified through two layers.
        assert!(diff <= 1e-3 * max_abs, "{ty}: trit vs ggml logits differ by {diff} (max {max_abs})");
        // The kernels' result does not depend on the thread split.
        assert_eq!(logits[1], logits[2], "{ty}: 3 threads vs 1 thread");
        // TQ1_0 re-encoded as TQ2_0 (the TQ2_0 kernels) or as stored (the TQ1_0 kernels): the
        // same weights, exact block sums, the same f32 order.
        assert_eq!(logits[1], logits[3], "{ty}: repacked vs --no-repack");

        // trit bench compares the two kernel sets on the weights each would get: one load
        // re-encoded for trit's (TQ1_0 only), one as stored for ggml's.
        let log = trit(&["bench", "-m", g, "-p", "0", "-n", "2", "-r", "1", "--ternary-kernels", "ggml,trit", "-v"]);
        let loads = log.lines().filter(|l| l.contains("CPU_Mapped model buffer size")).count();
        let repacks = log.lines().filter(|l| repacked(l)).count();
        assert_eq!((loads, repacks), if ty == "tq1_0" { (2, 1) } else { (2, 0) }, "{ty}: bench model loads");

        // One token: the tied f16 output head is then a mat-vec, which the trit kernels
        // compute too (the F16 hook; 17 positions above go to ggml's own F16 path).
        let mut one = Vec::new();
        for (kern, repack) in [("ggml", "--repack"), ("trit", "--repack"), ("trit", "--no-repack")] {
            let out = tmp.path().join(format!("{ty}-{kern}{repack}-one.npy"));
            trit(&[
                "logits",
                "-m",
                g,
                "--ids",
                "480",
                "-t",
                "3",
                "--ternary-kernels",
                kern,
                repack,
                "-o",
                out.to_str().unwrap(),
            ]);
            let (shape, data) = npy::read_f32(&out).unwrap();
            assert_eq!(shape, vec![1, 512]);
            one.push(data);
        }
        let (max_abs, diff) = spread(&one[0], &one[1]);
        eprintln!("{ty}, one token: max |logit| {max_abs}, max |trit - ggml| {diff}");
        assert!(max_abs > 0.1 && diff <= 1e-3 * max_abs, "{ty}: one-token logits differ by {diff} (max {max_abs})");
        assert_eq!(one[1], one[2], "{ty}, one token: repacked vs --no-repack");

        // The prompt token by token without flash attention (llama-bench's default): each
        // token's attention products go through the F16 hook, which leaves out the KV cells
        // the mask hides (256 in the cache's view, 1–17 visible); computing them all
        // (TRIT_ATTN_SKIP=0) gives the same bits. Against ggml's kernels the tolerance is wider
        // than above: without flash attention one token's row differs by ~1.4% of the largest
        // logit, in the 17-token batch as well and before the skip existed (measured
        // 2026-12-06); every other row is within 2e-6. That is one flipped int8 code, which the
        // fixtures' reference.json puts at up to ~3e-2 of max|logit| (its tolerance notes): a
        // last-bit difference upstream moves a value across a rounding tie, here in a row's
        // own last-layer path, since no later row differs.
        let mut steps = Vec::new();
        for (kern, skip) in [("ggml", "1"), ("trit", "1"), ("trit", "0")] {
            let out = tmp.path().join(format!("{ty}-{kern}-skip{skip}-steps.npy"));
            let o = out.to_str().unwrap();
            let args = [
                "logits",
                "-m",
                g,
                "--ids",
                IDS,
                "-t",
                "3",
                "-fa",
                "off",
                "-ub",
                "1",
                "--ternary-kernels",
                kern,
                "-o",
                o,
            ];
            trit_with_env(&args, &[("TRIT_ATTN_SKIP", skip)]);
            let (shape, data) = npy::read_f32(&out).unwrap();
            assert_eq!(shape, vec![17, 512]);
            steps.push(data);
        }
        let (max_abs, diff) = spread(&steps[0], &steps[1]);
        eprintln!("{ty}, token by token: max |logit| {max_abs}, max |trit - ggml| {diff}");
        assert!(max_abs > 0.1 && diff <= 3e-2 * max_abs, "{ty}: token-by-token logits differ by {diff}");
        assert_eq!(steps[1], steps[2], "{ty}, token by token: skipping hidden KV cells changed the logits");
    }
}

/// A prompt decoded in small ubatches (`-ub 64`) has graphs whose last layer computes no
/// rows (no logits wanted there): ggml skips such empty products, and so must the fusion of
/// trit's hooked products with the nodes after them (vendor patch 0013), where it used to call
/// ggml's MUL_MAT on them, which asserts (an abort of `trit run` and of `trit serve`).
#[test]
fn small_ubatches_with_empty_products_run() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bitnet-2b4t-bf16");
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tq2_0.gguf");
    let g = gguf.to_str().unwrap();
    trit(&["convert", fixture.to_str().unwrap(), "-o", g, "--type", "tq2_0"]);
    let prompt = format!("0 {}", "alpha beta gamma delta epsilon zeta eta theta ".repeat(6));
    for fa in ["on", "off"] {
        for kern in ["trit", "ggml"] {
            let args = ["run", "-m", g, "-p", &prompt, "-n", "4", "--temp", "0", "-t", "2", "-ub", "64", "-fa", fa];
            trit(&[&args[..], &["--ternary-kernels", kern]].concat());
        }
    }
}
