//! Conversion options and reports.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use trit_gguf::GgmlType;

/// How the ternary projection weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightType {
    /// 2.0625 bits per weight, every block scale 1.0, per-tensor scale in `<name>.scale`.
    #[default]
    Tq2_0,
    /// 1.6875 bits per weight, every block scale 1.0, per-tensor scale in `<name>.scale`.
    Tq1_0,
    /// Dequantised `code × scale` as F16, no scale tensors.
    F16,
}

impl WeightType {
    pub fn ggml_type(self) -> GgmlType {
        match self {
            WeightType::Tq2_0 => GgmlType::TQ2_0,
            WeightType::Tq1_0 => GgmlType::TQ1_0,
            WeightType::F16 => GgmlType::F16,
        }
    }

    /// `general.file_type` (`enum llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            WeightType::Tq2_0 => 37,
            WeightType::Tq1_0 => 36,
            WeightType::F16 => 1,
        }
    }
}

impl FromStr for WeightType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tq2_0" => Ok(WeightType::Tq2_0),
            "tq1_0" => Ok(WeightType::Tq1_0),
            "f16" => Ok(WeightType::F16),
            _ => Err(format!("unknown weight type '{s}' (expected tq2_0, tq1_0 or f16)")),
        }
    }
}

impl fmt::Display for WeightType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightType::Tq2_0 => "tq2_0",
            WeightType::Tq1_0 => "tq1_0",
            WeightType::F16 => "f16",
        })
    }
}

/// How the token embedding (also the tied output head) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddingType {
    #[default]
    F16,
    Q8_0,
}

impl EmbeddingType {
    pub fn ggml_type(self) -> GgmlType {
        match self {
            EmbeddingType::F16 => GgmlType::F16,
            EmbeddingType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

impl FromStr for EmbeddingType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(EmbeddingType::F16),
            "q8_0" => Ok(EmbeddingType::Q8_0),
            _ => Err(format!("unknown embedding type '{s}' (expected f16 or q8_0)")),
        }
    }
}

impl fmt::Display for EmbeddingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmbeddingType::F16 => "f16",
            EmbeddingType::Q8_0 => "q8_0",
        })
    }
}

/// Options of [`crate::convert`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub weight_type: WeightType,
    pub embedding_type: EmbeddingType,
    /// `general.name`; defaults to the input directory's name.
    pub name: Option<String>,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
}

/// What a conversion (or synthesis) wrote.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub output: PathBuf,
    /// The Hugging Face architecture converted (or the synth preset).
    pub source_architecture: String,
    pub weight_type: WeightType,
    pub embedding_type: EmbeddingType,
    pub n_layers: usize,
    pub n_tensors: usize,
    pub n_tokens: usize,
    /// `tokenizer.ggml.model` / `tokenizer.ggml.pre`.
    pub tokenizer: String,
    /// Ternary tensors written as F16 because their input dimension is not a multiple of 256.
    pub f16_fallbacks: Vec<String>,
    pub file_size: u64,
}

/// Random-weight model shapes for [`crate::synth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthPreset {
    /// microsoft/bitnet-b1.58-2B-4T: 30 layers, hidden 2560, FFN 6912, 20/5 heads, vocab 128256.
    B2b4t,
    /// A tiny model of the same structure (2 layers, hidden 256, FFN 512, 4/2 heads, vocab
    /// 1024) for tests.
    Tiny,
    /// Tiny's shape with 8 layers: memory tests that need depth (gradient checkpointing).
    TinyDeep,
}

impl FromStr for SynthPreset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "2b4t" | "2b-4t" => Ok(SynthPreset::B2b4t),
            "tiny" => Ok(SynthPreset::Tiny),
            "tiny-deep" => Ok(SynthPreset::TinyDeep),
            _ => Err(format!("unknown synth preset '{s}' (expected 2b4t, tiny or tiny-deep)")),
        }
    }
}
