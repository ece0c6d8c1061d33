//! Streaming GGUF writer.
//!
//! Declare every metadata entry and tensor (name, type, shape) first with [`GgufWriter`], then
//! [`GgufWriter::create`] computes the aligned data offsets, writes the whole header to a
//! temporary file next to the target, and returns a [`GgufStream`] that takes tensor data one
//! tensor at a time, in declaration order, optionally in chunks. Only [`GgufStream::finish`]
//! renames the temporary file onto the target; a stream that is dropped or fails on the way
//! deletes it, so a partial output never appears under the target name.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::ggml_type::GgmlType;
use crate::value::{Value, ValueType};
use crate::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT};

const ZEROS: [u8; 256] = [0; 256];

#[derive(Debug, Clone)]
struct DeclaredTensor {
    name: String,
    ty: GgmlType,
    ne: Vec<u64>,
    n_bytes: u64,
}

/// The declaration phase of a GGUF file: metadata and tensor infos.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<DeclaredTensor>,
    names: HashSet<String>,
}

/// Description errors carry no path yet; `create` adds it.
fn decl_error(detail: String) -> GgufError {
    GgufError::Writer { path: PathBuf::from("<gguf writer>"), detail }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry. Keys must be unique; arrays must hold only their element type.
    pub fn add_kv(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        check_value(&key, &value)?;
        if key == KEY_ALIGNMENT {
            match value {
                Value::U32(a) if a.is_power_of_two() => {}
                _ => {
                    return Err(decl_error(format!(
                        "'{KEY_ALIGNMENT}' must be a power-of-two u32, got {} {value}",
                        value.type_description()
                    )))
                }
            }
        }
        if !self.keys.insert(key.clone()) {
            return Err(decl_error(format!("metadata key '{key}' added twice")));
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor. `ne` is in ggml order (`ne[0]` is the contiguous row length).
    pub fn add_tensor(&mut self, name: impl Into<String>, ty: GgmlType, ne: &[u64]) -> Result<()> {
        let name = name.into();
        if ne.is_empty() || ne.len() > 4 {
            return Err(decl_error(format!("tensor '{name}': {} dimensions (1..=4 allowed)", ne.len())));
        }
        let n_bytes = ty.tensor_bytes(ne).ok_or_else(|| {
            decl_error(format!(
                "tensor '{name}': row length {} is not a multiple of the {ty} block size {}",
                ne[0],
                ty.block_size()
            ))
        })?;
        if !self.names.insert(name.clone()) {
            return Err(decl_error(format!("tensor '{name}' declared twice")));
        }
        self.tensors.push(DeclaredTensor { name, ty, ne: ne.to_vec(), n_bytes });
        Ok(())
    }

    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == KEY_ALIGNMENT)
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Total size the file will have once every tensor is written.
    pub fn planned_size(&self) -> u64 {
        let align = self.alignment();
        let data: u64 = self.tensors.iter().map(|t| t.n_bytes.div_ceil(align) * align).sum();
        self.header_bytes().len() as u64 + data
    }

    fn header_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut h = Vec::new();
        h.extend_from_slice(GGUF_MAGIC);
        h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut h, k);
            h.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut h, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut h, &t.name);
            h.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            offset += t.n_bytes.div_ceil(align) * align;
        }
        if !self.tensors.is_empty() {
            let padded = (h.len() as u64).div_ceil(align) * align;
            h.resize(padded as usize, 0);
        }
        h
    }

    /// Writes the header to `<dir>/.<name>.partial` and returns the stream for tensor data.
    pub fn create(self, path: impl AsRef<Path>) -> Result<GgufStream> {
        let path = path.as_ref().to_path_buf();
        let file_name = path
            .file_name()
            .ok_or_else(|| GgufError::Writer { path: path.clone(), detail: "output path has no file name".into() })?
            .to_string_lossy()
            .into_owned();
        let tmp_path = path.with_file_name(format!(".{file_name}.partial"));
        let file = File::create(&tmp_path).map_err(|source| GgufError::Io {
            path: tmp_path.clone(),
            action: "cannot create temporary output",
            source,
        })?;
        let header = self.header_bytes();
        let mut stream = GgufStream {
            final_path: path,
            tmp_path: Some(tmp_path),
            out: BufWriter::with_capacity(1 << 20, file),
            alignment: self.alignment(),
            tensors: self.tensors,
            next: 0,
            written_in_current: None,
        };
        stream.write_all(&header, "cannot write header")?;
        tracing::debug!(
            path = %stream.final_path.display(),
            header_bytes = header.len(),
            n_tensors = stream.tensors.len(),
            "GGUF header written"
        );
        Ok(stream)
    }
}

fn check_value(key: &str, v: &Value) -> Result<()> {
    if let Value::Array(elem, items) = v {
        if let Some(bad) = items.iter().find(|i| i.value_type() != *elem) {
            return Err(decl_error(format!(
                "metadata '{key}': array of {} holds a {}",
                elem.name(),
                bad.type_description()
            )));
        }
        if *elem == ValueType::Array {
            for i in items {
                check_value(key, i)?;
            }
        }
    }
    Ok(())
}

