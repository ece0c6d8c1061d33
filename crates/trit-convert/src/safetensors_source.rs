//! Memory-mapped access to the tensors of a single or sharded safetensors checkpoint.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensors};
use safetensors::Dtype;
use serde_json::Value;

use crate::error::{ConvertError, Result};
use crate::json_file;

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

/// One tensor borrowed from a shard's memory map.
pub(crate) struct TensorRef<'a> {
    pub(crate) file: &'a Path,
    pub(crate) name: &'a str,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: &'a [u8],
}

impl TensorRef<'_> {
    pub(crate) fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// All tensors of a checkpoint, by name.
pub(crate) struct SafetensorsSource {
    shards: Vec<Shard>,
    by_name: HashMap<String, usize>,
    /// What to name in "missing tensor" errors: the single file or the index.
    listing: PathBuf,
}

impl SafetensorsSource {
    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX);
        if let Some(index) = json_file::read_optional(&index_path)? {
            return Self::open_sharded(dir, &index_path, &index);
        }
        let single = dir.join(SINGLE);
        if !single.exists() {
            return Err(ConvertError::MissingFile {
                path: single,
                needed_for: "the weights (or model.safetensors.index.json for a sharded checkpoint)",
            });
        }
        let shard = open_shard(&single)?;
        let by_name = shard.metadata.tensors().keys().map(|k| (k.clone(), 0)).collect();
        Ok(SafetensorsSource { shards: vec![shard], by_name, listing: single })
    }

    fn open_sharded(dir: &Path, index_path: &Path, index: &Value) -> Result<Self> {
        let map = index.get("weight_map").and_then(Value::as_object).ok_or_else(|| ConvertError::Config {
            path: index_path.to_path_buf(),
            detail: "missing 'weight_map' object".into(),
        })?;
        let mut shard_ids: HashMap<String, usize> = HashMap::new();
        let mut shards = Vec::new();
        let mut by_name = HashMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| ConvertError::Config {
                path: index_path.to_path_buf(),
                detail: format!("weight_map entry for '{tensor}' is not a file name"),
            })?;
            let id = match shard_ids.get(file) {
                Some(&id) => id,
                None => {
                    shards.push(open_shard(&dir.join(file))?);
                    shard_ids.insert(file.to_string(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            by_name.insert(tensor.clone(), id);
        }
        // A tensor listed in the index must be in its shard.
        for (tensor, &id) in &by_name {
            if shards[id].metadata.info(tensor).is_none() {
                return Err(ConvertError::MissingTensor { path: shards[id].path.clone(), tensor: tensor.clone() });
            }
        }
        tracing::debug!(shards = shards.len(), tensors = by_name.len(), "opened sharded checkpoint");
        Ok(SafetensorsSource { shards, by_name, listing: index_path.to_path_buf() })
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub(crate) fn get(&self, name: &str) -> Result<TensorRef<'_>> {
        let (name, &id) = self
            .by_name
            .get_key_value(name)
            .ok_or_else(|| ConvertError::MissingTensor { path: self.listing.clone(), tensor: name.to_string() })?;
        let shard = &self.shards[id];
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| ConvertError::MissingTensor { path: shard.path.clone(), tensor: name.to_string() })?;
        let (start, end) = info.data_offsets;
        Ok(TensorRef {
            file: &shard.path,
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            data: &shard.mmap[shard.data_start + start..shard.data_start + end],
        })
    }
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => {
            ConvertError::MissingFile { path: path.to_path_buf(), needed_for: "weights shard" }
        }
        _ => ConvertError::Io { path: path.to_path_buf(), action: "cannot open", source },
    })?;
    // SAFETY: read-only map of an input checkpoint that trit never writes; a concurrent
    // truncation by another process is outside what we can guard against.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        action: "cannot memory-map",
        source,
    })?;
    // Validates the header and that the tensor offsets exactly cover the rest of the file.
    let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
        let detail = match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer => format!(
                "the header's tensor offsets do not match the file size ({} bytes); the file is probably truncated",
                mmap.len()
            ),
            other => other.to_string(),
        };
        ConvertError::Safetensors { path: path.to_path_buf(), detail }
    })?;
    Ok(Shard { path: path.to_path_buf(), data_start: 8 + header_len, mmap, metadata })
}
