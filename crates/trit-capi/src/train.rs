//! LoRA fine-tuning through C: `trit_train_start` opens a [`trit_finetune::Session`] on its
//! own copy of the model and a data set, `trit_train_step` trains one context window,
//! `trit_train_save` writes the adapter GGUF, `trit_train_free` releases everything.

use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use anyhow::{anyhow, Context as _};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use trit_finetune::{
    data, AdamW, BadLine, DataOptions, LoraSpec, Sample, Schedule, ScheduleKind, Session, SessionParams,
};
use trit_llama::{Model, ModelParams};

use crate::ffi::{self, invalid, CallResult};

/// Options of trit_train_start(); get the defaults from trit_train_default_params() and
/// change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)] // the C name
pub struct trit_train_params {
    /// LoRA rank (default 8).
    pub lora_rank: u32,
    /// LoRA alpha; the adapter's scale is alpha / rank (default 16).
    pub lora_alpha: f32,
    /// Comma-separated targets: attn_q,attn_k,attn_v,attn_o,ffn_gate,ffn_up,ffn_down, or
    /// attn, ffn, all. NULL means all.
    pub lora_targets: *const c_char,
    /// Tokens per context window, a multiple of 256 (default 512).
    pub n_ctx: u32,
    /// Tokens per optimizer step; 0 means n_ctx. n_ctx must be a multiple of it.
    pub n_batch: u32,
    /// Tokens per forward/backward pass; 0 means n_batch. n_batch must be a multiple of it.
    pub n_ubatch: u32,
    /// CPU threads; 0 means all cores.
    pub n_threads: i32,
    /// AdamW learning rate, constant (default 2e-4).
    pub learning_rate: f32,
    /// AdamW decoupled weight decay in [0, 1] (default 0.01).
    pub weight_decay: f32,
    /// Seed of the adapter's initial values and of the window order (default 42).
    pub seed: u64,
    /// Visit the windows in a new seeded order each pass over the data (default true).
    pub shuffle: bool,
    /// JSONL data only: train on assistant turns / completions only (default false).
    pub assistant_only: bool,
    /// Layers to put on the GPU, as llama.h's n_gpu_layers (default 0: CPU). With trit's Vulkan
    /// backend registered (trit_init()), 99 trains the whole step there: the frozen weights,
    /// the adapters and the AdamW state.
    pub n_gpu_layers: i32,
}

impl trit_train_params {
    const DEFAULT: Self = Self {
        lora_rank: 8,
        lora_alpha: 16.0,
        lora_targets: std::ptr::null(),
        n_ctx: 512,
        n_batch: 0,
        n_ubatch: 0,
        n_threads: 0,
        learning_rate: 2e-4,
        weight_decay: 0.01,
        seed: 42,
        shuffle: true,
        assistant_only: false,
        n_gpu_layers: 0,
    };
}

impl Default for trit_train_params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A training run: the model, its data windows, and the session training the adapter.
/// Opaque to C.
#[allow(non_camel_case_types)] // the C name
pub struct trit_trainer {
    // Declared before `model` and emptied first in Drop: the session borrows the model.
    session: Option<Session<'static>>,
    model: NonNull<Model>,
    samples: Vec<Sample>,
    /// Indices of the windows with at least one trained position.
    train: Vec<usize>,
    order: Vec<usize>,
    cursor: usize,
    passes: u64,
    seed: u64,
    shuffle: bool,
}

