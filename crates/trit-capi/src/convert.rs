//! Hugging Face BitNet checkpoint → GGUF through C (trit-convert, as `trit convert` runs it).

use std::ffi::{c_char, c_int};
use std::path::Path;

use anyhow::Context as _;
use trit_convert::{ConvertOptions, EmbeddingType, WeightType};

use crate::ffi::{self, invalid};

/// Ternary projections as TQ2_0 (2.06 bits per weight; the default of trit convert).
pub const TRIT_WEIGHT_TQ2_0: i32 = 0;
/// Ternary projections as TQ1_0 (1.69 bits per weight).
pub const TRIT_WEIGHT_TQ1_0: i32 = 1;
/// Projections dequantised to F16 (code times scale).
pub const TRIT_WEIGHT_F16: i32 = 2;

/// Token embedding (also the tied output head) as F16 (the default).
pub const TRIT_EMBED_F16: i32 = 0;
/// Token embedding as Q8_0.
pub const TRIT_EMBED_Q8_0: i32 = 1;

fn weight_type(v: i32) -> Option<WeightType> {
    match v {
        TRIT_WEIGHT_TQ2_0 => Some(WeightType::Tq2_0),
        TRIT_WEIGHT_TQ1_0 => Some(WeightType::Tq1_0),
        TRIT_WEIGHT_F16 => Some(WeightType::F16),
        _ => None,
    }
}

fn embedding_type(v: i32) -> Option<EmbeddingType> {
    match v {
        TRIT_EMBED_F16 => Some(EmbeddingType::F16),
        TRIT_EMBED_Q8_0 => Some(EmbeddingType::Q8_0),
        _ => None,
    }
}

/// Convert the Hugging Face checkpoint in directory hf_dir (config.json, safetensors,
/// tokenizer files) into the GGUF output_path, with weight_type one of TRIT_WEIGHT_* and
/// embed_type one of TRIT_EMBED_*. The output appears only when complete (a failed conversion
/// leaves no file). Returns TRIT_OK or a negative TRIT_ERR_* code (message in trit_last_error()).
///
/// # Safety
/// hf_dir and output_path are NULL (an error) or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn trit_convert(
    hf_dir: *const c_char,
    output_path: *const c_char,
    weight_type: i32,
    embed_type: i32,
) -> c_int {
    ffi::call("trit_convert", || {
        // SAFETY: NULL or NUL-terminated, by the contract.
        let (dir, out) = unsafe { (ffi::str_arg(hf_dir, "hf_dir")?, ffi::str_arg(output_path, "output_path")?) };
        if out.is_empty() {
            return Err(invalid("output_path must not be empty"));
        }
        let wt = self::weight_type(weight_type).ok_or_else(|| {
            invalid(format!("weight_type {weight_type} is not TRIT_WEIGHT_TQ2_0, TRIT_WEIGHT_TQ1_0 or TRIT_WEIGHT_F16"))
        })?;
        let et = embedding_type(embed_type)
            .ok_or_else(|| invalid(format!("embed_type {embed_type} is not TRIT_EMBED_F16 or TRIT_EMBED_Q8_0")))?;
        let opts = ConvertOptions { weight_type: wt, embedding_type: et, name: None, progress: false };
        let report = trit_convert::convert(Path::new(dir), Path::new(out), &opts)
            .with_context(|| format!("converting {dir} to {out}"))?;
        tracing::info!(
            "trit_convert: {} ({}, {} layers) -> {} ({} bytes)",
            dir,
            report.source_architecture,
            report.n_layers,
            report.output.display(),
            report.file_size
        );
        Ok(())
    })
}
