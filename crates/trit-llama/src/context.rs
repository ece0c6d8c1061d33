use std::ptr::NonNull;

use crate::{log, Batch, Error, LoraAdapter, Model, Result};

/// Context settings (llama.cpp's `-c -b -ub -t -tb -fa`).
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// 0 = the model's training context.
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_threads: i32,
    pub n_threads_batch: i32,
    /// None = llama.cpp decides (auto).
    pub flash_attn: Option<bool>,
    pub n_seq_max: u32,
    /// KV cache storage for K and V (`-ctk`, `-ctv`); llama.cpp's default is F16.
    pub cache_type_k: CacheType,
    pub cache_type_v: CacheType,
}

/// KV cache element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    F32,
    #[default]
    F16,
    Q8_0,
}

impl CacheType {
    fn ggml(self) -> trit_sys::ggml_type {
        match self {
            CacheType::F32 => trit_sys::GGML_TYPE_F32,
            CacheType::F16 => trit_sys::GGML_TYPE_F16,
            CacheType::Q8_0 => trit_sys::GGML_TYPE_Q8_0,
        }
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(CacheType::F32),
            "f16" => Ok(CacheType::F16),
            "q8_0" => Ok(CacheType::Q8_0),
            _ => Err(format!("unsupported KV cache type '{s}' (f32, f16, q8_0)")),
        }
    }
}

impl Default for ContextParams {
    fn default() -> Self {
        let threads = default_threads();
        Self {
            n_ctx: 4096,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads: threads,
            n_threads_batch: threads,
            flash_attn: None,
            n_seq_max: 1,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
        }
    }
}

/// llama.cpp's default thread count: the number of available cores.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(4)
}

/// Timings llama.cpp kept for a context.
#[derive(Debug, Clone, Copy)]
pub struct PerfData {
    pub t_load_ms: f64,
    pub t_prompt_ms: f64,
    pub n_prompt: i32,
    pub t_eval_ms: f64,
    pub n_eval: i32,
}

/// An inference context over a borrowed model.
pub struct Context<'m> {
    ptr: NonNull<trit_sys::llama_context>,
    model: &'m Model,
}