impl trit_trainer {
    fn reorder(&mut self) {
        self.order = self.train.clone();
        if self.shuffle {
            let mut rng = StdRng::seed_from_u64(self.seed ^ self.passes.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            self.order.shuffle(&mut rng);
        }
        self.cursor = 0;
    }

    fn step(&mut self) -> anyhow::Result<f64> {
        if self.cursor == self.order.len() {
            self.passes += 1;
            self.reorder();
        }
        let i = self.order[self.cursor];
        self.cursor += 1;
        let session = self.session.as_mut().context("the trainer has no session")?;
        session.train_window(&self.samples[i]).with_context(|| format!("training on window {i}"))
    }
}

impl Drop for trit_trainer {
    fn drop(&mut self) {
        self.session = None;
        // SAFETY: `model` came from Box::leak in start() and is freed only here, after the
        // session that borrowed it was dropped on the line above.
        drop(unsafe { Box::from_raw(self.model.as_ptr()) });
    }
}

fn session_params(p: &trit_train_params) -> SessionParams {
    let n_batch = if p.n_batch == 0 { p.n_ctx } else { p.n_batch };
    let n_ubatch = if p.n_ubatch == 0 { n_batch } else { p.n_ubatch };
    let n_threads = if p.n_threads <= 0 { trit_llama::ContextParams::default().n_threads } else { p.n_threads };
    SessionParams {
        n_ctx: p.n_ctx,
        n_batch,
        n_ubatch,
        n_threads,
        gradient_checkpointing: false,
        checkpoint_keep: Default::default(),
    }
}

fn check_params(p: &trit_train_params, targets: Option<&str>) -> CallResult<(LoraSpec, SessionParams)> {
    if p.lora_rank == 0 {
        return Err(invalid("lora_rank must be at least 1"));
    }
    if !p.lora_alpha.is_finite() || p.lora_alpha <= 0.0 {
        return Err(invalid(format!("lora_alpha must be a positive number, got {}", p.lora_alpha)));
    }
    if !p.learning_rate.is_finite() || p.learning_rate <= 0.0 {
        return Err(invalid(format!("learning_rate must be a positive number, got {}", p.learning_rate)));
    }
    if !(0.0..=1.0).contains(&p.weight_decay) {
        return Err(invalid(format!("weight_decay must be in [0, 1], got {}", p.weight_decay)));
    }
    let targets = trit_finetune::parse_targets(targets.unwrap_or("all")).map_err(|e| invalid(format!("{e:#}")))?;
    let params = session_params(p);
    params.validate().map_err(|e| invalid(format!("{e:#}")))?;
    Ok((LoraSpec { rank: p.lora_rank, alpha: p.lora_alpha, targets }, params))
}

fn start(
    model_path: &Path,
    data_path: &Path,
    p: &trit_train_params,
    targets: Option<&str>,
) -> CallResult<trit_trainer> {
    let (spec, params) = check_params(p, targets)?;
    crate::init();
    let model = Model::load(
        model_path,
        &ModelParams {
            n_gpu_layers: p.n_gpu_layers,
            cpu_only: p.n_gpu_layers == 0,
            // the backward ops read the frozen weights as stored
            use_extra_bufts: false,
            ..Default::default()
        },
    )
    .map_err(anyhow::Error::from)?; // the message names the file
    let model = NonNull::from(Box::leak(Box::new(model)));
    // From here on the trainer owns the model: an early return frees it through Drop.
    let mut t = trit_trainer {
        session: None,
        model,
        samples: Vec::new(),
        train: Vec::new(),
        order: Vec::new(),
        cursor: 0,
        passes: 0,
        seed: p.seed,
        shuffle: p.shuffle,
    };
    // SAFETY: the model is boxed and stays at this address until the trainer's Drop frees it,
    // after the session (the only holder of this reference beyond this function) is gone.
    let model: &'static Model = unsafe { t.model.as_ref() };
    let dopts = DataOptions {
        n_ctx: params.n_ctx as usize,
        assistant_only: p.assistant_only,
        on_bad_line: BadLine::Error,
        chat_template: None,
    };
    let ds = data::load(model, data_path, &dopts)?;
    t.train = (0..ds.samples.len()).filter(|&i| ds.samples[i].n_trained() > 0).collect();
    if t.train.is_empty() {
        return Err(anyhow!("{}: no window with trained tokens", data_path.display()).into());
    }
    t.samples = ds.samples;
    tracing::info!(
        "trit_train_start: {} windows of {} tokens from {}",
        t.train.len(),
        params.n_ctx,
        data_path.display()
    );

    let weights = trit_finetune::adapter::init_weights(
        model_path,
        &spec,
        trit_finetune::InitOptions { seed: p.seed, b_std: 0.0 },
    )?;
    let init = tempfile::Builder::new()
        .prefix("trit-lora-init-")
        .suffix(".gguf")
        .tempfile()
        .context("creating a temporary file for the initial adapter")?;
    weights.save(init.path())?;
    // Constant rate: total_steps only shapes decaying schedules.
    let schedule = Schedule {
        kind: ScheduleKind::Constant,
        lr: p.learning_rate,
        lr_min: 0.0,
        warmup_steps: 0,
        total_steps: u64::MAX,
    };
    let adamw = AdamW { weight_decay: p.weight_decay, ..AdamW::default() };
    t.session = Some(Session::new(model, init.path(), params, schedule, adamw)?);
    t.reorder();
    Ok(t)
}

/// The default training options (see trit_train_params).
#[no_mangle]
pub extern "C" fn trit_train_default_params() -> trit_train_params {
    ffi::no_panic(trit_train_params::DEFAULT, trit_train_params::default)
}

/// Start LoRA fine-tuning: load the model at model_path (a BitNet GGUF; this trainer keeps its
/// own copy, frozen), read data_path (plain text cut into n_ctx windows, or JSONL with chat
/// "messages" or "prompt"/"completion" per line) and create a fresh adapter (A random, B zero).
/// params may be NULL for the defaults. On success *out holds the trainer, to be released
/// with trit_train_free(); on failure *out is set to NULL (when out is not NULL).
/// Returns TRIT_OK or a negative TRIT_ERR_* code (message in trit_last_error()).
///
/// # Safety
/// Strings are NULL or NUL-terminated; params is NULL or points to a trit_train_params;
/// out is NULL (an error) or writable.
#[no_mangle]
pub unsafe extern "C" fn trit_train_start(
    model_path: *const c_char,
    data_path: *const c_char,
    params: *const trit_train_params,
    out: *mut *mut trit_trainer,
) -> c_int {
    ffi::call("trit_train_start", || {
        if out.is_null() {
            return Err(invalid("out must not be NULL"));
        }
        // SAFETY: out is non-null and writable by the contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: NUL-terminated strings or NULL, by the contract.
        let (m, d) = unsafe { (ffi::str_arg(model_path, "model_path")?, ffi::str_arg(data_path, "data_path")?) };
        // SAFETY: params is NULL or points to a valid trit_train_params, by the contract.
        let p = unsafe { params.as_ref() }.copied().unwrap_or_default();
        // SAFETY: lora_targets is NULL or NUL-terminated, part of the same contract.
        let targets = unsafe { ffi::opt_str_arg(p.lora_targets, "params->lora_targets")? };
        let t = start(Path::new(m), Path::new(d), &p, targets)?;
        // SAFETY: out is non-null and writable (checked above).
        unsafe { *out = Box::into_raw(Box::new(t)) };
        Ok(())
    })
}

/// Train on the next window of the data (windows are visited in order, reshuffled on each
/// pass when params.shuffle): n_ctx / n_batch AdamW steps. Writes the window's mean loss
/// over its trained tokens, measured before the update, to *loss (when loss is not NULL).
/// Returns TRIT_OK or a negative TRIT_ERR_* code.
///
/// # Safety
/// trainer is NULL (an error) or a live handle from trit_train_start(), used by one thread at
/// a time; loss is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn trit_train_step(trainer: *mut trit_trainer, loss: *mut f64) -> c_int {
    ffi::call("trit_train_step", || {
        // SAFETY: NULL or a live, exclusively used handle, by the contract.
        let t = unsafe { trainer.as_mut() }.ok_or_else(|| invalid("trainer must not be NULL"))?;
        let l = t.step()?;
        if !l.is_finite() {
            return Err(anyhow!("the loss is not finite ({l}): lower the learning rate").into());
        }
        if !loss.is_null() {
            // SAFETY: non-null and writable by the contract.
            unsafe { *loss = l };
        }
        Ok(())
    })
}

