//! One training session: a llama.cpp context in training mode, the LoRA adapter's tensors
//! marked as ggml-opt parameters, and AdamW driven one context window at a time.
//!
//! Everything `unsafe` in this crate lives here, at the FFI edge.

use std::ffi::{c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use anyhow::{anyhow, bail, Context as _, Result};
use trit_llama::{CacheType, Context, ContextParams, LoraAdapter, Model};
use trit_sys as sys;

use crate::adapter::{LoraPair, LoraWeights};
use crate::data::Sample;
use crate::schedule::Schedule;

extern "C" {
    fn trit_lora_n_weights(adapter: *const sys::llama_adapter_lora) -> i32;
    fn trit_lora_weight(
        adapter: *const sys::llama_adapter_lora,
        i: i32,
        name: *mut *const std::ffi::c_char,
        a: *mut *mut sys::ggml_tensor,
        b: *mut *mut sys::ggml_tensor,
    ) -> i32;
    fn trit_lora_set_trainable(adapter: *mut sys::llama_adapter_lora) -> i32;
}

/// AdamW hyper-parameters besides the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Context sizes and threads for a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionParams {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_threads: i32,
    /// Recompute each layer's activations in the backward pass from the per-layer residual
    /// outputs instead of keeping them all (less memory, about one more forward pass of work).
    pub gradient_checkpointing: bool,
    /// Under gradient checkpointing, forward tensors kept as well (recomputed otherwise).
    pub checkpoint_keep: CheckpointKeep,
}

/// Forward tensors that gradient checkpointing keeps besides each layer's output, so that the
/// backward pass recomputes less: more memory, less work. Per layer of bitnet-b1.58-2B-4T at
/// `-c 512` (f32): attention's Q, K, V after their projections (and RoPE) ~7.5 MiB, ~8 ms
/// less recomputation per 512-token step on an H200; the FFN's gate and up projections
/// ~27 MiB, ~17 ms less (README, fine-tuning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointKeep {
    pub attention: bool,
    pub ffn: bool,
}

impl CheckpointKeep {
    /// `attn`, `ffn`, both comma-separated, or `none`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut k = CheckpointKeep::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "attn" | "attention" => k.attention = true,
                "ffn" => k.ffn = true,
                "none" => {}
                other => bail!("checkpoint keep: unknown part {other:?} (attn, ffn or none)"),
            }
        }
        Ok(k)
    }

    /// The tensor-name prefixes ggml-opt keeps (llama.cpp's graph names): the layer outputs
    /// "l_out-<layer>" always.
    fn prefixes(&self) -> String {
        let mut names = vec![CHECKPOINT_PREFIX];
        if self.attention {
            names.extend(["Qcur-", "Kcur-", "Vcur-"]);
        }
        if self.ffn {
            // the scaled projections where the model has per-tensor scales (BitNet), else the
            // projections themselves; a tensor the backward pass does not read stays unkept
            names.extend(["ffn_gate", "ffn_up"]);
        }
        names.join(",")
    }
}

impl SessionParams {
    pub fn validate(&self) -> Result<()> {
        let SessionParams { n_ctx, n_batch, n_ubatch, .. } = *self;
        if n_ctx < 2 || n_batch == 0 || n_ubatch == 0 {
            bail!("-c, -b and -ub must be positive (and -c at least 2)");
        }
        if n_ctx % 256 != 0 {
            bail!("training needs -c to be a multiple of 256 (llama.cpp pads every context to 256), got {n_ctx}");
        }
        if n_ctx % n_batch != 0 || n_batch % n_ubatch != 0 {
            bail!("training needs -c ({n_ctx}) divisible by -b ({n_batch}) and -b divisible by -ub ({n_ubatch})");
        }
        Ok(())
    }

    /// Optimizer steps per context window.
    pub fn steps_per_window(&self) -> u64 {
        (self.n_ctx / self.n_batch) as u64
    }
}

/// AdamW moments and iteration count, as ggml-opt holds them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimizerState {
    /// ggml-opt's iteration counter (1 + optimizer steps taken); drives bias correction.
    pub iter: i64,
    /// (ggml-opt tensor name, values): "AdamW m for <param>", "AdamW v for <param>".
    pub tensors: Vec<(String, Vec<f32>)>,
}

