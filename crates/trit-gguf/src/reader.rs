//! Memory-mapped GGUF reader: header, metadata, tensor infos and tensor data slices.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::cursor::Cursor;
use crate::error::{GgufError, Result};
use crate::ggml_type::GgmlType;
use crate::value::{Value, ValueType};
use crate::{DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT};

/// Most dimensions a ggml tensor can have.
const MAX_DIMS: u32 = 4;

/// One tensor's description from the GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Shape in ggml order: `ne[0]` is the contiguous (row) dimension.
    pub ne: Vec<u64>,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (without alignment padding).
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// An open GGUF file. Tensor data is borrowed straight from the memory map.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Opens and validates a GGUF file: every tensor's data must lie inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file =
            File::open(&path).map_err(|source| GgufError::Io { path: path.clone(), action: "cannot open", source })?;
        // SAFETY: the map is read-only; trit never writes a GGUF in place (the writer renames a
        // finished temp file over the target), so the mapped bytes do not change under us unless
        // another process truncates the file, which is outside what we can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| GgufError::Io {
            path: path.clone(),
            action: "cannot memory-map",
            source,
        })?;
        let parsed = parse(&mmap, &path)?;
        tracing::debug!(
            path = %path.display(),
            version = parsed.version,
            n_kv = parsed.metadata.len(),
            n_tensors = parsed.tensors.len(),
            "opened GGUF"
        );
        let key_index = parsed.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        let tensor_index = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path,
            mmap,
            version: parsed.version,
            metadata: parsed.metadata,
            key_index,
            tensors: parsed.tensors,
            tensor_index,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A required string key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, v, "string"))
    }

    /// A required integer key of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.wrong_type(key, v, "unsigned integer"))
    }

    /// A required numeric key of any numeric type.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, v, "number"))
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { path: self.path.clone(), key: key.to_string() })
    }

    fn wrong_type(&self, key: &str, v: &Value, expected: &'static str) -> GgufError {
        GgufError::WrongKeyType { path: self.path.clone(), key: key.to_string(), found: v.type_description(), expected }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (validated to be inside the file when it was opened).
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), name: name.to_string() })?;
        let start = (self.data_offset + info.offset) as usize;
        Ok(&self.mmap[start..start + info.n_bytes as usize])
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

fn parse(buf: &[u8], path: &Path) -> Result<Parsed> {
    let mut c = Cursor::new(buf, path);
    let magic: [u8; 4] = c.take(4, || "GGUF magic".to_string())?.try_into().expect("4 bytes");
    if &magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), magic });
    }
    let version = c.u32("GGUF version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version });
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // Counts larger than the file itself cannot be real; anything smaller is read and reported
    // as truncated at the first entry that runs past the end.
    if n_kv > buf.len() as u64 || n_tensors > buf.len() as u64 {
        return Err(c.corrupt(format!(
            "implausible header counts: {n_kv} metadata entries, {n_tensors} tensors in a {}-byte file",
            buf.len()
        )));
    }

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut seen = HashMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let what = format!("metadata '{key}'");
        let id = c.u32(&what)?;
        let ty = ValueType::from_id(id).ok_or_else(|| c.corrupt(format!("{what}: unknown value type {id}")))?;
        let value = c.value(ty, &what, 0)?;
        if seen.insert(key.clone(), ()).is_some() {
            return Err(c.corrupt(format!("duplicate metadata key '{key}'")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(
                c.corrupt(format!("'{KEY_ALIGNMENT}' must be a power-of-two u32, found {} {v}", v.type_description()))
            )
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashMap::new();
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor info #{i} name"))?;
        let what = format!("tensor info '{name}'");
        let n_dims = c.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.corrupt(format!("{what}: {n_dims} dimensions (1..={MAX_DIMS} allowed)")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(&what)?);
        }
        let type_id = c.u32(&what)?;
        let ty =
            GgmlType::from_id(type_id).ok_or_else(|| c.corrupt(format!("{what}: unknown ggml type id {type_id}")))?;
        let offset = c.u64(&what)?;
        let n_bytes = ty.tensor_bytes(&ne).ok_or_else(|| {
            c.corrupt(format!(
                "{what}: shape {ne:?} does not fit type {ty} (row of {} is not a multiple of {})",
                ne[0],
                ty.block_size()
            ))
        })?;
        if offset % alignment != 0 {
            return Err(
                c.corrupt(format!("{what}: data offset {offset} is not a multiple of the alignment {alignment}"))
            );
        }
        if names.insert(name.clone(), ()).is_some() {
            return Err(c.corrupt(format!("duplicate tensor name '{name}'")));
        }
        tensors.push(TensorInfo { name, ty, ne, offset, n_bytes });
    }

    let header_end = c.pos() as u64;
    let data_offset = if tensors.is_empty() { header_end } else { header_end.div_ceil(alignment) * alignment };
    let len = buf.len() as u64;
    for t in &tensors {
        let start = data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        if end > len {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                what: format!("tensor '{}'", t.name),
                start,
                end,
                len,
            });
        }
    }
    Ok(Parsed { version, metadata, tensors, alignment, data_offset })
}
