//! Conversion errors. Each renders as one line naming the file (and tensor) at fault.

use std::path::PathBuf;

use trit_gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: missing ({needed_for})", path = .path.display())]
    MissingFile { path: PathBuf, needed_for: &'static str },

    #[error("{path}: {action}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}", path = .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {detail}", path = .path.display())]
    Config { path: PathBuf, detail: String },

    #[error("{path}: unknown architecture '{arch}' (supported: {supported})", path = .path.display())]
    UnknownArchitecture { path: PathBuf, arch: String, supported: &'static str },

    #[error("{path}: architecture '{arch}' is not supported: {reason}", path = .path.display())]
    UnsupportedArchitecture { path: PathBuf, arch: String, reason: String },

    #[error("{path}: corrupt or truncated safetensors file: {detail}", path = .path.display())]
    Safetensors { path: PathBuf, detail: String },

    #[error("{path}: missing tensor '{tensor}'", path = .path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    #[error("{path}: tensor '{tensor}' has shape {found:?}, expected {expected:?} ({why})", path = .path.display())]
    Shape { path: PathBuf, tensor: String, found: Vec<usize>, expected: Vec<usize>, why: String },

    #[error("{path}: tensor '{tensor}' has dtype {found}, expected {expected}", path = .path.display())]
    Dtype { path: PathBuf, tensor: String, found: String, expected: &'static str },

    #[error("{path}: packed tensor '{tensor}' is not ternary: 2-bit value 3 at row {row}, column {col}", path = .path.display())]
    NotTernary { path: PathBuf, tensor: String, row: usize, col: usize },

    #[error("{path}: tensor '{tensor}': {detail}", path = .path.display())]
    BadTensor { path: PathBuf, tensor: String, detail: String },

    #[error("{path}: {detail}", path = .path.display())]
    Tokenizer { path: PathBuf, detail: String },

    #[error("{path}: unrecognised pre-tokenizer {found} (supported: Llama-3 regex → llama-bpe, GPT-2 regex → gpt-2)", path = .path.display())]
    UnsupportedPreTokenizer { path: PathBuf, found: String },

    #[error(transparent)]
    Gguf(#[from] GgufError),
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;
