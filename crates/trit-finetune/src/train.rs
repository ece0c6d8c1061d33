//! The fine-tuning driver: data split and order, schedule, progress, CSV log, checkpoints,
//! resume, final adapter and loss plot.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use trit_llama::Model;

use crate::adapter::{self, InitOptions, LoraSpec};
use crate::checkpoint::{self, LogRow, Meta};
use crate::data::{Dataset, Sample};
use crate::schedule::{Schedule, ScheduleKind};
use crate::session::{AdamW, Session, SessionParams};

/// Warm-up length: a number of optimizer steps or a fraction of all steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Warmup {
    Steps(u64),
    Ratio(f64),
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub spec: LoraSpec,
    pub params: SessionParams,
    pub epochs: u32,
    pub schedule: ScheduleKind,
    pub lr: f32,
    pub lr_min: f32,
    pub warmup: Warmup,
    pub adamw: AdamW,
    pub seed: u64,
    /// Fraction of the windows held out for validation (evaluated after each epoch).
    pub val_split: f64,
    pub shuffle: bool,
    /// Save a checkpoint every N optimizer steps (0 = never).
    pub checkpoint_every: u64,
    pub checkpoint_dir: PathBuf,
    pub resume: Option<PathBuf>,
    pub output: PathBuf,
    pub log_csv: Option<PathBuf>,
    pub plot_png: Option<PathBuf>,
    pub progress: bool,
    /// Stop after this many optimizer steps in total (a checkpoint is written there).
    pub stop_after: Option<u64>,
    /// Standard deviation of the initial B (0 = PEFT's zeros).
    pub init_b_std: f32,
    /// Start from this adapter instead of a fresh one (fresh optimizer state).
    pub init_adapter: Option<PathBuf>,
    /// (allocated now, peak so far) bytes of the GPU backend's buffers, logged every step.
    pub device_memory: Option<fn() -> (u64, u64)>,
}

impl TrainOptions {
    pub fn new(spec: LoraSpec, params: SessionParams, output: PathBuf) -> Self {
        Self {
            spec,
            params,
            epochs: 1,
            schedule: ScheduleKind::Constant,
            lr: 2e-4,
            lr_min: 0.0,
            warmup: Warmup::Steps(0),
            adamw: AdamW { weight_decay: 0.01, ..AdamW::default() },
            seed: 42,
            val_split: 0.0,
            shuffle: true,
            checkpoint_every: 0,
            checkpoint_dir: PathBuf::from("checkpoints"),
            resume: None,
            output,
            log_csv: None,
            plot_png: None,
            progress: true,
            stop_after: None,
            init_b_std: 0.0,
            init_adapter: None,
            device_memory: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: u64,
    pub log: Vec<LogRow>,
    pub first_train_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub peak_rss_bytes: u64,
    /// Compute and optimizer buffers at the end of the run.
    pub memory: crate::MemoryUse,
    pub output: PathBuf,
    pub n_params: u64,
    /// Set when the run stopped early at `stop_after`: the checkpoint written there.
    pub stopped_at: Option<PathBuf>,
}

/// Deterministic split: a seeded permutation, the first `n_val` windows for validation.
pub fn split(n: usize, val_split: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ SPLIT_SALT));
    let mut n_val = (n as f64 * val_split).round() as usize;
    if val_split > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    } else {
        n_val = 0;
    }
    let val = idx[..n_val].to_vec();
    let train = idx[n_val..].to_vec();
    (train, val)
}

const SPLIT_SALT: u64 = 0x5eed_5b11_7000_0001;

fn epoch_order(train: &[usize], epoch: u32, seed: u64, shuffle: bool) -> Vec<usize> {
    let mut v = train.to_vec();
    if shuffle {
        v.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (epoch as u64 + 1)));
    }
    v
}

fn write_csv(path: &Path, rows: &[LogRow]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating log {}", path.display()))?,
    );
    writeln!(f, "step,epoch,lr,train_loss,val_loss,tokens_per_s,rss_mb,peak_rss_mb,compute_mb,gpu_peak_mb")?;
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    for r in rows {
        writeln!(
            f,
            "{},{},{:e},{},{},{:.1},{:.1},{:.1},{:.1},{}",
            r.step,
            r.epoch,
            r.lr,
            opt(r.train_loss),
            opt(r.val_loss),
            r.tokens_per_s,
            r.rss_bytes as f64 / 1048576.0,
            r.peak_rss_bytes as f64 / 1048576.0,
            r.compute_bytes as f64 / 1048576.0,
            r.device_peak_bytes.map(|b| format!("{:.1}", b as f64 / 1048576.0)).unwrap_or_default()
        )?;
    }
    f.flush()?;
    Ok(())
}

