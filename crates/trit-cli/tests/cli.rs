//! The binaries people use: llama-cli / llama-bench / llama-perplexity names, flags,
//! output formats and error handling.

mod common;

use common::*;
use std::path::PathBuf;

/// A symlink to the trit binary under a llama.cpp tool name.
fn as_tool(name: &str) -> PathBuf {
    let link = scratch().join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(trit(), &link).unwrap();
    }
    link
}

#[test]
fn llama_cli_generates_greedily_what_the_reference_predicts() {
    let model = converted("bitnet-2b4t-bf16", "f16");
    let p = &reference("bitnet-2b4t-bf16")[1];
    let vocab = p.weight_only.0[1];
    let last = &p.weight_only.1[p.weight_only.1.len() - vocab..];
    let out = run_as(
        &as_tool("llama-cli"),
        &["-m", model.to_str().unwrap(), "-p", &p.text, "-n", "1", "--temp", "0", "-no-cnv", "-t", "2"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated = out.stdout.strip_prefix(p.text.as_bytes()).expect("the prompt is echoed first");
    let generated = generated.strip_suffix(b"\n").unwrap_or(generated);
    // The next token, by transformers (weight-only reference), as bytes of the model's vocab.
    let m =
        trit_llama::Model::load(&model, &trit_llama::ModelParams { vocab_only: true, ..Default::default() }).unwrap();
    let want = m.token_bytes(argmax(last) as i32, false);
    assert!(margin(last) > 0.2, "reference margin too small for a stable greedy check");
    assert_eq!(generated, want);
}

#[test]
fn llama_cli_no_display_prompt_and_n_predict() {
    let model = converted("bitnet-2b4t-bf16", "tq2_0");
    let out = run_as(
        &as_tool("llama-cli"),
        &["-m", model.to_str().unwrap(), "-p", "Hello", "-n", "5", "-s", "7", "-no-cnv", "-no-display-prompt"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.starts_with("Hello"), "prompt must not be echoed: {stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/     5 runs") || stderr.contains("/     4 runs"), "5 tokens sampled: {stderr}");
}

#[test]
fn same_seed_same_text_and_conversation_mode_uses_the_template() {
    let model = converted("bitnet-2b4t-bf16", "tq2_0");
    let m = model.to_str().unwrap();
    let args = ["run", "-m", m, "-p", "Hi there", "-n", "12", "-s", "42", "--temp", "0.9", "-no-cnv"];
    assert_eq!(ok(&args), ok(&args), "same seed must give the same text");
    // Conversation mode with one turn from -p (stdin empty): the reply is printed and it exits.
    let out = run(&["run", "-m", m, "-p", "Hello!", "-sys", "Be brief.", "-n", "6", "--temp", "0", "-st"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unknown_flags_are_rejected_with_the_usage_line() {
    for (prog, flag) in [("llama-cli", "--no-such-flag"), ("llama-bench", "-zz"), ("llama-perplexity", "--bogus")] {
        let out = run_as(&as_tool(prog), &[flag]);
        assert!(!out.status.success(), "{prog} {flag} must fail");
        assert_eq!(out.status.code(), Some(1), "an error exit, not a panic");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("unknown argument: {flag}")) && err.contains(&format!("usage: {prog}")), "{err}");
    }
}

#[test]
fn llama_bench_json_and_markdown() {
    let model = converted("bitnet-2b4t-bf16", "tq2_0");
    let m = model.to_str().unwrap();
    let json = run_as(&as_tool("llama-bench"), &["-m", m, "-p", "32", "-n", "4", "-r", "2", "-t", "2", "-o", "json"]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0]["n_prompt"].as_u64(), recs[0]["n_gen"].as_u64()), (Some(32), Some(0)));
    assert_eq!((recs[1]["n_prompt"].as_u64(), recs[1]["n_gen"].as_u64()), (Some(0), Some(4)));
    for r in recs {
        assert_eq!(r["samples_ns"].as_array().unwrap().len(), 2);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert_eq!(r["n_threads"].as_i64(), Some(2));
    }
    let md = ok(&["bench", "-m", m, "-p", "16", "-n", "2", "-r", "1"]);
    let lines: Vec<&str> = md.lines().collect();
    assert!(lines[0].starts_with("| model") && lines[0].trim_end().ends_with("t/s |"), "{md}");
    assert!(lines[1].starts_with("| ---"), "{md}");
    assert!(lines[2].contains("pp16") && lines[3].contains("tg2"), "{md}");
    assert!(lines[2].contains(" ± "), "{md}");
    let csv = ok(&["bench", "-m", m, "-p", "16", "-n", "0", "-r", "1", "-o", "csv"]);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    // -d: each test after that many tokens already in the cache (llama-bench's n_depth).
    let json = ok(&["bench", "-m", m, "-p", "8", "-n", "2", "-d", "0,24", "-r", "1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let got: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["n_prompt"].as_u64().unwrap(), r["n_gen"].as_u64().unwrap(), r["n_depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [(8, 0, 0), (8, 0, 24), (0, 2, 0), (0, 2, 24)], "{json}");
    // -o jsonl: one JSON object a line.
    let jsonl = ok(&["bench", "-m", m, "-p", "8", "-n", "2", "-r", "1", "-o", "jsonl"]);
    let recs: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 2, "{jsonl}");
    assert_eq!(recs[1]["n_gen"].as_u64(), Some(2), "{jsonl}");
    // -pg: a prompt then generation, timed together ("pp8+tg2"); a malformed pair is an error.
    let md = ok(&["bench", "-m", m, "-p", "0", "-n", "0", "-pg", "8,2", "-r", "1"]);
    assert!(md.lines().nth(2).is_some_and(|l| l.contains("pp8+tg2")), "{md}");
    let bad = run(&["bench", "-m", m, "-pg", "8"]);
    assert_eq!(bad.status.code(), Some(1), "-pg 8 must be an error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("-pg"), "{}", String::from_utf8_lossy(&bad.stderr));
    let md = ok(&["bench", "-m", m, "-p", "0", "-n", "2", "-d", "24", "-r", "1"]);
    assert!(md.lines().nth(2).is_some_and(|l| l.contains("tg2 @ d24")), "{md}");
    let csv = ok(&["bench", "-m", m, "-p", "0", "-n", "2", "-d", "24", "-r", "1", "-o", "csv"]);
    let (head, row) = (csv.lines().next().unwrap(), csv.lines().nth(1).unwrap());
    let col = head.split(',').position(|c| c == "n_depth").expect("n_depth column");
    assert_eq!(row.split(',').nth(col), Some("24"), "{csv}");
    // -mmp 0,1: the model loaded both ways (llama-bench's use_mmap); a bad value is an error.
    let jsonl = ok(&["bench", "-m", m, "-p", "0", "-n", "2", "-mmp", "0,1", "-r", "1", "-o", "jsonl"]);
    let mm: Vec<Option<bool>> =
        jsonl.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["use_mmap"].as_bool()).collect();
    assert_eq!(mm, [Some(false), Some(true)], "{jsonl}");
    let bad = run(&["bench", "-m", m, "-mmp", "2"]);
    assert_eq!(bad.status.code(), Some(1), "-mmp 2 must be an error");
}

#[test]
fn perplexity_equals_the_one_computed_from_trit_logits() {
    let model = converted("bitnet-2b4t-bf16", "f16");
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(8);
    let file = scratch().join("ppl.txt");
    std::fs::write(&file, &text).unwrap();
    let n_ctx = 16usize;
    let out = ok(&["perplexity", "-m", model.to_str().unwrap(), "-f", file.to_str().unwrap(), "-c", "16", "-t", "2"]);
    let ppl: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Final estimate: PPL = "))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no PPL in {out}"));
    // Independently: same chunks through `trit logits`, scored in f64 here.
    let m =
        trit_llama::Model::load(&model, &trit_llama::ModelParams { vocab_only: true, ..Default::default() }).unwrap();
    let tokens = m.tokenize(&text, true, false).unwrap();
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..tokens.len() / n_ctx {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        chunk[0] = m.bos();
        let (shape, logits) = trit_logits(&model, &chunk, &["-c", "16"]);
        let vocab = shape[1];
        for j in n_ctx / 2..n_ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let max = row.iter().fold(f64::MIN, |a, &v| a.max(v as f64));
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            nll += lse - row[tokens[c * n_ctx + j + 1] as usize] as f64;
            count += 1;
        }
    }
    let want = (nll / count as f64).exp();
    assert!((ppl - want).abs() / want < 1e-3, "perplexity {ppl} vs {want} from logits");
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
}