/// Memory of a session's training graphs, by part, in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryUse {
    /// The scheduler's compute buffer per backend (name, bytes): forward activations kept for
    /// the backward pass, backward temporaries, logits; the largest graph so far.
    pub compute: Vec<(String, u64)>,
    /// ggml-opt's static buffer: gradient accumulators and AdamW moments (0 before the first step).
    pub optimizer: u64,
}

impl MemoryUse {
    pub fn compute_total(&self) -> u64 {
        self.compute.iter().map(|(_, b)| b).sum()
    }
}

/// llama.cpp names each layer's residual output "l_out-<layer>": the checkpoints.
const CHECKPOINT_PREFIX: &str = "l_out-";

/// Shared with the optimizer-parameter callback that ggml-opt calls once per step.
struct OptShared {
    schedule: Schedule,
    adamw: AdamW,
    /// Optimizer steps taken so far (the callback serves step `step`, then counts it).
    step: u64,
    last_lr: f32,
    lctx: *mut sys::llama_context,
    /// Moments to load into ggml-opt right before the next step (resume).
    restore: Option<OptimizerState>,
    error: Option<String>,
}

/// ggml-opt asks for the optimizer parameters right before each AdamW step, after it has
/// allocated the moments: the place to apply the schedule and restore a checkpoint.
unsafe extern "C" fn get_opt_pars(ud: *mut c_void) -> sys::ggml_opt_optimizer_params {
    let shared = ud as *mut OptShared;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: ud is the Box<OptShared> owned by the Session that runs this step; nothing
        // else touches it while llama_opt_epoch runs.
        let s = unsafe { &mut *shared };
        if let Some(state) = s.restore.take() {
            if let Err(e) = restore_state(s.lctx, &state) {
                s.error = Some(format!("restoring the optimizer state: {e:#}"));
            }
        }
        let lr = s.schedule.lr_at(s.step);
        s.last_lr = lr;
        s.step += 1;
        (lr, s.adamw)
    }));
    let (lr, adamw) = match outcome {
        Ok(v) => v,
        Err(_) => {
            // SAFETY: as above; the closure panicked before finishing, the pointer is still valid.
            unsafe { (*shared).error = Some("panic in the optimizer-parameter callback".into()) };
            (crate::schedule::MIN_LR, AdamW::default())
        }
    };
    let mut p = sys::ggml_opt_optimizer_params::default();
    p.adamw.alpha = lr;
    p.adamw.beta1 = adamw.beta1;
    p.adamw.beta2 = adamw.beta2;
    p.adamw.eps = adamw.eps;
    p.adamw.wd = adamw.weight_decay;
    p.sgd.alpha = lr;
    p.sgd.wd = adamw.weight_decay;
    p
}

/// Base model weights stay frozen: no model tensor is a parameter.
unsafe extern "C" fn freeze_base(_t: *const sys::ggml_tensor, _ud: *mut c_void) -> bool {
    false
}

fn opt_ctx(lctx: *mut sys::llama_context) -> Result<sys::ggml_opt_context_t> {
    // SAFETY: lctx is a live context; the getter only reads a field.
    let o = unsafe { sys::llama_opt_get_context(lctx) };
    if o.is_null() {
        bail!("llama_opt_init has not run");
    }
    Ok(o)
}

fn state_tensor(opt: sys::ggml_opt_context_t, name: &str) -> Result<Option<NonNull<sys::ggml_tensor>>> {
    let c = CString::new(name).map_err(|_| anyhow!("NUL in tensor name"))?;
    // SAFETY: opt is live; the lookup only reads ggml-opt's static context.
    Ok(NonNull::new(unsafe { sys::ggml_opt_state_tensor(opt, c.as_ptr()) }))
}

fn n_elements(t: NonNull<sys::ggml_tensor>) -> usize {
    // SAFETY: t is a live tensor.
    unsafe { sys::ggml_nelements(t.as_ptr()) as usize }
}

