//! Tensor names and shapes of llama.cpp's `LLM_ARCH_BITNET` (src/models/bitnet.cpp), and the
//! Hugging Face names they come from.

use trit_gguf::GgmlType;

use crate::options::WeightType;
use crate::shape::ModelShape;

/// Row length a TQ1_0/TQ2_0 tensor must be a multiple of (`QK_K`).
pub(crate) const TQ_BLOCK: usize = 256;

pub(crate) const TOKEN_EMBD: &str = "token_embd.weight";
pub(crate) const OUTPUT_NORM: &str = "output_norm.weight";
pub(crate) const HF_EMBED: &str = "model.embed_tokens.weight";
pub(crate) const HF_NORM: &str = "model.norm.weight";
pub(crate) const HF_LM_HEAD: &str = "lm_head.weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// RMSNorm weight of this length, stored F32.
    Norm(usize),
    /// Ternary projection: HF `[out, inp]`, ggml `ne = [inp, out]`.
    Linear { out: usize, inp: usize },
}

/// One per-layer tensor: llama.cpp name (after `blk.N.`), HF name (after `model.layers.N.`).
#[derive(Debug, Clone)]
pub(crate) struct LayerTensor {
    pub(crate) gguf: &'static str,
    pub(crate) hf: String,
    pub(crate) role: Role,
}

/// The eleven tensors of one block, in the order they are written.
pub(crate) fn layer_tensors(s: &ModelShape, attn_sub_norm: &str, ffn_sub_norm: &str) -> Vec<LayerTensor> {
    let (h, kv, ff) = (s.hidden, s.kv_dim(), s.ff);
    let lin = |out, inp| Role::Linear { out, inp };
    [
        ("attn_norm", "input_layernorm".to_string(), Role::Norm(h)),
        ("attn_q", "self_attn.q_proj".into(), lin(h, h)),
        ("attn_k", "self_attn.k_proj".into(), lin(kv, h)),
        ("attn_v", "self_attn.v_proj".into(), lin(kv, h)),
        ("attn_output", "self_attn.o_proj".into(), lin(h, h)),
        ("attn_sub_norm", attn_sub_norm.into(), Role::Norm(h)),
        ("ffn_norm", "post_attention_layernorm".into(), Role::Norm(h)),
        ("ffn_gate", "mlp.gate_proj".into(), lin(ff, h)),
        ("ffn_up", "mlp.up_proj".into(), lin(ff, h)),
        ("ffn_down", "mlp.down_proj".into(), lin(h, ff)),
        ("ffn_sub_norm", ffn_sub_norm.into(), Role::Norm(ff)),
    ]
    .into_iter()
    .map(|(gguf, hf, role)| LayerTensor { gguf, hf, role })
    .collect()
}

/// The stored type of a ternary projection with `inp` inputs, and whether it had to fall back
/// to F16 because TQ rows must be whole 256-weight blocks.
pub(crate) fn linear_type(weight_type: WeightType, inp: usize) -> (GgmlType, bool) {
    let ty = weight_type.ggml_type();
    if ty.is_ternary() && inp % TQ_BLOCK != 0 {
        (GgmlType::F16, true)
    } else {
        (ty, false)
    }
}
