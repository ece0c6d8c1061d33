//! `trit lora merge`: fold a LoRA adapter into its base model. Adapted projections become F16
//! with the per-tensor ternary scale folded in (their `.scale` tensors are dropped); every
//! other tensor and all metadata are copied unchanged.
//!
//! llama.cpp's BitNet graph applies the scale *before* the LoRA sum for q/k/v/o/down
//! (`y = s·W·x + c·B·A·x`) and *after* it for ffn_up/ffn_gate (`y = s·(W·x + c·B·A·x)`),
//! with c = user_scale·alpha/rank; the merged weight reproduces exactly that.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use trit_gguf::quant::{dequantize_tq1_0, dequantize_tq2_0, f16_bytes_to_f32, f32_to_f16_bytes};
use trit_gguf::{GgmlType, GgufFile, GgufWriter};

use crate::adapter::{LoraPair, LoraWeights};

#[derive(Debug, Clone)]
pub struct MergeReport {
    pub output: PathBuf,
    pub merged: Vec<String>,
}

fn dequantize(ty: GgmlType, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    match ty {
        GgmlType::TQ2_0 => dequantize_tq2_0(bytes, &mut out)?,
        GgmlType::TQ1_0 => dequantize_tq1_0(bytes, &mut out)?,
        GgmlType::F16 => f16_bytes_to_f32(bytes, &mut out),
        GgmlType::F32 => out = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        other => bail!("{name}: cannot merge into a {other:?} weight (TQ2_0, TQ1_0, F16, F32)"),
    }
    Ok(out)
}

/// Whether llama.cpp applies this projection's `.scale` after the LoRA sum (build_ffn).
fn scale_after_lora(base: &str) -> bool {
    base.contains(".ffn_up.") || base.contains(".ffn_gate.")
}

/// W' (ggml order, row o = output o) for one adapted projection.
fn merged_weight(w: &[f32], s: f32, pair: &LoraPair, c: f32) -> Vec<f32> {
    let (n_in, r) = (pair.n_in as usize, pair.rank as usize);
    let after = scale_after_lora(&pair.base);
    let mut out = vec![0f32; w.len()];
    for (o, row) in out.chunks_mut(n_in).enumerate() {
        let b_row = &pair.b[o * r..(o + 1) * r];
        for (i, x) in row.iter_mut().enumerate() {
            let mut d = 0f64;
            for (j, &bj) in b_row.iter().enumerate() {
                d += bj as f64 * pair.a[j * n_in + i] as f64;
            }
            let base = w[o * n_in + i] as f64;
            let (s, c) = (s as f64, c as f64);
            *x = if after { s * (base + c * d) } else { s * base + c * d } as f32;
        }
    }
    out
}

/// Write `base` with `adapter` (at `user_scale`) folded in to `output`.
pub fn merge(base_path: &Path, adapter_path: &Path, user_scale: f32, output: &Path) -> Result<MergeReport> {
    let base = GgufFile::open(base_path).with_context(|| format!("reading {}", base_path.display()))?;
    let lora = LoraWeights::load(adapter_path)?;
    let arch = base.get_str(trit_gguf::KEY_ARCHITECTURE)?;
    if lora.arch != arch {
        bail!("adapter is for '{}', the base model is '{arch}'", lora.arch);
    }
    let pairs: HashMap<&str, &LoraPair> = lora.pairs.iter().map(|p| (p.base.as_str(), p)).collect();
    for p in &lora.pairs {
        let t = base.tensor_info(&p.base).with_context(|| format!("base model has no {}", p.base))?;
        if t.ne != [p.n_in, p.n_out] {
            bail!("{}: base shape {:?}, adapter expects [{}, {}]", p.base, t.ne, p.n_in, p.n_out);
        }
    }
    let dropped_scales: Vec<String> = lora
        .pairs
        .iter()
        .map(|p| p.base.replace(".weight", ".scale"))
        .filter(|n| base.tensor_info(n).is_some())
        .collect();

    let mut w = GgufWriter::new();
    for (k, v) in base.metadata() {
        if k != trit_gguf::KEY_ALIGNMENT {
            w.add_kv(k.as_str(), v.clone())?;
        }
    }
    w.add_kv("trit.lora.merged", adapter_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default().as_ref())?;
    let kept: Vec<_> = base.tensors().iter().filter(|t| !dropped_scales.contains(&t.name)).collect();
    for t in &kept {
        let ty = if pairs.contains_key(t.name.as_str()) { GgmlType::F16 } else { t.ty };
        w.add_tensor(t.name.as_str(), ty, &t.ne)?;
    }
    let mut out = w.create(output).with_context(|| format!("creating {}", output.display()))?;
    let mut merged = Vec::new();
    for t in &kept {
        let bytes = base.tensor_data(&t.name)?;
        match pairs.get(t.name.as_str()) {
            None => out.write_tensor(&t.name, bytes)?,
            Some(pair) => {
                let wf = dequantize(t.ty, bytes, &t.name)?;
                let scale_name = t.name.replace(".weight", ".scale");
                let s = match base.tensor_info(&scale_name) {
                    Some(_) => dequantize(GgmlType::F32, base.tensor_data(&scale_name)?, &scale_name)?[0],
                    None => 1.0,
                };
                let c = if lora.alpha != 0.0 { user_scale * lora.alpha / pair.rank as f32 } else { user_scale };
                let mut buf = Vec::new();
                f32_to_f16_bytes(&merged_weight(&wf, s, pair, c), &mut buf);
                out.write_tensor(&t.name, &buf)?;
                merged.push(t.name.clone());
            }
        }
    }
    Ok(MergeReport { output: out.finish()?, merged })
}