fn read_f32(t: NonNull<sys::ggml_tensor>) -> Result<Vec<f32>> {
    // SAFETY: t is a live tensor; reading its type.
    if unsafe { (*t.as_ptr()).type_ } != sys::GGML_TYPE_F32 {
        bail!("tensor is not F32");
    }
    let n = n_elements(t);
    let mut v = vec![0f32; n];
    // SAFETY: t is allocated in a backend buffer (checked by ggml) and holds n floats; v has room for n.
    unsafe { sys::ggml_backend_tensor_get(t.as_ptr(), v.as_mut_ptr() as *mut c_void, 0, n * 4) };
    Ok(v)
}

fn write_f32(t: NonNull<sys::ggml_tensor>, v: &[f32]) -> Result<()> {
    let n = n_elements(t);
    if n != v.len() {
        bail!("size mismatch: tensor has {n} elements, data {}", v.len());
    }
    // SAFETY: t holds n F32 values in a backend buffer; v provides n floats.
    unsafe { sys::ggml_backend_tensor_set(t.as_ptr(), v.as_ptr() as *const c_void, 0, n * 4) };
    Ok(())
}

fn restore_state(lctx: *mut sys::llama_context, state: &OptimizerState) -> Result<()> {
    let opt = opt_ctx(lctx)?;
    for (name, data) in &state.tensors {
        let t = state_tensor(opt, name)?.ok_or_else(|| anyhow!("ggml-opt has no tensor '{name}'"))?;
        write_f32(t, data).with_context(|| name.clone())?;
    }
    if state.iter < 1 {
        bail!("iteration count {} < 1", state.iter);
    }
    // SAFETY: opt is live; iter >= 1 was checked above (ggml would abort otherwise).
    unsafe { sys::ggml_opt_set_iter(opt, state.iter) };
    Ok(())
}

/// One trainable adapter tensor pair inside llama.cpp.
struct LiveLora {
    base: String,
    a: NonNull<sys::ggml_tensor>,
    b: NonNull<sys::ggml_tensor>,
}

fn tensor_name(t: NonNull<sys::ggml_tensor>) -> String {
    // SAFETY: ggml tensor names are NUL-terminated fixed arrays.
    unsafe { CStr::from_ptr((*t.as_ptr()).name.as_ptr()) }.to_string_lossy().into_owned()
}

fn ne(t: NonNull<sys::ggml_tensor>) -> [i64; 4] {
    // SAFETY: live tensor.
    unsafe { (*t.as_ptr()).ne }
}

/// A model context in training mode with one trainable LoRA adapter.
pub struct Session<'m> {
    // Field order = drop order: the context goes before the adapter it uses.
    ctx: Context<'m>,
    _adapter: LoraAdapter<'m>,
    loras: Vec<LiveLora>,
    alpha: f32,
    arch: String,
    shared: Box<OptShared>,
    dataset: NonNull<sys::ggml_opt_dataset>,
    result_train: NonNull<sys::ggml_opt_result>,
    result_eval: NonNull<sys::ggml_opt_result>,
    params: SessionParams,
}

