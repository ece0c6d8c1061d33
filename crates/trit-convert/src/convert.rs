//! `convert`: Hugging Face BitNet directory → GGUF for llama.cpp's bitnet architecture.

use std::path::Path;

use trit_gguf::GgufWriter;

use crate::emit::Emitter;
use crate::error::Result;
use crate::hf_config::{LinearClass, ModelConfig};
use crate::options::{ConvertOptions, ConvertReport};
use crate::plan::{self, Payload};
use crate::safetensors_source::SafetensorsSource;
use crate::shape::ModelShape;
use crate::ternary::{absmean_scale, read_f32, scalar, ternarize, unpack_row};
use crate::{progress, tokenizer};

/// Converts the checkpoint in `hf_dir` to a GGUF at `out`.
///
/// Everything that can be checked up front (config, tokenizer, every tensor's presence,
/// dtype and shape) is checked before the output is created. Tensors are then streamed one at
/// a time from the memory-mapped safetensors into a temporary file that is renamed onto `out`
/// only when complete; on any error no output file is left behind.
pub fn convert(hf_dir: &Path, out: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    let config = ModelConfig::load(hf_dir)?;
    tracing::info!(arch = %config.arch, family = ?config.family, layers = config.n_layers, "model config read");
    let src = SafetensorsSource::open(hf_dir)?;
    let vocab = tokenizer::load(hf_dir, &config)?;
    let plan = plan::build(&config, &src, opts)?;

    let shape = ModelShape::from_config(&config);
    let name = opts.name.clone().unwrap_or_else(|| {
        hf_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "bitnet".into())
    });
    let mut w = GgufWriter::new();
    shape.write_metadata(&mut w, &name, opts.weight_type.file_type())?;
    vocab.write_metadata(&mut w)?;
    plan.declare(&mut w)?;
    let total = w.planned_size();

    let stream = w.create(out)?;
    let mut em = Emitter::new(stream, progress::bar(opts.progress, total));
    let mut last_scale = None;
    let mut row = Vec::new();
    for t in &plan.tensors {
        match &t.payload {
            Payload::Norm { hf } => {
                let src_t = src.get(hf)?;
                em.float_rows(&t.gguf, t.ty, 1, |_, r| {
                    read_f32(&src_t, 0, src_t.n_elements(), r);
                    Ok(())
                })?;
            }
            Payload::Embedding { hf } => {
                let src_t = src.get(hf)?;
                let cols = shape.hidden;
                em.float_rows(&t.gguf, t.ty, shape.vocab, |i, r| {
                    read_f32(&src_t, i * cols, cols, r);
                    Ok(())
                })?;
            }
            Payload::Latent { hf } => {
                let src_t = src.get(hf)?;
                let (rows, cols) = (src_t.shape[0], src_t.shape[1]);
                let scale = absmean_scale(&src_t);
                tracing::debug!(tensor = %t.gguf, scale, "ternarised latent weights");
                em.ternary(&t.gguf, t.ty, rows, cols, scale, |r, codes| {
                    read_f32(&src_t, r * cols, cols, &mut row);
                    ternarize(&row, scale, codes);
                    Ok(())
                })?;
                last_scale = Some(scale);
            }
            Payload::Packed { hf, scale_hf, class } => {
                let src_t = src.get(hf)?;
                let ws = scalar(&src.get(scale_hf)?)?;
                let scale = match class {
                    LinearClass::BitLinear => 1.0 / ws,
                    LinearClass::AutoBitLinear => ws,
                };
                let (rows, cols) = (src_t.shape[0] * 4, src_t.shape[1]);
                tracing::debug!(tensor = %t.gguf, weight_scale = ws, scale, "unpacked ternary weights");
                em.ternary(&t.gguf, t.ty, rows, cols, scale, |r, codes| unpack_row(&src_t, r, cols, codes))?;
                last_scale = Some(scale);
            }
            Payload::Scale => {
                let s = last_scale.take().expect("a scale tensor follows its projection in the plan");
                em.f32_tensor(&t.gguf, &[s])?;
            }
        }
    }
    let output = em.finish()?;
    let file_size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(total);
    Ok(ConvertReport {
        output,
        source_architecture: config.arch.clone(),
        weight_type: opts.weight_type,
        embedding_type: opts.embedding_type,
        n_layers: shape.n_layers,
        n_tensors: plan.tensors.len(),
        n_tokens: vocab.tokens.len(),
        tokenizer: vocab.describe(),
        f16_fallbacks: plan.f16_fallbacks,
        file_size,
    })
}
