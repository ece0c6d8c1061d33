//! Whole-model check of the trit ternary kernels inside ggml graphs: the fixture model,
//! converted to TQ2_0 and TQ1_0, gives the same logits with `--ternary-kernels trit` as
//! with ggml's own TQ kernels (odd thread count, so the row split has a ragged end), for a
//! 17-token prompt and for a single token (whose output head is a mat-vec, so trit's f16
//! kernel runs it).

use std::path::Path;
use std::process::Command;

use trit_cli::npy;

const IDS: &str = "480,39,68,75,75,78,465,75,67,12,300,7,81,99,401,5,480";

fn trit(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_trit")).args(args).output().expect("run trit");
    assert!(out.status.success(), "trit {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
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
        for (kern, threads) in [("ggml", "3"), ("trit", "3"), ("trit", "1")] {
            let out = tmp.path().join(format!("{ty}-{kern}-{threads}.npy"));
            trit(&[
                "logits",
                "-m",
                g,
                "--ids",
                IDS,
                "-t",
                threads,
                "--ternary-kernels",
                kern,
                "-o",
                out.to_str().unwrap(),
            ]);
            let (shape, data) = npy::read_f32(&out).unwrap();
            assert_eq!(shape, vec![17, 512]);
            logits.push(data);
        }
        let max_abs = logits[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = logits[0].iter().zip(&logits[1]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{ty}: max |logit| {max_abs}, max |trit - ggml| {diff}");
        assert!(max_abs > 0.1, "degenerate logits");
        // Same Q8_K activations, exact integer block sums; only the f32 order of the per-block
        // accumulation differs from ggml, amplified through two layers.
        assert!(diff <= 1e-3 * max_abs, "{ty}: trit vs ggml logits differ by {diff} (max {max_abs})");
        // The kernels' result does not depend on the thread split.
        assert_eq!(logits[1], logits[2], "{ty}: 3 threads vs 1 thread");

        // One token: the tied f16 output head is then a mat-vec, which the trit kernels
        // compute too (the F16 hook; 17 positions above go to ggml's own F16 path).
        let mut one = Vec::new();
        for kern in ["ggml", "trit"] {
            let out = tmp.path().join(format!("{ty}-{kern}-one.npy"));
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
                "-o",
                out.to_str().unwrap(),
            ]);
            let (shape, data) = npy::read_f32(&out).unwrap();
            assert_eq!(shape, vec![1, 512]);
            one.push(data);
        }
        let max_abs = one[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = one[0].iter().zip(&one[1]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{ty}, one token: max |logit| {max_abs}, max |trit - ggml| {diff}");
        assert!(max_abs > 0.1 && diff <= 1e-3 * max_abs, "{ty}: one-token logits differ by {diff} (max {max_abs})");
    }
}
