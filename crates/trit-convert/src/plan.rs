//! Checking a checkpoint against its config and planning the output tensors, before anything
//! is written.

use std::collections::HashSet;

use safetensors::Dtype;
use trit_gguf::{GgmlType, GgufWriter};

use crate::error::{ConvertError, Result};
use crate::hf_config::{LinearClass, ModelConfig};
use crate::layout::{self, Role};
use crate::options::ConvertOptions;
use crate::safetensors_source::{SafetensorsSource, TensorRef};
use crate::shape::ModelShape;
use crate::ternary::is_float;

/// Where an output tensor's data comes from.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// A float vector copied as F32.
    Norm { hf: String },
    /// The token embedding, `vocab` rows.
    Embedding { hf: String },
    /// Full-precision latent weights, ternarised with absmean.
    Latent { hf: String },
    /// transformers' 2-bit packed uint8 weights and their `weight_scale`.
    Packed { hf: String, scale_hf: String, class: LinearClass },
    /// The F32 `[1]` scale of the projection written just before.
    Scale,
}

#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) gguf: String,
    pub(crate) ty: GgmlType,
    /// ggml order.
    pub(crate) ne: Vec<u64>,
    pub(crate) payload: Payload,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) tensors: Vec<Planned>,
    pub(crate) f16_fallbacks: Vec<String>,
}

impl Plan {
    pub(crate) fn declare(&self, w: &mut GgufWriter) -> Result<()> {
        for t in &self.tensors {
            w.add_tensor(t.gguf.clone(), t.ty, &t.ne)?;
        }
        Ok(())
    }
}

fn shape_err(t: &TensorRef<'_>, expected: Vec<usize>, why: String) -> ConvertError {
    ConvertError::Shape {
        path: t.file.to_path_buf(),
        tensor: t.name.to_string(),
        found: t.shape.clone(),
        expected,
        why,
    }
}

fn dtype_err(t: &TensorRef<'_>, expected: &'static str) -> ConvertError {
    ConvertError::Dtype {
        path: t.file.to_path_buf(),
        tensor: t.name.to_string(),
        found: format!("{:?}", t.dtype),
        expected,
    }
}

fn check_float(t: &TensorRef<'_>, expected: Vec<usize>, why: impl FnOnce() -> String) -> Result<()> {
    if !is_float(t.dtype) {
        return Err(dtype_err(t, "F32, F16 or BF16"));
    }
    if t.shape != expected {
        return Err(shape_err(t, expected, why()));
    }
    Ok(())
}

pub(crate) fn build(config: &ModelConfig, src: &SafetensorsSource, opts: &ConvertOptions) -> Result<Plan> {
    let shape = ModelShape::from_config(config);
    let cfg = |what: &str| format!("config.json {what}");
    let mut tensors = Vec::new();
    let mut f16_fallbacks = Vec::new();

    let emb_ty = opts.embedding_type.ggml_type();
    let embed = src.get(layout::HF_EMBED)?;
    check_float(&embed, vec![shape.vocab, shape.hidden], || {
        cfg(&format!("vocab_size={} × hidden_size={}", shape.vocab, shape.hidden))
    })?;
    if emb_ty == GgmlType::Q8_0 && shape.hidden % 32 != 0 {
        return Err(ConvertError::Config {
            path: config.path.clone(),
            detail: format!("hidden_size {} is not a multiple of 32; use the f16 embedding type", shape.hidden),
        });
    }
    check_lm_head(config, src, &embed)?;
    tensors.push(Planned {
        gguf: layout::TOKEN_EMBD.into(),
        ty: emb_ty,
        ne: vec![shape.hidden as u64, shape.vocab as u64],
        payload: Payload::Embedding { hf: layout::HF_EMBED.into() },
    });

    let (attn_sub, ffn_sub) = config.family.sub_norm_names();
    let layer_tensors = layout::layer_tensors(&shape, attn_sub, ffn_sub);
    for layer in 0..shape.n_layers {
        for lt in &layer_tensors {
            let gguf = format!("blk.{layer}.{}.weight", lt.gguf);
            let hf = format!("model.layers.{layer}.{}.weight", lt.hf);
            let t = src.get(&hf)?;
            match lt.role {
                Role::Norm(n) => {
                    check_float(&t, vec![n], || cfg("hidden_size / intermediate_size"))?;
                    tensors.push(Planned {
                        gguf,
                        ty: GgmlType::F32,
                        ne: vec![n as u64],
                        payload: Payload::Norm { hf },
                    });
                }
                Role::Linear { out, inp } => {
                    let why = || {
                        format!(
                            "{} from config.json hidden_size={}, intermediate_size={}, heads={}/{}",
                            lt.gguf, shape.hidden, shape.ff, shape.n_head, shape.n_kv_head
                        )
                    };
                    let payload = linear_payload(config, src, &t, &hf, out, inp, why)?;
                    let (ty, fallback) = layout::linear_type(opts.weight_type, inp);
                    if fallback {
                        tracing::warn!(
                            tensor = %gguf,
                            inputs = inp,
                            "input dimension is not a multiple of 256: writing F16 instead of {}",
                            opts.weight_type
                        );
                        f16_fallbacks.push(gguf.clone());
                    }
                    let scale_name = format!("blk.{layer}.{}.scale", lt.gguf);
                    tensors.push(Planned { gguf, ty, ne: vec![inp as u64, out as u64], payload });
                    if ty.is_ternary() {
                        tensors.push(Planned {
                            gguf: scale_name,
                            ty: GgmlType::F32,
                            ne: vec![1],
                            payload: Payload::Scale,
                        });
                    }
                }
            }
        }
    }

    let norm = src.get(layout::HF_NORM)?;
    check_float(&norm, vec![shape.hidden], || cfg("hidden_size"))?;
    tensors.push(Planned {
        gguf: layout::OUTPUT_NORM.into(),
        ty: GgmlType::F32,
        ne: vec![shape.hidden as u64],
        payload: Payload::Norm { hf: layout::HF_NORM.into() },
    });

    report_unused(src, &tensors);
    Ok(Plan { tensors, f16_fallbacks })
}