/// Number of training windows in the data (windows with at least one trained token), or a
/// negative TRIT_ERR_* code.
///
/// # Safety
/// trainer is NULL (an error) or a live handle from trit_train_start().
#[no_mangle]
pub unsafe extern "C" fn trit_train_n_windows(trainer: *const trit_trainer) -> i64 {
    ffi::call_value("trit_train_n_windows", i64::from, || {
        // SAFETY: NULL or a live handle, by the contract.
        let t = unsafe { trainer.as_ref() }.ok_or_else(|| invalid("trainer must not be NULL"))?;
        Ok(t.train.len() as i64)
    })
}

/// AdamW steps taken so far, or a negative TRIT_ERR_* code.
///
/// # Safety
/// trainer is NULL (an error) or a live handle from trit_train_start().
#[no_mangle]
pub unsafe extern "C" fn trit_train_n_steps(trainer: *const trit_trainer) -> i64 {
    ffi::call_value("trit_train_n_steps", i64::from, || {
        // SAFETY: NULL or a live handle, by the contract.
        let t = unsafe { trainer.as_ref() }.ok_or_else(|| invalid("trainer must not be NULL"))?;
        let s = t.session.as_ref().map_or(0, |s| s.step());
        Ok(s.min(i64::MAX as u64) as i64)
    })
}

/// Write the adapter as it is now to path, as a LoRA GGUF that llama.cpp's
/// llama_adapter_lora_init() (and trit run --lora) load. The file is replaced atomically.
/// Returns TRIT_OK or a negative TRIT_ERR_* code.
///
/// # Safety
/// trainer is NULL (an error) or a live handle from trit_train_start(); path is NULL (an
/// error) or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn trit_train_save(trainer: *const trit_trainer, path: *const c_char) -> c_int {
    ffi::call("trit_train_save", || {
        // SAFETY: NULL or a live handle, by the contract.
        let t = unsafe { trainer.as_ref() }.ok_or_else(|| invalid("trainer must not be NULL"))?;
        // SAFETY: NULL or NUL-terminated, by the contract.
        let path = PathBuf::from(unsafe { ffi::str_arg(path, "path")? });
        if path.as_os_str().is_empty() {
            return Err(invalid("path must not be empty"));
        }
        let session = t.session.as_ref().context("the trainer has no session")?;
        let weights = session.weights()?;
        if weights.pairs.iter().any(|p| p.a.iter().chain(&p.b).any(|v| !v.is_finite())) {
            return Err(anyhow!("the adapter holds non-finite values; not saving it").into());
        }
        weights.save(&path).with_context(|| format!("saving the adapter to {}", path.display()))?;
        tracing::info!("trit_train_save: {} after {} steps", path.display(), session.step());
        Ok(())
    })
}

/// Release a trainer (the model copy, the data, the session). NULL is ignored.
///
/// # Safety
/// trainer is NULL or a live handle from trit_train_start(), not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn trit_train_free(trainer: *mut trit_trainer) {
    ffi::call("trit_train_free", || {
        if !trainer.is_null() {
            // SAFETY: a live handle from Box::into_raw in trit_train_start, freed once.
            drop(unsafe { Box::from_raw(trainer) });
        }
        Ok(())
    });
}
