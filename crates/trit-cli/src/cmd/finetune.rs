//! `trit finetune` (also `llama-finetune-lora`): LoRA fine-tuning on the CPU, with trit's
//! flag names and QVAC Fabric's `llama-finetune-lora` names as aliases.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use trit_finetune::{data, parse_targets, BadLine, DataOptions, LoraSpec, ScheduleKind, SessionParams, TrainOptions};

use crate::args::{self, flag, Flag};
use crate::common;

const FLAGS: &[Flag] = &[
    flag(&["-m", "--model"], Some("FNAME"), "base model (GGUF; ternary TQ2_0/TQ1_0 weights stay frozen)"),
    flag(
        &["-f", "--file", "--train-data"],
        Some("FNAME"),
        "training data: plain text, or JSONL chat/prompt-completion",
    ),
    flag(
        &["-o", "--output", "--output-adapter"],
        Some("FNAME"),
        "adapter to write (default: trained-lora-adapter.gguf)",
    ),
    flag(&["--lora-rank"], Some("N"), "LoRA rank (default: 8)"),
    flag(&["--lora-alpha"], Some("F"), "LoRA alpha; scale = alpha / rank (default: 16)"),
    flag(
        &["--lora-targets", "--lora-modules"],
        Some("LIST"),
        "attn_q,attn_k,attn_v,attn_o,ffn_gate,ffn_up,ffn_down | attn | ffn | all (default: all)",
    ),
    flag(&["-c", "--ctx-size"], Some("N"), "context window, a multiple of 256 (default: 512)"),
    flag(&["-b", "--batch-size"], Some("N"), "tokens per optimizer step (default: = -c)"),
    flag(
        &["-ub", "--ubatch-size"],
        Some("N"),
        "tokens per forward/backward; -b/-ub = gradient accumulation (default: = -b)",
    ),
    flag(&["--epochs", "--num-epochs"], Some("N"), "passes over the data (default: 1)"),
    flag(&["-lr", "--learning-rate"], Some("F"), "peak learning rate (default: 2e-4)"),
    flag(&["--lr-min"], Some("F"), "final learning rate of linear/cosine decay (default: 0)"),
    flag(&["--lr-schedule", "--lr-scheduler"], Some("NAME"), "constant | cosine | linear (default: constant)"),
    flag(&["--warmup", "--warmup-steps"], Some("N"), "linear warm-up steps (default: 0)"),
    flag(&["--warmup-ratio"], Some("F"), "warm-up as a fraction of all steps"),
    flag(&["--weight-decay", "-wd"], Some("F"), "AdamW decoupled weight decay (default: 0.01)"),
    flag(&["--seed", "-s", "--lora-seed"], Some("N"), "seed for LoRA init, split and order (default: 42)"),
    flag(&["--val-split"], Some("F"), "fraction of windows held out for validation (default: 0)"),
    flag(&["--no-shuffle"], None, "keep the data order within each epoch"),
    flag(
        &["--assistant-only-loss", "--assistant-loss-only"],
        None,
        "train only on assistant turns / completions (JSONL)",
    ),
    flag(&["--chat-template"], Some("NAME|FILE"), "chat template for JSONL messages (default: the model's)"),
    flag(&["--on-bad-line"], Some("skip|error"), "malformed JSONL lines (default: error)"),
    flag(&["--checkpoint-every", "--checkpoint-save-steps"], Some("N"), "checkpoint every N steps (default: 0 = off)"),
    flag(&["--checkpoint-dir", "--checkpoint-save-dir"], Some("DIR"), "where checkpoints go (default: ./checkpoints)"),
    flag(&["--resume", "--resume-from"], Some("DIR"), "continue from a checkpoint (or the newest under DIR)"),
    flag(&["--auto-resume"], None, "resume from the newest checkpoint in --checkpoint-dir if there is one"),
    flag(&["--max-steps"], Some("N"), "stop after N optimizer steps in total, writing a checkpoint there"),
    flag(&["--log-csv"], Some("FNAME"), "CSV of train/val loss, tok/s and memory (default: <output>.csv)"),
    flag(&["--plot"], Some("FNAME"), "loss-curve PNG (default: <output>.png)"),
    flag(&["--lora"], Some("FNAME"), "continue training this adapter (its rank/alpha/targets; fresh optimizer)"),
    flag(
        &["--gradient-checkpointing"],
        None,
        "recompute activations in the backward pass: less memory, ~1 more forward pass of work",
    ),
    flag(
        &["--checkpoint-keep"],
        Some("attn,ffn"),
        "with --gradient-checkpointing: also keep attention's Q/K/V and/or the FFN's gate/up (more memory, less recomputation)",
    ),
    flag(&["-fa", "--flash-attn"], Some("on|off|auto"), "accepted for compatibility; training runs without it"),
    flag(&["-t", "--threads"], Some("N"), "threads (default: cores)"),
    common::TERNARY_KERNELS_FLAG,
    flag(
        &["--ternary-grad"],
        Some("f32|i16"),
        "CPU gradient through the frozen ternary weights: i16 (default; on CPUs with i16 dot products, f32 elsewhere) or f32 (ggml's exact bits)",
    ),
    flag(
        &["-ngl", "--gpu-layers", "--n-gpu-layers"],
        Some("N"),
        "layers on the GPU (default: 0; 99 with --device vulkan)",
    ),
    flag(&["--device", "-dev"], Some("NAME"), "training device: cpu or vulkan (= -ngl 99)"),
    flag(&["-v", "--verbose"], None, "show llama.cpp's log"),
];

