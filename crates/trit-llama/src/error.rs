use std::path::PathBuf;

/// Errors from the llama.cpp layer. Messages carry llama.cpp's own last error line where
/// it logged one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: llama.cpp could not load the model: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("{path}: llama.cpp could not load the LoRA adapter: {reason}")]
    LoraLoad { path: PathBuf, reason: String },
    #[error("could not create a llama.cpp context: {0}")]
    ContextInit(String),
    #[error("decode failed (code {code}): {reason}")]
    Decode { code: i32, reason: String },
    #[error("tokenisation failed: {0}")]
    Tokenize(String),
    #[error("chat template failed: {0}")]
    ChatTemplate(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
