use std::ptr::NonNull;

use crate::{Context, Token};

/// Sampling settings with llama.cpp's defaults (`--temp --top-k --top-p --min-p
/// --repeat-penalty --repeat-last-n -s`).
#[derive(Debug, Clone)]
pub struct SamplerParams {
    pub seed: u32,
    pub temp: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

/// llama.cpp's LLAMA_DEFAULT_SEED: pick a random seed.
pub const DEFAULT_SEED: u32 = 0xFFFF_FFFF;

impl Default for SamplerParams {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

/// A llama.cpp sampler chain: penalties → top-k → top-p → min-p → temperature → pick.
/// `temp <= 0` is greedy, as in llama.cpp.
pub struct Sampler {
    ptr: NonNull<trit_sys::llama_sampler>,
}

// SAFETY: a sampler chain is plain owned state; it is used by one thread at a time (&mut).
unsafe impl Send for Sampler {}

impl Sampler {
    pub fn new(p: &SamplerParams, n_vocab: usize) -> Self {
        // SAFETY: constructors return owned samplers; llama_sampler_chain_add takes
        // ownership of each added sampler.
        unsafe {
            let chain = trit_sys::llama_sampler_chain_init(trit_sys::llama_sampler_chain_default_params());
            let add = |s| trit_sys::llama_sampler_chain_add(chain, s);
            if p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
                add(trit_sys::llama_sampler_init_penalties(
                    n_vocab as i32,
                    p.repeat_last_n,
                    p.repeat_penalty,
                    p.frequency_penalty,
                    p.presence_penalty,
                ));
            }
            if p.temp <= 0.0 {
                add(trit_sys::llama_sampler_init_greedy());
            } else {
                add(trit_sys::llama_sampler_init_top_k(p.top_k));
                add(trit_sys::llama_sampler_init_top_p(p.top_p, 1));
                add(trit_sys::llama_sampler_init_min_p(p.min_p, 1));
                add(trit_sys::llama_sampler_init_temp(p.temp));
                add(trit_sys::llama_sampler_init_dist(p.seed));
            }
            Self { ptr: NonNull::new(chain).expect("llama_sampler_chain_init returned null") }
        }
    }

    /// Sample from the `idx`-th output of the context's last decode and accept the token.
    pub fn sample(&mut self, ctx: &Context<'_>, idx: i32) -> Token {
        // SAFETY: valid chain and context; sample also accepts the token into the chain.
        unsafe { trit_sys::llama_sampler_sample(self.ptr.as_ptr(), ctx.as_ptr(), idx) }
    }

    /// Feed a token (e.g. of the prompt) to the penalty history.
    pub fn accept(&mut self, t: Token) {
        // SAFETY: valid chain.
        unsafe { trit_sys::llama_sampler_accept(self.ptr.as_ptr(), t) };
    }

    pub fn reset(&mut self) {
        // SAFETY: valid chain.
        unsafe { trit_sys::llama_sampler_reset(self.ptr.as_ptr()) };
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain owns its samplers and is freed once.
        unsafe { trit_sys::llama_sampler_free(self.ptr.as_ptr()) };
    }
}
