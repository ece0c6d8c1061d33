//! trit-convert: Hugging Face BitNet b1.58 checkpoints → GGUF for llama.cpp's `LLM_ARCH_BITNET`.
//!
//! * [`convert`] reads `config.json`, `model.safetensors` (or a sharded index),
//!   `tokenizer.json` / `tokenizer.model`, `tokenizer_config.json` and
//!   `generation_config.json`, and streams a GGUF one tensor at a time.
//! * [`synth`] writes a random-weight model of the bitnet-b1.58-2B-4T shape.
//!
//! Output layout (what llama.cpp's bitnet loader asks for): `token_embd` (F16 or Q8_0; it is
//! also the tied output head), `output_norm`, and per block `attn_norm`, `attn_q/k/v`,
//! `attn_output`, `attn_sub_norm`, `ffn_norm`, `ffn_gate/up/down`, `ffn_sub_norm`. Ternary
//! projections are TQ2_0 (default) or TQ1_0 with every block scale 1.0 and the per-tensor scale
//! in an F32 `blk.N.<name>.scale` tensor of shape `[1]`, or dequantised F16 without scales.
//! A projection whose input dimension is not a multiple of 256 cannot be a TQ tensor; it falls
//! back to F16 with a warning (listed in [`ConvertReport::f16_fallbacks`]).
//!
//! llama.cpp runs `LLM_ARCH_BITNET` with NEOX rope (rotate-half pairs `i, i + d/2`), the same
//! convention as the Hugging Face models, so q/k rows are written unpermuted.

mod convert;
mod emit;
mod error;
mod hf_config;
mod json_file;
mod layout;
mod options;
mod plan;
mod progress;
mod safetensors_source;
mod shape;
mod synth;
mod ternary;
mod tokenizer;

pub use convert::convert;
pub use error::{ConvertError, Result};
pub use options::{ConvertOptions, ConvertReport, EmbeddingType, SynthPreset, WeightType};
pub use synth::synth;