fn linear_payload(
    config: &ModelConfig,
    src: &SafetensorsSource,
    t: &TensorRef<'_>,
    hf: &str,
    out: usize,
    inp: usize,
    why: impl Fn() -> String,
) -> Result<Payload> {
    if is_float(t.dtype) {
        if t.shape != [out, inp] {
            return Err(shape_err(t, vec![out, inp], why()));
        }
        return Ok(Payload::Latent { hf: hf.into() });
    }
    if t.dtype != Dtype::U8 {
        return Err(dtype_err(t, "F32/F16/BF16 (latent weights) or U8 (packed ternary)"));
    }
    if out % 4 != 0 || t.shape != [out / 4, inp] {
        return Err(shape_err(
            t,
            vec![out.div_ceil(4), inp],
            format!("packed 4 weights per byte along the output dimension; {}", why()),
        ));
    }
    let Some(quant) = &config.quant else {
        return Err(ConvertError::Config {
            path: config.path.clone(),
            detail: format!(
                "'{hf}' is packed uint8 but there is no bitnet quantization_config to say how its weight_scale applies"
            ),
        });
    };
    let scale_hf = hf.strip_suffix(".weight").unwrap_or(hf).to_string() + ".weight_scale";
    let scale = src.get(&scale_hf)?;
    if scale.n_elements() != 1 || !is_float(scale.dtype) {
        return Err(shape_err(&scale, vec![1], "a single float weight_scale per projection".into()));
    }
    Ok(Payload::Packed { hf: hf.into(), scale_hf, class: quant.linear_class })
}

/// llama.cpp's bitnet graph always uses the token embedding as the output head.
fn check_lm_head(config: &ModelConfig, src: &SafetensorsSource, embed: &TensorRef<'_>) -> Result<()> {
    if !src.contains(layout::HF_LM_HEAD) {
        return Ok(());
    }
    if config.tie_embeddings == Some(true) {
        tracing::debug!("lm_head.weight present but tie_word_embeddings = true: ignored");
        return Ok(());
    }
    let head = src.get(layout::HF_LM_HEAD)?;
    if head.dtype == embed.dtype && head.shape == embed.shape && head.data == embed.data {
        return Ok(());
    }
    Err(ConvertError::BadTensor {
        path: head.file.to_path_buf(),
        tensor: layout::HF_LM_HEAD.into(),
        detail: "differs from model.embed_tokens.weight (untied output head); llama.cpp's bitnet graph \
                 always uses the token embedding as the output head, so this model cannot be converted"
            .into(),
    })
}

fn report_unused(src: &SafetensorsSource, plan: &[Planned]) {
    let mut used: HashSet<&str> = HashSet::from([layout::HF_LM_HEAD]);
    for t in plan {
        match &t.payload {
            Payload::Norm { hf } | Payload::Embedding { hf } | Payload::Latent { hf } => {
                used.insert(hf);
            }
            Payload::Packed { hf, scale_hf, .. } => {
                used.insert(hf);
                used.insert(scale_hf);
            }
            Payload::Scale => {}
        }
    }
    let mut unused: Vec<&str> =
        src.names().filter(|n| !used.contains(n) && !n.ends_with("rotary_emb.inv_freq")).collect();
    if !unused.is_empty() {
        unused.sort_unstable();
        tracing::warn!(
            count = unused.len(),
            first = ?&unused[..unused.len().min(5)],
            "checkpoint tensors not used by the bitnet graph"
        );
    }
}
