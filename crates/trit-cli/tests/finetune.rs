//! `llama-finetune-lora` through the multi-call binary, with QVAC Fabric's flag names:
//! checkpoint, stop, resume, and the adapter loading in `trit logits --lora`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn llama_finetune_lora_trains_checkpoints_resumes_and_the_adapter_loads() {
    let dir = std::env::temp_dir().join(format!("trit-cli-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let trit = PathBuf::from(env!("CARGO_BIN_EXE_trit"));
    let alias = dir.join("llama-finetune-lora");
    std::os::unix::fs::symlink(&trit, &alias).unwrap();
    let model = dir.join("tiny.gguf");
    let (ok, log) = run(Command::new(&trit)
        .args(["convert"])
        .arg(workspace().join("tests/fixtures/bitnet-2b4t-bf16"))
        .arg("-o")
        .arg(&model));
    assert!(ok, "{log}");
    let data = workspace().join("examples/finetune/chat.jsonl");
    let ckpt = dir.join("ckpts");
    let adapter = dir.join("a.gguf");
    let base_args = |c: &mut Command| {
        c.arg("-m").arg(&model).arg("-f").arg(&data);
        c.args(["--assistant-loss-only", "-c", "256", "--num-epochs", "2", "--learning-rate", "2e-3"]);
        c.args(["--lora-modules", "attn_q,attn_v,ffn_down", "--lora-rank", "4", "--lr-scheduler", "cosine"]);
        c.args(["--checkpoint-save-steps", "10", "-t", "2"]);
        c.arg("--checkpoint-save-dir").arg(&ckpt).arg("--output-adapter").arg(&adapter);
    };
    // Stop part-way (a checkpoint is written there), then resume to the end.
    let mut c = Command::new(&alias);
    base_args(&mut c);
    let (ok, log) = run(c.args(["--max-steps", "12"]).env("TRIT_LOG", "debug"));
    assert!(ok, "{log}");
    // trit's CPU kernels, forward products and OUT_PROD (training ran ggml's until 2026-12-07).
    assert!(log.contains("ternary kernels: trit"), "{log}");
    assert!(ckpt.join("checkpoint_step_00000010/adapter.gguf").is_file(), "{log}");
    assert!(ckpt.join("checkpoint_step_00000012/optimizer.gguf").is_file(), "{log}");
    assert!(!adapter.exists());
    let mut c = Command::new(&alias);
    base_args(&mut c);
    let (ok, log) = run(c.arg("--resume-from").arg(&ckpt));
    assert!(ok, "{log}");
    assert!(log.contains("trained") && adapter.is_file(), "{log}");
    let csv = std::fs::read_to_string(dir.join("a.csv")).unwrap();
    assert_eq!(csv.lines().filter(|l| !l.starts_with("step")).count(), 32, "{csv}");

    // --lora continues from a trained adapter (its shape by default): it starts where that ended.
    let first_loss = |csv: &str| -> f64 { csv.lines().nth(1).unwrap().split(',').nth(3).unwrap().parse().unwrap() };
    let cont = dir.join("b.gguf");
    let (ok, log) = run(Command::new(&trit)
        .args(["finetune", "-m"])
        .arg(&model)
        .arg("-f")
        .arg(&data)
        .args(["--assistant-only-loss", "-c", "256", "--epochs", "1", "--lora-modules", "attn_q,attn_v,ffn_down"])
        .arg("--lora")
        .arg(&adapter)
        .arg("-o")
        .arg(&cont));
    assert!(ok, "{log}");
    let cont_csv = std::fs::read_to_string(dir.join("b.csv")).unwrap();
    assert!(first_loss(&cont_csv) < 0.8 * first_loss(&csv), "{cont_csv}\n{csv}");

    // Another rank is refused on resume.
    let mut c = Command::new(&alias);
    base_args(&mut c);
    let (ok, log) = run(c.args(["--lora-rank", "8", "--resume-from"]).arg(&ckpt));
    assert!(!ok && log.contains("rank 4"), "{log}");

    // llama.cpp loads the adapter, and it changes the logits.
    let logits = |extra: &[&str]| {
        let (ok, log) =
            run(Command::new(&trit).args(["logits", "-m"]).arg(&model).args(["-p", "What is LoRA?"]).args(extra));
        assert!(ok, "{log}");
        log.lines().find(|l| l.starts_with("top1:")).unwrap().to_string()
    };
    let a = adapter.to_str().unwrap();
    assert_ne!(logits(&[]), logits(&["--lora", a]));

    // A malformed line is reported with file:line.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"a\",\"completion\":\"b\"}\n{\"prompt\":\n").unwrap();
    let (ok, log) = run(Command::new(&alias).arg("-m").arg(&model).arg("-f").arg(&bad).args(["-c", "256"]));
    assert!(!ok && log.contains(&format!("{}:2:", bad.display())), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory `trit-cli-finetune-NAME-PID` holding the tiny fixture converted to GGUF
/// and one window of plain text: (dir, the trit binary, model, text).
fn tiny_model_and_text(name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("trit-cli-finetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let trit = PathBuf::from(env!("CARGO_BIN_EXE_trit"));
    let model = dir.join("tiny.gguf");
    let (ok, log) = run(Command::new(&trit)
        .arg("convert")
        .arg(workspace().join("tests/fixtures/bitnet-2b4t-bf16"))
        .arg("-o")
        .arg(&model));
    assert!(ok, "{log}");
    let data = dir.join("text.txt");
    std::fs::write(&data, "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. ".repeat(3))
        .unwrap();
    (dir, trit, model, data)
}

/// Per-step train losses from the CSV log.
fn csv_losses(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').nth(3).unwrap().parse().unwrap()).collect()
}

/// `--device vulkan` (lavapipe here) trains: every training op on the GPU, the loss falls as on
/// the CPU. One window of plain text, six steps at lr 1e-2.
#[test]
fn finetune_on_vulkan_learns_like_the_cpu() {
    let (dir, trit, model, data) = tiny_model_and_text("vk");
    let train = |device: &str| {
        let out = dir.join(format!("{device}.gguf"));
        let (ok, log) = run(Command::new(&trit)
            .env("TRIT_VULKAN_ALLOW_CPU", "1")
            .args(["finetune", "-c", "256", "--epochs", "6", "-lr", "1e-2", "--lora-rank", "8", "-t", "2"])
            .arg("-m")
            .arg(&model)
            .arg("-f")
            .arg(&data)
            .args(["--device", device])
            .arg("-o")
            .arg(&out));
        assert!(ok, "{log}");
        assert!(out.is_file(), "{log}");
        (log, csv_losses(&out.with_extension("csv")))
    };
    let (vk_log, vk) = train("vulkan");
    if vk_log.contains("device: CPU") {
        if std::env::var("TRIT_VULKAN_OPTIONAL").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: no Vulkan device (TRIT_VULKAN_OPTIONAL=1)");
            return;
        }
        panic!("no Vulkan device: install a driver (CI: mesa-vulkan-drivers for lavapipe) or set TRIT_VULKAN_OPTIONAL=1\n{vk_log}");
    }
    assert!(vk_log.contains("trit-vulkan"), "{vk_log}");
    assert!(vk_log.contains("GPU memory (trit-vulkan buffers): peak"), "{vk_log}");
    let (cpu_log, cpu) = train("cpu");
    // --device cpu with a Vulkan device registered: nothing of the training graph on the GPU
    // (before ModelParams::cpu_only the scheduler put backward nodes on it anyway).
    assert!(cpu_log.contains("device: CPU") && cpu_log.contains("compute buffers CPU"), "{cpu_log}");
    assert!(!cpu_log.contains("TritVulkan0"), "--device cpu used the GPU:\n{cpu_log}");
    eprintln!("losses CPU    {cpu:?}\nlosses Vulkan {vk:?}");
    assert_eq!((cpu.len(), vk.len()), (6, 6));
    // Same start (forward rounding aside), same first update.
    for i in 0..2 {
        assert!((vk[i] - cpu[i]).abs() <= 2e-2 * cpu[i], "step {}: Vulkan {} vs CPU {}", i + 1, vk[i], cpu[i]);
    }
    // Learns: measured 13.64 -> 0.06 (CPU: 13.64 -> 0.37; the curves part where the loss is
    // small, as the ternary forward's int8 rounding differs in single codes).
    assert!(vk[5] < 1.0 && vk[5] < vk[0] / 10.0, "Vulkan loss did not fall: {vk:?}");
    assert!(vk.windows(2).take(4).all(|w| w[1] < w[0]), "Vulkan loss not falling step by step: {vk:?}");

    // What runs where: the scheduler's report of one training step (forward, backward, AdamW).
    let (ok, log) = run(Command::new(&trit)
        .env("TRIT_VULKAN_ALLOW_CPU", "1")
        .env("GGML_SCHED_DEBUG", "2")
        .args(["finetune", "-c", "256", "--max-steps", "1", "--lora-rank", "8", "-t", "2", "--device", "vulkan", "-v"])
        .arg("-m")
        .arg(&model)
        .arg("-f")
        .arg(&data)
        .arg("-o")
        .arg(dir.join("one.gguf")));
    assert!(ok, "{log}");
    let last = &log[log.rfind("## SPLIT #0:").expect("no split report")..];
    let nodes: Vec<&str> = last.lines().filter(|l| l.starts_with("node #")).collect();
    let on_cpu: Vec<&str> = nodes.iter().copied().filter(|l| l.contains("[  CPU")).collect();
    eprintln!("training graph: {} nodes, {} on the CPU: {on_cpu:#?}", nodes.len(), on_cpu.len());
    assert!(nodes.len() > 300, "{last}");
    assert!(nodes.iter().any(|l| l.contains("OPT_STEP_A") && l.contains("TritV")), "AdamW not on the GPU");
    assert!(nodes.iter().any(|l| l.contains("OUT_PROD") && l.contains("TritV")), "OUT_PROD not on the GPU");
    // Only the token-embedding lookups stay on the CPU (llama.cpp keeps the embedding there).
    assert!(
        on_cpu.len() <= 2 && on_cpu.iter().all(|l| l.contains("GET_ROWS")),
        "ops fell back to the CPU: {on_cpu:#?}"
    );
}

/// The gradient through the frozen ternary weights in 16-bit integers (the default where the
/// CPU has i16 dot products) learns as `--ternary-grad f32` (ggml's exact f32 product) does:
/// the same first loss (the forward is the same), the first update within the spread two f32
/// implementations show, and the loss falls as far. A value other than f32 or i16 is refused.
#[test]
fn finetune_i16_ternary_gradients_learn_like_f32() {
    let (dir, trit, model, data) = tiny_model_and_text("i16");
    // i16 where this CPU has i16 dot products (AVX-512 VNNI, AVX-VNNI), else f32.
    let i16_here = trit_kernels::out_prod_q16::has_q16_path(trit_kernels::Isa::detect());
    let train = |flag: Option<&str>, expect: &str| {
        let out = dir.join(format!("{}.gguf", flag.unwrap_or("default")));
        let mut c = Command::new(&trit);
        c.env("TRIT_LOG", "debug");
        c.args(["finetune", "-c", "256", "--epochs", "6", "-lr", "1e-2", "--lora-rank", "8", "-t", "2"]);
        c.args(["--device", "cpu"]).arg("-m").arg(&model).arg("-f").arg(&data).arg("-o").arg(&out);
        if let Some(g) = flag {
            c.args(["--ternary-grad", g]);
        }
        let (ok, log) = run(&mut c);
        assert!(ok, "{log}");
        assert!(log.contains(&format!("ternary gradient: {expect}")), "{log}");
        csv_losses(&out.with_extension("csv"))
    };
    let expect = if i16_here { "i16" } else { "f32" };
    let (f32l, i16l) = (train(Some("f32"), "f32"), train(None, expect));
    assert_eq!(train(Some("i16"), expect), i16l, "the default is i16");
    eprintln!("losses f32 {f32l:?}\nlosses i16 {i16l:?}");
    assert_eq!((f32l.len(), i16l.len()), (6, 6));
    assert_eq!(f32l[0], i16l[0], "the first loss comes before any gradient");
    if i16_here {
        assert_ne!(f32l[1], i16l[1], "i16 gave f32's first update exactly: did it run?");
    }
    assert!((i16l[1] - f32l[1]).abs() <= 2e-2 * f32l[1], "step 2: i16 {} vs f32 {}", i16l[1], f32l[1]);
    assert!(i16l[5] < 1.0 && i16l[5] < i16l[0] / 10.0, "i16 loss did not fall: {i16l:?}");
    let (ok, log) =
        run(Command::new(&trit).args(["finetune", "--ternary-grad", "f16", "-m"]).arg(&model).arg("-f").arg(&data));
    assert!(!ok && log.contains("--ternary-grad") && log.contains("f32, i16"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