/// Fine-tune a fresh (or resumed) LoRA adapter on `data` and write it to `opts.output`.
pub fn train(model: &Model, model_path: &Path, data: &Dataset, opts: &TrainOptions) -> Result<TrainReport> {
    opts.params.validate()?;
    if opts.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if !(0.0..1.0).contains(&opts.val_split) {
        bail!("--val-split must be in [0, 1)");
    }
    if opts.lr.is_nan() || opts.lr <= 0.0 {
        bail!("the learning rate must be positive");
    }
    if let Some(bad) = data.samples.iter().find(|s| s.tokens.len() != opts.params.n_ctx as usize) {
        bail!("a sample has {} tokens, the context is {}", bad.tokens.len(), opts.params.n_ctx);
    }
    let (train_idx, val_idx) = split(data.samples.len(), opts.val_split, opts.seed);
    let train_idx: Vec<usize> = train_idx.into_iter().filter(|&i| data.samples[i].n_trained() > 0).collect();
    if train_idx.is_empty() {
        bail!("no training windows with trained tokens");
    }
    let spw = opts.params.steps_per_window();
    let total_windows = opts.epochs as u64 * train_idx.len() as u64;
    let total_steps = total_windows * spw;
    let warmup_steps = match opts.warmup {
        Warmup::Steps(n) => n,
        Warmup::Ratio(r) => (r * total_steps as f64).round() as u64,
    };
    let schedule = Schedule { kind: opts.schedule, lr: opts.lr, lr_min: opts.lr_min, warmup_steps, total_steps };

    // Adapter to start from: a checkpoint's, or a fresh one.
    let mut log: Vec<LogRow> = Vec::new();
    let mut windows_done = 0u64;
    let mut resume_state = None;
    let mut resume_step = 0;
    let init_path;
    let mut remove_init = false;
    if let Some(root) = &opts.resume {
        let dir = checkpoint::resolve(root)?;
        let meta = checkpoint::load_meta(&dir)?;
        checkpoint::check_compatible(&meta, &opts.spec)?;
        if (meta.n_ctx, meta.n_batch, meta.n_ubatch) != (opts.params.n_ctx, opts.params.n_batch, opts.params.n_ubatch) {
            bail!(
                "checkpoint used -c {} -b {} -ub {}; resume with the same sizes",
                meta.n_ctx,
                meta.n_batch,
                meta.n_ubatch
            );
        }
        if meta.n_train_windows != train_idx.len() as u64 || meta.seed != opts.seed {
            bail!(
                "checkpoint saw {} training windows with seed {}; this run has {} with seed {} (same data and --seed \
                 needed to continue the same run)",
                meta.n_train_windows,
                meta.seed,
                train_idx.len(),
                opts.seed
            );
        }
        tracing::info!("resuming from {} (step {})", dir.display(), meta.step);
        resume_state = Some(checkpoint::load_optimizer(&dir)?);
        resume_step = meta.step;
        windows_done = meta.windows_done;
        log = meta.log;
        init_path = dir.join(checkpoint::ADAPTER_FILE);
    } else if let Some(src) = &opts.init_adapter {
        let w = crate::LoraWeights::load(src)?;
        let rank = w.pairs.first().map(|p| p.rank as u32).unwrap_or(0);
        if rank != opts.spec.rank || w.alpha != opts.spec.alpha || w.targets() != opts.spec.targets {
            bail!(
                "{}: adapter has rank {rank} alpha {} targets {}, the run asks for rank {} alpha {} targets {}",
                src.display(),
                w.alpha,
                w.targets().join(","),
                opts.spec.rank,
                opts.spec.alpha,
                opts.spec.targets.join(",")
            );
        }
        init_path = src.clone();
    } else {
        let w = adapter::init_weights(model_path, &opts.spec, InitOptions { seed: opts.seed, b_std: opts.init_b_std })?;
        let name = opts.output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("adapter".into());
        init_path = opts.output.with_file_name(format!(".{name}.init.gguf"));
        w.save(&init_path)?;
        remove_init = true;
    }
    let session = Session::new(model, &init_path, opts.params, schedule, opts.adamw);
    if remove_init {
        let _ = std::fs::remove_file(&init_path);
    }
    let mut session = session?;
    session.set_step(resume_step);
    if let Some(st) = resume_state {
        session.restore_optimizer_state(st);
    }
    let n_params = session.weights()?.n_params();
    tracing::info!(
        "training {} adapter parameters: {} windows x {} epoch(s), {} optimizer steps, {} validation windows",
        n_params,
        train_idx.len(),
        opts.epochs,
        total_steps,
        val_idx.len()
    );

    let bar = if opts.progress { ProgressBar::new(total_steps) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(session.step());
    let n_train = train_idx.len() as u64;
    let t0 = Instant::now();
    let mut tokens_done = 0u64;
    let mut stopped_at = None;
    let save_ckpt = |session: &Session, windows_done: u64, epoch: u32, log: &[LogRow]| -> Result<PathBuf> {
        let dir = checkpoint::dir_for(&opts.checkpoint_dir, session.step());
        let meta = Meta {
            format: 1,
            spec: opts.spec.clone(),
            step: session.step(),
            windows_done,
            epoch,
            seed: opts.seed,
            n_ctx: opts.params.n_ctx,
            n_batch: opts.params.n_batch,
            n_ubatch: opts.params.n_ubatch,
            n_train_windows: n_train,
            n_val_windows: val_idx.len() as u64,
            log: log.to_vec(),
        };
        checkpoint::save(&dir, &session.weights()?, &session.optimizer_state()?, &meta)?;
        tracing::info!("checkpoint: {}", dir.display());
        Ok(dir)
    };
    let mut order_epoch = u32::MAX;
    let mut order = Vec::new();
    while windows_done < total_windows {
        let epoch = (windows_done / n_train) as u32;
        if epoch != order_epoch {
            order = epoch_order(&train_idx, epoch, opts.seed, opts.shuffle);
            order_epoch = epoch;
        }
        let sample: &Sample = &data.samples[order[(windows_done % n_train) as usize]];
        let step_before = session.step();
        let loss = session.train_window(sample)?;
        windows_done += 1;
        tokens_done += opts.params.n_ctx as u64;
        let tps = tokens_done as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        let (rss, peak) = crate::mem::rss();
        let compute_bytes = session.memory()?.compute_total();
        let device_peak_bytes = opts.device_memory.map(|f| f().1);
        log.push(LogRow {
            step: session.step(),
            epoch: epoch + 1,
            lr: session.last_lr(),
            train_loss: Some(loss),
            val_loss: None,
            tokens_per_s: tps,
            rss_bytes: rss,
            peak_rss_bytes: peak,
            compute_bytes,
            device_peak_bytes,
        });
        tracing::debug!(
            "step {} loss {loss:.4} lr {:e} peak RSS {} MiB, compute buffers {} MiB, GPU peak {:?} MiB",
            session.step(),
            session.last_lr(),
            peak >> 20,
            compute_bytes >> 20,
            device_peak_bytes.map(|b| b >> 20)
        );
        bar.set_position(session.step());
        bar.set_message(format!("epoch {}/{} loss {loss:.4} {tps:.0} tok/s", epoch + 1, opts.epochs));

        let epoch_end = windows_done % n_train == 0;
        if epoch_end && !val_idx.is_empty() {
            let mut sum = 0.0;
            let mut n = 0usize;
            for &i in &val_idx {
                let s = &data.samples[i];
                if s.n_trained() == 0 {
                    continue;
                }
                sum += session.eval_window(s)? * s.n_trained() as f64;
                n += s.n_trained();
            }
            let val = sum / n.max(1) as f64;
            let (rss, peak) = crate::mem::rss();
            log.push(LogRow {
                step: session.step(),
                epoch: epoch + 1,
                lr: session.last_lr(),
                train_loss: None,
                val_loss: Some(val),
                tokens_per_s: tps,
                rss_bytes: rss,
                peak_rss_bytes: peak,
                compute_bytes: session.memory()?.compute_total(),
                device_peak_bytes: opts.device_memory.map(|f| f().1),
            });
            bar.println(format!("epoch {}: validation loss {val:.4}", epoch + 1));
        }
        let every = opts.checkpoint_every;
        let crossed = every > 0 && (step_before / every) != (session.step() / every);
        let stop = opts.stop_after.is_some_and(|k| session.step() >= k) && windows_done < total_windows;
        if crossed || stop {
            let dir = save_ckpt(&session, windows_done, epoch, &log)?;
            if let Some(csv) = &opts.log_csv {
                write_csv(csv, &log)?;
            }
            if stop {
                stopped_at = Some(dir);
                break;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(csv) = &opts.log_csv {
        write_csv(csv, &log)?;
    }
    if let Some(png) = &opts.plot_png {
        let tr: Vec<(f64, f64)> = log.iter().filter_map(|r| r.train_loss.map(|l| (r.step as f64, l))).collect();
        let va: Vec<(f64, f64)> = log.iter().filter_map(|r| r.val_loss.map(|l| (r.step as f64, l))).collect();
        crate::plot::loss_png(png, &tr, &va)?;
    }
    let weights = session.weights()?;
    if stopped_at.is_none() {
        weights.save(&opts.output)?;
    }
    let train_losses: Vec<f64> = log.iter().filter_map(|r| r.train_loss).collect();
    Ok(TrainReport {
        steps: session.step(),
        first_train_loss: train_losses.first().copied(),
        last_train_loss: train_losses.last().copied(),
        last_val_loss: log.iter().rev().find_map(|r| r.val_loss),
        tokens_per_s: tokens_done as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        peak_rss_bytes: crate::mem::rss().1,
        memory: session.memory()?,
        output: opts.output.clone(),
        n_params: weights.n_params(),
        log,
        stopped_at,
    })
}