const ABOUT: &str =
    "trit finetune: train a LoRA adapter for a BitNet model (CPU or Vulkan). Also answers to llama-finetune-lora.";

fn with_ext(p: &Path, ext: &str) -> PathBuf {
    p.with_extension(ext)
}

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let Some(p) = args::parse_or_help(prog, ABOUT, FLAGS, argv)? else {
        return Ok(());
    };
    if let Some(extra) = p.positional.first() {
        bail!("unexpected argument '{extra}'\n{}", args::usage_line(prog, FLAGS));
    }
    trit_llama::log::set_verbose(p.has("-v"));
    let device_gpu = match p.str("--device") {
        None => None,
        Some(d) if d.eq_ignore_ascii_case("cpu") || d.eq_ignore_ascii_case("none") => Some(false),
        Some(d) if d.to_ascii_lowercase().starts_with("vulkan") || d.eq_ignore_ascii_case("gpu") => Some(true),
        Some(d) => bail!("--device {d}: not a training device (cpu or vulkan)"),
    };
    let ngl = match (p.str("-ngl"), device_gpu) {
        (_, Some(false)) => 0,
        (Some(v), _) => common::parse_ngl(v)?,
        (None, Some(true)) => 99,
        (None, None) => 0,
    };
    if ngl != 0 {
        trit_llama::init();
        if trit_llama::gpu_backend().is_none() {
            if device_gpu == Some(true) {
                bail!("--device vulkan: no Vulkan device (run with -v to see why)");
            }
            tracing::warn!("-ngl {ngl}: no GPU backend registered (see -v); training runs on the CPU");
        }
    }
    // trit's CPU kernels: the ternary products of the forward pass and the OUT_PROD of the
    // gradient through each frozen weight (ggml's with --ternary-kernels ggml).
    common::install_ternary_kernels(common::ternary_kernels(&p, false)?[0]);
    let asked = p.str("--ternary-grad").map(str::parse::<trit_kernels::ggml::TernaryGrad>).transpose();
    let asked = asked.map_err(|e| anyhow::anyhow!("--ternary-grad: {e}"))?;
    if let Some(g) = asked {
        trit_kernels::ggml::set_ternary_grad(g);
    }
    // i16 only where the CPU has i16 dot products (the f32 path is as fast elsewhere).
    let grad = trit_kernels::ggml::ternary_grad();
    if asked.is_some_and(|g| g != grad) {
        tracing::warn!("--ternary-grad i16: this CPU has no i16 dot products; f32 it is");
    }
    tracing::debug!("ternary gradient: {}", grad.name());
    let model_path = PathBuf::from(p.required("-m")?);
    let data_path = PathBuf::from(p.required("-f")?);
    common::preflight(&model_path)?;
    let output = PathBuf::from(p.str("-o").unwrap_or("trained-lora-adapter.gguf"));

    // With --lora, the adapter's own shape is the default.
    let init = p.str("--lora").map(PathBuf::from);
    let (d_rank, d_alpha, d_targets) = match &init {
        Some(path) => {
            let w = trit_finetune::LoraWeights::load(path)?;
            (w.pairs.first().map(|p| p.rank as u32).unwrap_or(8), w.alpha, w.targets().join(","))
        }
        None => (8, 16.0, "all".to_string()),
    };
    let spec = LoraSpec {
        rank: p.get("--lora-rank", d_rank)?,
        alpha: p.get("--lora-alpha", d_alpha)?,
        targets: parse_targets(p.str("--lora-targets").unwrap_or(&d_targets))?,
    };
    let n_ctx: u32 = p.get("-c", 512u32)?;
    let n_batch: u32 = p.get("-b", n_ctx)?;
    let n_ubatch: u32 = p.get("-ub", n_batch)?;
    let threads = p.get("-t", trit_llama::ContextParams::default().n_threads)?;
    let params = SessionParams {
        n_ctx,
        n_batch,
        n_ubatch,
        n_threads: threads,
        gradient_checkpointing: p.has("--gradient-checkpointing"),
        checkpoint_keep: trit_finetune::CheckpointKeep::parse(p.str("--checkpoint-keep").unwrap_or(""))?,
    };
    if p.str("--checkpoint-keep").is_some() && !params.gradient_checkpointing {
        bail!("--checkpoint-keep needs --gradient-checkpointing");
    }
    params.validate()?;

    let mut o = TrainOptions::new(spec, params, output.clone());
    o.epochs = p.get("--epochs", 1u32)?;
    o.lr = p.get("-lr", 2e-4f32)?;
    o.lr_min = p.get("--lr-min", 0f32)?;
    o.schedule = p
        .str("--lr-schedule")
        .map(|s| s.parse::<ScheduleKind>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("--lr-schedule: {e}"))?
        .unwrap_or_default();
    o.warmup = match (p.opt::<u64>("--warmup")?, p.opt::<f64>("--warmup-ratio")?) {
        (Some(_), Some(_)) => bail!("give --warmup-steps or --warmup-ratio, not both"),
        (Some(n), None) => trit_finetune::Warmup::Steps(n),
        (None, Some(r)) if (0.0..=1.0).contains(&r) => trit_finetune::Warmup::Ratio(r),
        (None, Some(r)) => bail!("--warmup-ratio {r} is not in [0, 1]"),
        (None, None) => trit_finetune::Warmup::Steps(0),
    };
    o.adamw.weight_decay = p.get("--weight-decay", 0.01f32)?;
    o.seed = p.get("--seed", 42u64)?;
    o.val_split = p.get("--val-split", 0f64)?;
    o.shuffle = !p.has("--no-shuffle");
    o.checkpoint_every = p.get("--checkpoint-every", 0u64)?;
    o.checkpoint_dir = PathBuf::from(p.str("--checkpoint-dir").unwrap_or("checkpoints"));
    o.resume = p.str("--resume").map(PathBuf::from);
    if o.resume.is_none() && p.has("--auto-resume") && trit_finetune::checkpoint::resolve(&o.checkpoint_dir).is_ok() {
        o.resume = Some(o.checkpoint_dir.clone());
    }
    o.stop_after = p.opt("--max-steps")?;
    o.init_adapter = init;
    if o.init_adapter.is_some() && o.resume.is_some() {
        bail!("give --lora (start from an adapter) or --resume (continue a checkpoint), not both");
    }
    o.log_csv = Some(p.str("--log-csv").map(PathBuf::from).unwrap_or_else(|| with_ext(&output, "csv")));
    o.plot_png = Some(p.str("--plot").map(PathBuf::from).unwrap_or_else(|| with_ext(&output, "png")));

    let model = trit_llama::Model::load(
        &model_path,
        // -ngl 0 / --device cpu: no GPU in the training graph at all (else the scheduler still
        // puts backward nodes on a registered GPU backend).
        &trit_llama::ModelParams {
            n_gpu_layers: ngl,
            cpu_only: ngl == 0,
            // the backward ops read the frozen weights as stored
            use_extra_bufts: false,
            ..Default::default()
        },
    )?;
    // GPU buffers right after loading: the weights placed on the device.
    #[allow(unused_mut)]
    let mut gpu_weights: Option<u64> = None;
    #[cfg(feature = "vulkan")]
    if ngl != 0 && trit_vulkan::registered() {
        gpu_weights = Some(trit_vulkan::allocated_bytes().0);
        o.device_memory = Some(trit_vulkan::allocated_bytes);
    }
    let dopts = DataOptions {
        n_ctx: n_ctx as usize,
        assistant_only: p.has("--assistant-only-loss"),
        on_bad_line: p.get("--on-bad-line", BadLine::Error)?,
        chat_template: p.str("--chat-template").map(str::to_string),
    };
    let ds = data::load(&model, &data_path, &dopts)?;
    eprintln!(
        "data: {} window(s) of {n_ctx} tokens from {}{}{}",
        ds.samples.len(),
        data_path.display(),
        if ds.skipped_bad_lines > 0 {
            format!(", {} bad line(s) skipped", ds.skipped_bad_lines)
        } else {
            String::new()
        },
        if ds.skipped_too_long > 0 { format!(", {} too long, skipped", ds.skipped_too_long) } else { String::new() },
    );
    match trit_llama::gpu_backend().filter(|_| ngl != 0) {
        Some(gpu) => eprintln!(
            "device: {gpu} (-ngl {ngl}: offloaded layers train there, their adapters and AdamW state included)"
        ),
        None => eprintln!("device: CPU"),
    }
    let r = trit_finetune::train(&model, &model_path, &ds, &o).context("fine-tuning failed")?;
    let fmt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    eprintln!(
        "trained {} LoRA parameters for {} steps: loss {} -> {}, validation {}; {:.0} tok/s, peak RSS {:.0} MiB",
        r.n_params,
        r.steps,
        fmt(r.first_train_loss),
        fmt(r.last_train_loss),
        fmt(r.last_val_loss),
        r.tokens_per_s,
        r.peak_rss_bytes as f64 / 1048576.0
    );
    #[cfg(feature = "vulkan")]
    if ngl != 0 && trit_vulkan::registered() {
        let (now, peak) = trit_vulkan::allocated_bytes();
        eprintln!(
            "GPU memory (trit-vulkan buffers): peak {:.0} MiB, {:.0} MiB at the end",
            peak as f64 / 1048576.0,
            now as f64 / 1048576.0
        );
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let compute: Vec<String> = r.memory.compute.iter().map(|(n, b)| format!("{n} {:.0}", mib(*b))).collect();
    eprintln!(
        "memory by part (MiB): weights {:.0}{}; adapter {:.1} + gradients and AdamW moments {:.1}; compute buffers {} \
         (gradient checkpointing {})",
        mib(model.size()),
        gpu_weights.map(|b| format!(" ({:.0} on the GPU)", mib(b))).unwrap_or_default(),
        mib(r.n_params * 4),
        mib(r.memory.optimizer),
        compute.join(", "),
        if params.gradient_checkpointing { "on" } else { "off" }
    );
    match &r.stopped_at {
        Some(dir) => eprintln!("stopped at --max-steps; checkpoint {} (continue with --resume)", dir.display()),
        None => eprintln!("adapter: {}", r.output.display()),
    }
    if let (Some(csv), Some(png)) = (&o.log_csv, &o.plot_png) {
        eprintln!("log: {}  loss curve: {}", csv.display(), png.display());
    }
    Ok(())
}
