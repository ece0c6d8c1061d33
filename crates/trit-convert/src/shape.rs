//! The hyper-parameters of a bitnet model and their `bitnet.*` / `general.*` metadata.

use trit_gguf::GgufWriter;

use crate::error::Result;
use crate::hf_config::{Activation, ModelConfig};

/// GGUF architecture name of llama.cpp's `LLM_ARCH_BITNET`.
pub(crate) const ARCH: &str = "bitnet";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelShape {
    pub(crate) n_layers: usize,
    pub(crate) hidden: usize,
    pub(crate) ff: usize,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) head_dim: usize,
    pub(crate) vocab: usize,
    pub(crate) context: usize,
    pub(crate) rms_eps: f32,
    pub(crate) rope_theta: f32,
    pub(crate) activation: Activation,
}

impl ModelShape {
    pub(crate) fn from_config(c: &ModelConfig) -> Self {
        ModelShape {
            n_layers: c.n_layers,
            hidden: c.hidden,
            ff: c.ff,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            vocab: c.vocab,
            context: c.context,
            rms_eps: c.rms_eps,
            rope_theta: c.rope_theta,
            activation: c.activation,
        }
    }

    /// Output rows of the K and V projections.
    pub(crate) fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Declares `general.*` and `bitnet.*` metadata.
    pub(crate) fn write_metadata(&self, w: &mut GgufWriter, name: &str, file_type: u32) -> Result<()> {
        let key = |k: &str| format!("{ARCH}.{k}");
        let u = |v: usize| u32::try_from(v).expect("hyper-parameters fit in u32");
        w.add_kv("general.architecture", ARCH)?;
        w.add_kv("general.name", name)?;
        w.add_kv("general.file_type", file_type)?;
        w.add_kv("general.quantization_version", 2u32)?;
        w.add_kv(key("vocab_size"), u(self.vocab))?;
        w.add_kv(key("context_length"), u(self.context))?;
        w.add_kv(key("embedding_length"), u(self.hidden))?;
        w.add_kv(key("block_count"), u(self.n_layers))?;
        w.add_kv(key("feed_forward_length"), u(self.ff))?;
        w.add_kv(key("attention.head_count"), u(self.n_head))?;
        w.add_kv(key("attention.head_count_kv"), u(self.n_kv_head))?;
        w.add_kv(key("attention.layer_norm_rms_epsilon"), self.rms_eps)?;
        w.add_kv(key("rope.freq_base"), self.rope_theta)?;
        w.add_kv(key("rope.dimension_count"), u(self.head_dim))?;
        w.add_kv(key("hidden_activation"), self.activation.gguf_name())?;
        Ok(())
    }
}