impl<'m> Session<'m> {
    /// Load `adapter_path` onto `model`, make its tensors trainable and initialise ggml-opt.
    /// `model` must not be used for another training session (llama_opt_init changes its
    /// n_ctx_train).
    pub fn new(
        model: &'m Model,
        adapter_path: &Path,
        params: SessionParams,
        schedule: Schedule,
        adamw: AdamW,
    ) -> Result<Self> {
        params.validate()?;
        if !(0.0..=1.0).contains(&adamw.weight_decay) {
            bail!("--weight-decay must be in [0, 1]");
        }
        let weights = LoraWeights::load(adapter_path)?;
        let cp = ContextParams {
            n_ctx: params.n_ctx,
            n_batch: params.n_batch,
            n_ubatch: params.n_ubatch,
            n_threads: params.n_threads,
            n_threads_batch: params.n_threads,
            flash_attn: Some(false),
            n_seq_max: 1,
            cache_type_k: CacheType::F32,
            cache_type_v: CacheType::F32,
        };
        let mut ctx = Context::new(model, &cp)?;
        if ctx.n_ctx() != params.n_ctx {
            bail!("llama.cpp made a context of {} tokens, {} asked", ctx.n_ctx(), params.n_ctx);
        }
        let adapter = LoraAdapter::load(model, adapter_path)?;
        ctx.set_adapters(&[(&adapter, 1.0)])?;
        // SAFETY: the adapter is live (owned by the model); the shim never throws.
        let n = unsafe { trit_lora_n_weights(adapter.as_ptr()) };
        let mut loras = Vec::new();
        for i in 0..n.max(0) {
            let mut name = std::ptr::null();
            let mut a = std::ptr::null_mut();
            let mut b = std::ptr::null_mut();
            // SAFETY: out-pointers are valid locals; index in range.
            let rc = unsafe { trit_lora_weight(adapter.as_ptr(), i, &mut name, &mut a, &mut b) };
            let (Some(a), Some(b)) = (NonNull::new(a), NonNull::new(b)) else { bail!("adapter pair {i} missing") };
            if rc != 0 || name.is_null() {
                bail!("adapter pair {i} missing");
            }
            // SAFETY: name points into the adapter's map key, alive with the adapter.
            let base = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
            loras.push(LiveLora { base, a, b });
        }
        loras.sort_by(|x, y| x.base.cmp(&y.base));
        if loras.is_empty() {
            bail!("{}: the adapter has no tensors", adapter_path.display());
        }
        if n_ubatch_trains_kv(params) {
            tracing::debug!("n_ubatch == n_ctx: K and V projections receive gradients");
        } else {
            tracing::warn!(
                "-ub {} < -c {}: llama.cpp gives the K and V projections no gradient in this mode",
                params.n_ubatch,
                params.n_ctx
            );
        }
        // SAFETY: adapter live; the shim flags F32 leaves only and reports anything else.
        if unsafe { trit_lora_set_trainable(adapter.as_ptr()) } < 0 {
            bail!("the adapter's tensors cannot be trained (not F32 leaves)");
        }
        let mut shared = Box::new(OptShared {
            schedule,
            adamw,
            step: 0,
            last_lr: 0.0,
            lctx: ctx.as_ptr(),
            restore: None,
            error: None,
        });
        let lopt = sys::llama_opt_params {
            n_ctx_train: params.n_ctx,
            param_filter: Some(freeze_base),
            param_filter_ud: std::ptr::null_mut(),
            get_opt_pars: Some(get_opt_pars),
            get_opt_pars_ud: &mut *shared as *mut OptShared as *mut c_void,
            optimizer_type: sys::GGML_OPT_OPTIMIZER_TYPE_ADAMW,
        };
        // SAFETY: ctx and model are live; the sizes were validated above (llama.cpp asserts
        // them); the callback userdata is boxed and outlives the context's use of it.
        unsafe { sys::llama_opt_init(ctx.as_ptr(), model.as_ptr(), lopt) };
        if params.gradient_checkpointing {
            let opt = opt_ctx(ctx.as_ptr())?;
            let names = params.checkpoint_keep.prefixes();
            tracing::info!("gradient checkpointing keeps {names}");
            let keep = CString::new(names).context("checkpoint names")?;
            // SAFETY: opt is live; the prefixes are a NUL-terminated string (ggml-opt copies it).
            unsafe { sys::ggml_opt_set_checkpointing(opt, keep.as_ptr()) };
        }
        let n = params.n_ctx as i64;
        // SAFETY: plain constructors; null results are checked.
        let dataset =
            NonNull::new(unsafe { sys::ggml_opt_dataset_init(sys::GGML_TYPE_I32, sys::GGML_TYPE_I32, n, n, 1, 1) })
                .context("ggml_opt_dataset_init failed")?;
        // SAFETY: as above.
        let result_train = NonNull::new(unsafe { sys::ggml_opt_result_init() }).context("ggml_opt_result_init")?;
        // SAFETY: as above.
        let result_eval = NonNull::new(unsafe { sys::ggml_opt_result_init() }).context("ggml_opt_result_init")?;
        Ok(Self {
            ctx,
            _adapter: adapter,
            loras,
            alpha: weights.alpha,
            arch: weights.arch,
            shared,
            dataset,
            result_train,
            result_eval,
            params,
        })
    }

    pub fn params(&self) -> SessionParams {
        self.params
    }

    /// Optimizer steps taken.
    pub fn step(&self) -> u64 {
        self.shared.step
    }

    /// Set the step counter (resume) so the schedule continues where it stopped.
    pub fn set_step(&mut self, step: u64) {
        self.shared.step = step;
    }

