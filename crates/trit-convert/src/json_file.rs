//! Reading the JSON files of a Hugging Face model directory.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::error::{ConvertError, Result};

/// Reads and parses a JSON file that must exist.
pub(crate) fn read_required(path: &Path, needed_for: &'static str) -> Result<Value> {
    read_optional(path)?.ok_or_else(|| ConvertError::MissingFile { path: path.to_path_buf(), needed_for })
}

/// Reads and parses a JSON file, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Value>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConvertError::Io { path: path.to_path_buf(), action: "cannot read", source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| ConvertError::Json { path: path.to_path_buf(), source })
}
