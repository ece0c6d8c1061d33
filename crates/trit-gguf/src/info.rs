//! One-screen summary of a GGUF model file, for `trit info`.

use std::collections::BTreeMap;
use std::fmt;

use crate::ggml_type::GgmlType;
use crate::reader::GgufFile;
use crate::value::Value;
use crate::{KEY_ARCHITECTURE, KEY_FILE_TYPE, KEY_NAME};

/// Tensor count and bytes of one ggml type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeTally {
    pub tensors: usize,
    pub bytes: u64,
    pub elements: u64,
}

/// What `trit info` prints about a GGUF file.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    pub path: String,
    pub version: u32,
    pub architecture: Option<String>,
    pub name: Option<String>,
    /// `general.file_type` and its llama.cpp name where known.
    pub file_type: Option<(u64, &'static str)>,
    /// `<arch>.*` keys (the hyper-parameters), in file order, as display strings.
    pub hyper_parameters: Vec<(String, String)>,
    pub tokenizer_model: Option<String>,
    pub tokenizer_pre: Option<String>,
    pub vocab_size: Option<usize>,
    pub by_type: BTreeMap<GgmlType, TypeTally>,
    pub n_tensors: usize,
    pub n_elements: u64,
    pub tensor_bytes: u64,
    pub file_size: u64,
}

/// llama.cpp's name for a `general.file_type` value (`enum llama_ftype`).
pub fn file_type_name(ftype: u64) -> &'static str {
    match ftype {
        0 => "all F32",
        1 => "mostly F16",
        2 => "mostly Q4_0",
        3 => "mostly Q4_1",
        7 => "mostly Q8_0",
        8 => "mostly Q5_0",
        9 => "mostly Q5_1",
        10 => "mostly Q2_K",
        15 => "mostly Q4_K_M",
        17 => "mostly Q5_K_M",
        18 => "mostly Q6_K",
        32 => "mostly BF16",
        36 => "mostly TQ1_0",
        37 => "mostly TQ2_0",
        _ => "other",
    }
}

impl ModelSummary {
    pub fn from_file(file: &GgufFile) -> Self {
        let architecture = file.get(KEY_ARCHITECTURE).and_then(|v| v.as_str()).map(String::from);
        let prefix = architecture.as_ref().map(|a| format!("{a}."));
        let hyper_parameters = match &prefix {
            Some(p) => file
                .metadata()
                .iter()
                .filter(|(k, _)| k.starts_with(p.as_str()))
                .map(|(k, v)| (k[p.len()..].to_string(), v.to_string()))
                .collect(),
            None => Vec::new(),
        };
        let mut by_type: BTreeMap<GgmlType, TypeTally> = BTreeMap::new();
        for t in file.tensors() {
            let e = by_type.entry(t.ty).or_default();
            e.tensors += 1;
            e.bytes += t.n_bytes;
            e.elements += t.n_elements();
        }
        let str_key = |k: &str| file.get(k).and_then(Value::as_str).map(String::from);
        ModelSummary {
            path: file.path().display().to_string(),
            version: file.version(),
            name: str_key(KEY_NAME),
            file_type: file.get(KEY_FILE_TYPE).and_then(Value::as_u64).map(|f| (f, file_type_name(f))),
            hyper_parameters,
            tokenizer_model: str_key("tokenizer.ggml.model"),
            tokenizer_pre: str_key("tokenizer.ggml.pre"),
            vocab_size: file.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(|(_, items)| items.len()),
            n_tensors: file.tensors().len(),
            n_elements: by_type.values().map(|t| t.elements).sum(),
            tensor_bytes: by_type.values().map(|t| t.bytes).sum(),
            by_type,
            file_size: file.file_size(),
            architecture,
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        writeln!(f, "file:          {} (GGUF v{})", self.path, self.version)?;
        writeln!(f, "architecture:  {}", or_dash(&self.architecture))?;
        writeln!(f, "name:          {}", or_dash(&self.name))?;
        if let Some((ft, name)) = self.file_type {
            writeln!(f, "file type:     {ft} ({name})")?;
        }
        if !self.hyper_parameters.is_empty() {
            writeln!(f, "hyper-parameters:")?;
            for (k, v) in &self.hyper_parameters {
                writeln!(f, "  {k:<34} {v}")?;
            }
        }
        writeln!(
            f,
            "tokenizer:     {} (pre: {}, {} tokens)",
            or_dash(&self.tokenizer_model),
            or_dash(&self.tokenizer_pre),
            self.vocab_size.map_or("?".into(), |n| n.to_string())
        )?;
        writeln!(
            f,
            "tensors:       {} ({:.3} B parameters, {})",
            self.n_tensors,
            self.n_elements as f64 / 1e9,
            human_bytes(self.tensor_bytes)
        )?;
        for (ty, t) in &self.by_type {
            writeln!(f, "  {:<8} {:>5} tensors {:>12}", ty.name(), t.tensors, human_bytes(t.bytes))?;
        }
        write!(f, "file size:     {}", human_bytes(self.file_size))
    }
}