    pub fn last_lr(&self) -> f32 {
        self.shared.last_lr
    }

    fn load_sample(&mut self, s: &Sample) -> Result<()> {
        let n = self.params.n_ctx as usize;
        if s.tokens.len() != n || s.labels.len() != n {
            bail!("sample has {} tokens / {} labels, the context is {n}", s.tokens.len(), s.labels.len());
        }
        // SAFETY: the dataset's data and label tensors are [n, 1] I32 in a CPU buffer.
        unsafe {
            let data = sys::ggml_opt_dataset_data(self.dataset.as_ptr());
            let labels = sys::ggml_opt_dataset_labels(self.dataset.as_ptr());
            sys::ggml_backend_tensor_set(data, s.tokens.as_ptr() as *const c_void, 0, n * 4);
            sys::ggml_backend_tensor_set(labels, s.labels.as_ptr() as *const c_void, 0, n * 4);
        }
        Ok(())
    }

    fn run(&mut self, s: &Sample, train: bool) -> Result<f64> {
        let n_trained = s.n_trained();
        if n_trained == 0 {
            bail!("sample has no trained positions");
        }
        if let Some(&bad) = s.tokens.iter().chain(s.labels.iter()).find(|&&t| t >= self.ctx.model().n_vocab() as i32) {
            bail!("token id {bad} is outside the vocabulary");
        }
        self.load_sample(s)?;
        let result = if train { self.result_train } else { self.result_eval };
        // SAFETY: result is live.
        unsafe { sys::ggml_opt_result_reset(result.as_ptr()) };
        let split = if train { 1 } else { 0 };
        // SAFETY: context, dataset and results are live; the context is in training mode
        // (llama_opt_init ran in new()); labels are in range or negative (masked).
        unsafe {
            sys::llama_opt_epoch(
                self.ctx.as_ptr(),
                self.dataset.as_ptr(),
                if train { result.as_ptr() } else { std::ptr::null_mut() },
                if train { std::ptr::null_mut() } else { result.as_ptr() },
                split,
                None,
                None,
            )
        };
        if let Some(e) = self.shared.error.take() {
            bail!(e);
        }
        let (mut loss, mut unc) = (0f64, 0f64);
        // SAFETY: result is live; both out-pointers are valid.
        unsafe { sys::ggml_opt_result_loss(result.as_ptr(), &mut loss, &mut unc) };
        // ggml's cross-entropy is the mean over all n_ctx positions (masked ones add 0):
        // report the mean over trained positions instead.
        Ok(loss * self.params.n_ctx as f64 / n_trained as f64)
    }

    /// Forward, backward and AdamW over one window (n_ctx / n_batch optimizer steps).
    /// Returns the mean loss over the window's trained positions, before the update.
    pub fn train_window(&mut self, s: &Sample) -> Result<f64> {
        self.run(s, true)
    }

    /// Forward only: the mean loss over the window's trained positions.
    pub fn eval_window(&mut self, s: &Sample) -> Result<f64> {
        self.run(s, false)
    }

    /// The adapter as it is now.
    pub fn weights(&self) -> Result<LoraWeights> {
        let mut pairs = Vec::with_capacity(self.loras.len());
        for l in &self.loras {
            let (na, nb) = (ne(l.a), ne(l.b));
            pairs.push(LoraPair {
                base: l.base.clone(),
                n_in: na[0] as u64,
                n_out: nb[1] as u64,
                rank: na[1] as u64,
                a: read_f32(l.a)?,
                b: read_f32(l.b)?,
            });
        }
        Ok(LoraWeights { arch: self.arch.clone(), alpha: self.alpha, pairs })
    }

    /// Overwrite the adapter's values (same shapes).
    pub fn set_weights(&mut self, w: &LoraWeights) -> Result<()> {
        if w.pairs.len() != self.loras.len() {
            bail!("adapter has {} pairs, expected {}", w.pairs.len(), self.loras.len());
        }
        for (p, l) in w.pairs.iter().zip(&self.loras) {
            if p.base != l.base {
                bail!("adapter pair {} does not match {}", p.base, l.base);
            }
            write_f32(l.a, &p.a).with_context(|| format!("{}.lora_a", p.base))?;
            write_f32(l.b, &p.b).with_context(|| format!("{}.lora_b", p.base))?;
        }
        Ok(())
    }

