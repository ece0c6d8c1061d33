//! Safe layer over the pinned llama.cpp C API.
//!
//! Every `unsafe` call into llama.cpp lives in this crate, each with a `// SAFETY:` note.
//! llama.cpp reports failures through its log; [`log`] routes that log to `tracing` and
//! keeps the last error line so that a failed load turns into an error that says why.

mod backend;
mod batch;
mod context;
mod error;
pub mod log;
mod lora;
mod model;
pub mod quant;
mod sampler;

pub use backend::{gpu_backend, init, system_info};
pub use batch::Batch;
pub use context::{CacheType, Context, ContextParams, PerfData};
pub use error::{Error, Result};
pub use lora::LoraAdapter;
pub use model::{ChatMessage, Model, ModelParams};
pub use sampler::{Sampler, SamplerParams, DEFAULT_SEED};

/// A token id, as llama.cpp numbers them.
pub type Token = trit_sys::llama_token;
