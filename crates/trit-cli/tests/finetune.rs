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
    let (ok, log) = run(c.args(["--max-steps", "12"]));
    assert!(ok, "{log}");
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