    fn param_names(&self) -> Vec<String> {
        self.loras.iter().flat_map(|l| [tensor_name(l.a), tensor_name(l.b)]).collect()
    }

    /// The gradient of the last training step's loss (ggml's mean over n_ctx positions)
    /// for each adapter tensor, by tensor name.
    pub fn gradients(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let opt = opt_ctx(self.ctx.as_ptr())?;
        self.param_names()
            .into_iter()
            .map(|name| {
                let t = state_tensor(opt, &format!("grad acc for {name}"))?
                    .ok_or_else(|| anyhow!("no gradient for {name} yet (train a step first)"))?;
                Ok((name, read_f32(t)?))
            })
            .collect()
    }

    /// AdamW moments and iteration count (for a checkpoint).
    pub fn optimizer_state(&self) -> Result<OptimizerState> {
        let opt = opt_ctx(self.ctx.as_ptr())?;
        let mut tensors = Vec::new();
        for name in self.param_names() {
            for kind in ["m", "v"] {
                let key = format!("AdamW {kind} for {name}");
                let t = state_tensor(opt, &key)?.ok_or_else(|| anyhow!("ggml-opt has no '{key}' yet"))?;
                tensors.push((key, read_f32(t)?));
            }
        }
        // SAFETY: opt is live.
        let iter = unsafe { sys::ggml_opt_get_iter(opt) };
        Ok(OptimizerState { iter, tensors })
    }

    /// Compute and optimizer buffer sizes (the compute buffer only grows: the largest graph so far).
    pub fn memory(&self) -> Result<MemoryUse> {
        let opt = opt_ctx(self.ctx.as_ptr())?;
        // SAFETY: opt is live; the scheduler belongs to the context and outlives this call.
        let sched = unsafe { sys::ggml_opt_backend_sched(opt) };
        if sched.is_null() {
            bail!("ggml-opt has no scheduler");
        }
        // SAFETY: sched is live.
        let n = unsafe { sys::ggml_backend_sched_get_n_backends(sched) };
        let mut compute = Vec::with_capacity(n.max(0) as usize);
        for i in 0..n {
            // SAFETY: i < n; backends and their names live as long as the scheduler.
            let (name, bytes) = unsafe {
                let b = sys::ggml_backend_sched_get_backend(sched, i);
                let name = CStr::from_ptr(sys::ggml_backend_name(b)).to_string_lossy().into_owned();
                (name, sys::ggml_backend_sched_get_buffer_size(sched, b) as u64)
            };
            compute.push((name, bytes));
        }
        // SAFETY: opt is live.
        let optimizer = unsafe { sys::ggml_opt_static_buffer_size(opt) } as u64;
        Ok(MemoryUse { compute, optimizer })
    }

    /// Load these moments into ggml-opt right before the next optimizer step.
    pub fn restore_optimizer_state(&mut self, state: OptimizerState) {
        self.shared.restore = Some(state);
    }
}

fn n_ubatch_trains_kv(p: SessionParams) -> bool {
    p.n_ubatch == p.n_ctx
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: created in new(), freed once; the context (dropped after this) no longer
        // references them outside llama_opt_epoch.
        unsafe {
            sys::ggml_opt_result_free(self.result_eval.as_ptr());
            sys::ggml_opt_result_free(self.result_train.as_ptr());
            sys::ggml_opt_dataset_free(self.dataset.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CheckpointKeep;

    #[test]
    fn checkpoint_keep_parses_its_parts_and_names_the_tensors() {
        assert_eq!(CheckpointKeep::parse("").unwrap(), CheckpointKeep::default());
        assert_eq!(CheckpointKeep::parse("none").unwrap().prefixes(), "l_out-");
        let both = CheckpointKeep::parse("attn, ffn").unwrap();
        assert_eq!(both, CheckpointKeep { attention: true, ffn: true });
        assert_eq!(both.prefixes(), "l_out-,Qcur-,Kcur-,Vcur-,ffn_gate,ffn_up");
        let e = CheckpointKeep::parse("attn,mlp").unwrap_err().to_string();
        assert!(e.contains("\"mlp\""), "{e}");
    }
}