#[test]
fn info_describes_the_model() {
    let model = converted("bitnet-2b4t-packed", "tq1_0");
    let out = ok(&["info", model.to_str().unwrap(), "--tensors"]);
    for want in ["bitnet", "block_count", "hidden_activation", "TQ1_0", "blk.0.attn_q.weight", "llama-bpe"] {
        assert!(out.contains(want), "info lacks {want}:\n{out}");
    }
}

#[test]
fn truncated_gguf_gives_a_clear_error_naming_the_file() {
    let model = converted("bitnet-2b4t-bf16", "tq2_0");
    let bytes = std::fs::read(&model).unwrap();
    let cut = scratch().join("truncated.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    for args in [
        vec!["run", "-m", cut.to_str().unwrap(), "-p", "x", "-n", "1", "-no-cnv"],
        vec!["bench", "-m", cut.to_str().unwrap(), "-r", "1"],
        vec!["info", cut.to_str().unwrap()],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: an error exit, not a crash");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("truncated.gguf") && err.contains("truncated"), "{args:?}: {err}");
    }
}

#[test]
fn bad_inputs_are_reported_not_crashed() {
    let model = converted("bitnet-2b4t-bf16", "tq2_0");
    let m = model.to_str().unwrap();
    let never = scratch().join("never.gguf");
    let cases: &[(&[&str], &str)] = &[
        (&["logits", "-m", m, "--ids", "1,99999"], "outside the vocabulary"),
        (&["run", "-m", "/nonexistent.gguf", "-p", "x"], "no such model file"),
        (&["run", "-m", m, "--lora", "/nonexistent-adapter.gguf", "-p", "x", "-no-cnv"], "no such file"),
        (&["run", "-m", m, "--lora-scaled", "x.gguf", "-p", "x"], "FNAME:SCALE"),
        (&["run", "-m", m, "-c", "notanumber"], "invalid value"),
        (
            &["run", "-m", m, "-ot", "token_embd=NoSuchDevice", "-p", "x", "-no-cnv"],
            "unknown buffer type 'NoSuchDevice'",
        ),
        (&["bench", "-m", m, "-ot", "token_embd", "-r", "1"], "expected PATTERN=BUFFER_TYPE"),
        (&["convert", "/nonexistent-dir", "-o", never.to_str().unwrap()], "nonexistent-dir"),
    ];
    for (args, want) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!never.exists(), "failed conversion leaves no file");
    // A valid override loads and runs.
    let out = run(&["run", "-m", m, "-ot", "token_embd=CPU", "-p", "x", "-n", "1", "-no-cnv"]);
    assert_eq!(out.status.code(), Some(0), "-ot token_embd=CPU: {}", String::from_utf8_lossy(&out.stderr));
}