fn put_string(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(u8::from(*x)),
        Value::String(s) => put_string(h, s),
        Value::Array(elem, items) => {
            h.extend_from_slice(&elem.id().to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            // A nested array element is written the same way: element type, count, items.
            for i in items {
                put_value(h, i);
            }
        }
    }
}

/// The data phase: tensors are written in declaration order.
pub struct GgufStream {
    final_path: PathBuf,
    tmp_path: Option<PathBuf>,
    out: BufWriter<File>,
    alignment: u64,
    tensors: Vec<DeclaredTensor>,
    next: usize,
    /// Bytes written so far for the tensor begun with `begin_tensor`.
    written_in_current: Option<u64>,
}

impl GgufStream {
    fn err(&self, detail: String) -> GgufError {
        GgufError::Writer { path: self.final_path.clone(), detail }
    }

    fn write_all(&mut self, bytes: &[u8], action: &'static str) -> Result<()> {
        self.out.write_all(bytes).map_err(|source| GgufError::Io {
            path: self.tmp_path.clone().unwrap_or_default(),
            action,
            source,
        })
    }

    /// Name, type and shape of the tensor expected next, if any.
    pub fn next_tensor(&self) -> Option<(&str, GgmlType, &[u64])> {
        self.tensors.get(self.next).map(|t| (t.name.as_str(), t.ty, t.ne.as_slice()))
    }

    /// Starts the data of tensor `name`, which must be the next declared one.
    pub fn begin_tensor(&mut self, name: &str) -> Result<()> {
        if self.written_in_current.is_some() {
            let cur = &self.tensors[self.next].name;
            return Err(self.err(format!("began tensor '{name}' while tensor '{cur}' is still open")));
        }
        match self.tensors.get(self.next) {
            Some(t) if t.name == name => {
                self.written_in_current = Some(0);
                Ok(())
            }
            Some(t) => Err(self.err(format!("tensor '{name}' written out of order: '{}' is next", t.name))),
            None => Err(self.err(format!("tensor '{name}' written but every declared tensor is already written"))),
        }
    }

    /// Appends bytes to the open tensor.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(done) = self.written_in_current else {
            return Err(self.err("tensor data written without begin_tensor".into()));
        };
        let t = &self.tensors[self.next];
        if done + bytes.len() as u64 > t.n_bytes {
            return Err(self.err(format!(
                "tensor '{}': {} bytes written, more than its {} bytes",
                t.name,
                done + bytes.len() as u64,
                t.n_bytes
            )));
        }
        self.write_all(bytes, "cannot write tensor data")?;
        self.written_in_current = Some(done + bytes.len() as u64);
        Ok(())
    }

    /// Closes the open tensor; its byte count must match its declared type and shape.
    pub fn end_tensor(&mut self) -> Result<()> {
        let Some(done) = self.written_in_current else {
            return Err(self.err("end_tensor without begin_tensor".into()));
        };
        let t = &self.tensors[self.next];
        if done != t.n_bytes {
            return Err(self.err(format!(
                "tensor '{}': {done} bytes written, expected {} ({} {:?})",
                t.name, t.n_bytes, t.ty, t.ne
            )));
        }
        let pad = (done.div_ceil(self.alignment) * self.alignment - done) as usize;
        let mut left = pad;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.write_all(&ZEROS[..n], "cannot write padding")?;
            left -= n;
        }
        self.written_in_current = None;
        self.next += 1;
        Ok(())
    }

    /// Writes a whole tensor at once.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.begin_tensor(name)?;
        self.write_chunk(bytes)?;
        self.end_tensor()
    }

    /// Flushes, syncs and renames the temporary file onto the target path.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.written_in_current.is_some() || self.next != self.tensors.len() {
            let missing: Vec<&str> = self.tensors[self.next..].iter().map(|t| t.name.as_str()).take(3).collect();
            return Err(self.err(format!(
                "finish() with {} tensor(s) not written (first: {})",
                self.tensors.len() - self.next,
                missing.join(", ")
            )));
        }
        let tmp = self.tmp_path.clone().expect("temp path present until finish");
        self.out.flush().map_err(|source| GgufError::Io { path: tmp.clone(), action: "cannot flush", source })?;
        self.out.get_ref().sync_all().map_err(|source| GgufError::Io {
            path: tmp.clone(),
            action: "cannot sync",
            source,
        })?;
        fs::rename(&tmp, &self.final_path).map_err(|source| GgufError::Io {
            path: self.final_path.clone(),
            action: "cannot move finished output into place",
            source,
        })?;
        self.tmp_path = None;
        tracing::info!(path = %self.final_path.display(), "GGUF written");
        Ok(self.final_path.clone())
    }
}

impl Drop for GgufStream {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp_path.take() {
            match fs::remove_file(&tmp) {
                Ok(()) => tracing::debug!(path = %tmp.display(), "removed unfinished output"),
                Err(e) => {
                    tracing::warn!(path = %tmp.display(), error = %e, "could not remove unfinished output")
                }
            }
        }
    }
}
