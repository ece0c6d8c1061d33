//! `synth`: a random-weight bitnet model of a given shape, for load and speed tests.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trit_gguf::{GgmlType, GgufWriter};

use crate::emit::Emitter;
use crate::error::Result;
use crate::hf_config::Activation;
use crate::layout::{self, Role};
use crate::options::{ConvertReport, EmbeddingType, SynthPreset, WeightType};
use crate::progress;
use crate::shape::ModelShape;
use crate::tokenizer::synthetic_vocab;

impl SynthPreset {
    pub(crate) fn shape(self) -> ModelShape {
        match self {
            SynthPreset::B2b4t => ModelShape {
                n_layers: 30,
                hidden: 2560,
                ff: 6912,
                n_head: 20,
                n_kv_head: 5,
                head_dim: 128,
                vocab: 128_256,
                context: 4096,
                rms_eps: 1e-5,
                rope_theta: 500_000.0,
                activation: Activation::Relu2,
            },
            SynthPreset::Tiny => ModelShape {
                n_layers: 2,
                hidden: 256,
                ff: 512,
                n_head: 4,
                n_kv_head: 2,
                head_dim: 64,
                vocab: 1024,
                context: 512,
                rms_eps: 1e-5,
                rope_theta: 500_000.0,
                activation: Activation::Relu2,
            },
            SynthPreset::TinyDeep => ModelShape { n_layers: 8, ..SynthPreset::Tiny.shape() },
        }
    }

    fn name(self) -> &'static str {
        match self {
            SynthPreset::B2b4t => "synthetic bitnet-b1.58-2B-4T",
            SynthPreset::Tiny => "synthetic tiny bitnet",
            SynthPreset::TinyDeep => "synthetic tiny deep bitnet",
        }
    }
}

/// Fills `codes` with uniform random ternary codes, 40 per 64-bit draw.
fn random_codes(rng: &mut StdRng, codes: &mut [i8]) {
    for chunk in codes.chunks_mut(40) {
        let mut bits: u64 = rng.gen();
        for c in chunk {
            *c = (bits % 3) as i8 - 1;
            bits /= 3;
        }
    }
}

/// Writes a random-weight model of `preset`'s shape to `out`: random ternary projections with
/// per-tensor scales chosen so activations stay O(1), small random embeddings, unit norms, and
/// a byte-level vocabulary padded to the preset's vocab size (loadable by llama.cpp).
///
/// The progress bar is drawn on stderr when it is a terminal.
pub fn synth(preset: SynthPreset, out: &Path, weight_type: WeightType, seed: u64) -> Result<ConvertReport> {
    let shape = preset.shape();
    let mut rng = StdRng::seed_from_u64(seed);
    let vocab = synthetic_vocab(shape.vocab);
    let emb_ty = EmbeddingType::F16;

    let mut w = GgufWriter::new();
    shape.write_metadata(&mut w, preset.name(), weight_type.file_type())?;
    vocab.write_metadata(&mut w)?;
    let layer = layout::layer_tensors(&shape, "", "");
    let mut n_tensors = 0;
    let mut f16_fallbacks = Vec::new();
    w.add_tensor(layout::TOKEN_EMBD, emb_ty.ggml_type(), &[shape.hidden as u64, shape.vocab as u64])?;
    for l in 0..shape.n_layers {
        for lt in &layer {
            let name = format!("blk.{l}.{}.weight", lt.gguf);
            match lt.role {
                Role::Norm(n) => w.add_tensor(name, GgmlType::F32, &[n as u64])?,
                Role::Linear { out, inp } => {
                    let (ty, fallback) = layout::linear_type(weight_type, inp);
                    if fallback {
                        f16_fallbacks.push(name.clone());
                    }
                    w.add_tensor(name, ty, &[inp as u64, out as u64])?;
                    if ty.is_ternary() {
                        w.add_tensor(format!("blk.{l}.{}.scale", lt.gguf), GgmlType::F32, &[1])?;
                    }
                }
            }
        }
    }
    w.add_tensor(layout::OUTPUT_NORM, GgmlType::F32, &[shape.hidden as u64])?;
    n_tensors += w.n_tensors();
    let total = w.planned_size();

    let mut em = Emitter::new(w.create(out)?, progress::bar(true, total));
    em.float_rows(layout::TOKEN_EMBD, emb_ty.ggml_type(), shape.vocab, |_, row| {
        row.clear();
        row.extend((0..shape.hidden).map(|_| rng.gen_range(-0.05f32..0.05)));
        Ok(())
    })?;
    for l in 0..shape.n_layers {
        for lt in &layer {
            let name = format!("blk.{l}.{}.weight", lt.gguf);
            match lt.role {
                Role::Norm(n) => em.f32_tensor(&name, &vec![1.0; n])?,
                Role::Linear { out, inp } => {
                    let (ty, _) = layout::linear_type(weight_type, inp);
                    // Two thirds of the codes are non-zero: scale so a unit-RMS input gives a
                    // unit-RMS output.
                    let scale = (1.5 / inp as f32).sqrt();
                    em.ternary(&name, ty, out, inp, scale, |_, codes| {
                        random_codes(&mut rng, codes);
                        Ok(())
                    })?;
                    if ty.is_ternary() {
                        em.f32_tensor(&format!("blk.{l}.{}.scale", lt.gguf), &[scale])?;
                    }
                }
            }
        }
    }
    em.f32_tensor(layout::OUTPUT_NORM, &vec![1.0; shape.hidden])?;
    let output = em.finish()?;
    let file_size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(total);
    Ok(ConvertReport {
        output,
        source_architecture: format!("synth:{preset:?}"),
        weight_type,
        embedding_type: emb_ty,
        n_layers: shape.n_layers,
        n_tensors,
        n_tokens: vocab.tokens.len(),
        tokenizer: vocab.describe(),
        f16_fallbacks,
        file_size,
    })
}