impl<'m> Context<'m> {
    pub fn new(model: &'m Model, params: &ContextParams) -> Result<Self> {
        // SAFETY: plain struct returned by value.
        let mut p = unsafe { trit_sys::llama_context_default_params() };
        p.n_ctx = params.n_ctx;
        p.n_batch = params.n_batch;
        p.n_ubatch = params.n_ubatch;
        p.n_threads = params.n_threads;
        p.n_threads_batch = params.n_threads_batch;
        p.n_seq_max = params.n_seq_max;
        p.no_perf = false;
        p.type_k = params.cache_type_k.ggml();
        p.type_v = params.cache_type_v.ggml();
        p.flash_attn_type = match params.flash_attn {
            None => trit_sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            Some(true) => trit_sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            Some(false) => trit_sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        log::take_last_error();
        // SAFETY: the model outlives the context ('m); p is initialised.
        let raw = unsafe { trit_sys::llama_init_from_model(model.as_ptr(), p) };
        let ptr = NonNull::new(raw).ok_or_else(|| Error::ContextInit(log::last_error_or("unknown error")))?;
        Ok(Self { ptr, model })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn as_ptr(&self) -> *mut trit_sys::llama_context {
        self.ptr.as_ptr()
    }

    pub fn n_ctx(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { trit_sys::llama_n_ctx(self.as_ptr()) }
    }

    /// Cells of the KV cache each sequence may use (n_ctx / n_seq_max unless the cache is unified).
    pub fn n_ctx_seq(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { trit_sys::llama_n_ctx_seq(self.as_ptr()) }
    }

    /// How many sequences (parallel slots) the context was made for.
    pub fn n_seq_max(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { trit_sys::llama_n_seq_max(self.as_ptr()) }
    }

    pub fn n_batch(&self) -> u32 {
        // SAFETY: valid context.
        unsafe { trit_sys::llama_n_batch(self.as_ptr()) }
    }

    /// Run the model on a batch. Logits for the tokens marked in the batch become
    /// available through [`Context::logits_ith`].
    pub fn decode(&mut self, batch: &Batch) -> Result<()> {
        log::take_last_error();
        // SAFETY: batch's arrays are valid for batch.len() entries during the call.
        let code = unsafe { trit_sys::llama_decode(self.as_ptr(), batch.raw()) };
        match code {
            0 => Ok(()),
            1 => Err(Error::Decode { code, reason: "no room in the KV cache (raise -c)".into() }),
            _ => Err(Error::Decode { code, reason: log::last_error_or("see the log") }),
        }
    }

    /// Wait until every computation queued by `decode` has finished (GPU backends may
    /// return from `decode` early).
    pub fn synchronize(&mut self) {
        // SAFETY: valid context.
        unsafe { trit_sys::llama_synchronize(self.as_ptr()) };
    }

    /// Logits for the `i`-th output of the last decode (negative counts from the end).
    pub fn logits_ith(&self, i: i32) -> Result<&[f32]> {
        // SAFETY: valid context; llama.cpp returns null for an invalid index.
        let p = unsafe { trit_sys::llama_get_logits_ith(self.as_ptr(), i) };
        if p.is_null() {
            return Err(Error::Invalid(format!("no logits for output {i}")));
        }
        // SAFETY: llama.cpp's logits row holds n_vocab floats, valid until the next decode
        // (which needs &mut self, so the borrow ends first).
        Ok(unsafe { std::slice::from_raw_parts(p, self.model.n_vocab()) })
    }

    /// Forget everything in the KV cache.
    pub fn clear_memory(&mut self) {
        // SAFETY: valid context; the memory handle belongs to it.
        unsafe { trit_sys::llama_memory_clear(trit_sys::llama_get_memory(self.as_ptr()), true) };
    }

    /// Remove positions `[p0, p1)` of sequence `seq` from the KV cache (-1 = open end).
    pub fn remove_positions(&mut self, seq: i32, p0: i32, p1: i32) -> bool {
        // SAFETY: valid context and memory handle.
        unsafe { trit_sys::llama_memory_seq_rm(trit_sys::llama_get_memory(self.as_ptr()), seq, p0, p1) }
    }

    /// The highest position held for sequence `seq` (-1 when empty).
    pub fn pos_max(&self, seq: i32) -> i32 {
        // SAFETY: valid context and memory handle.
        unsafe { trit_sys::llama_memory_seq_pos_max(trit_sys::llama_get_memory(self.as_ptr()), seq) }
    }

    /// Apply LoRA adapters with their scales (replacing any set before).
    pub fn set_adapters(&mut self, adapters: &[(&LoraAdapter<'m>, f32)]) -> Result<()> {
        let mut ptrs: Vec<*mut trit_sys::llama_adapter_lora> = adapters.iter().map(|(a, _)| a.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|(_, s)| *s).collect();
        // SAFETY: both arrays hold adapters.len() entries; adapters belong to this model.
        let rc = unsafe {
            trit_sys::llama_set_adapters_lora(self.as_ptr(), ptrs.as_mut_ptr(), ptrs.len(), scales.as_mut_ptr())
        };
        if rc != 0 {
            return Err(Error::Invalid(format!(
                "could not apply LoRA adapters: {}",
                log::last_error_or("unknown error")
            )));
        }
        Ok(())
    }

    pub fn perf(&self) -> PerfData {
        // SAFETY: valid context.
        let d = unsafe { trit_sys::llama_perf_context(self.as_ptr()) };
        PerfData {
            t_load_ms: d.t_load_ms,
            t_prompt_ms: d.t_p_eval_ms,
            n_prompt: d.n_p_eval,
            t_eval_ms: d.t_eval_ms,
            n_eval: d.n_eval,
        }
    }

    pub fn reset_perf(&mut self) {
        // SAFETY: valid context.
        unsafe { trit_sys::llama_perf_context_reset(self.as_ptr()) };
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model, freed once.
        unsafe { trit_sys::llama_free(self.ptr.as_ptr()) };
    }
}
