//! Errors of the GGUF reader, writer and block quantisers.

use std::io;
use std::path::PathBuf;

/// What went wrong reading or writing a GGUF file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {action}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{path}: not a GGUF file (magic bytes {magic:02x?}, expected \"GGUF\")", path = .path.display())]
    BadMagic { path: PathBuf, magic: [u8; 4] },

    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)", path = .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },

    #[error("{path}: truncated: {what} needs bytes {start}..{end} but file is {len} bytes", path = .path.display())]
    Truncated { path: PathBuf, what: String, start: u64, end: u64, len: u64 },

    #[error("{path}: corrupt: {detail}", path = .path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("{path}: no tensor named '{name}'", path = .path.display())]
    MissingTensor { path: PathBuf, name: String },

    #[error("{path}: metadata key '{key}' is missing", path = .path.display())]
    MissingKey { path: PathBuf, key: String },

    #[error("{path}: metadata key '{key}' has type {found}, expected {expected}", path = .path.display())]
    WrongKeyType { path: PathBuf, key: String, found: String, expected: &'static str },

    #[error("{path}: {detail}", path = .path.display())]
    Writer { path: PathBuf, detail: String },
}

/// Errors of the block (de)quantisers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("{ty}: {len} values is not a whole number of {block}-value blocks")]
    Length { ty: &'static str, len: usize, block: usize },
    #[error("{ty}: {len} bytes is not a whole number of {block_bytes}-byte blocks")]
    Bytes { ty: &'static str, len: usize, block_bytes: usize },
    #[error("{ty}: value {value} at index {index} is not a ternary code (-1, 0, 1)")]
    NotTernary { ty: &'static str, index: usize, value: i8 },
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
