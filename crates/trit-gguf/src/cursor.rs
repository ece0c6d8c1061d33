//! Bounds-checked little-endian reads over the bytes of a GGUF file.

use std::path::Path;

use crate::error::{GgufError, Result};
use crate::value::{Value, ValueType};

/// Longest string accepted in metadata or tensor names (guards against corrupt lengths).
const MAX_STRING: u64 = 1 << 30;
/// Deepest nesting of arrays accepted.
const MAX_ARRAY_DEPTH: u32 = 4;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Cursor { buf, pos: 0, path }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn corrupt(&self, detail: impl Into<String>) -> GgufError {
        GgufError::Corrupt { path: self.path.to_path_buf(), detail: detail.into() }
    }

    pub(crate) fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        let len = self.buf.len() as u64;
        let start = self.pos as u64;
        let end = start.saturating_add(n);
        if end > len {
            return Err(GgufError::Truncated { path: self.path.to_path_buf(), what: what(), start, end, len });
        }
        let s = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N as u64, || what.to_string())?;
        Ok(b.try_into().expect("take returned N bytes"))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(self.corrupt(format!("{what}: string length {n} is implausible")));
        }
        let bytes = self.take(n, || what.to_string())?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt(format!("{what}: string is not valid UTF-8")))
    }

    pub(crate) fn value(&mut self, ty: ValueType, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.corrupt(format!("{what}: bool byte {b} is not 0 or 1"))),
            },
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(format!("{what}: arrays nested too deeply")));
                }
                let id = self.u32(what)?;
                let elem = ValueType::from_id(id)
                    .ok_or_else(|| self.corrupt(format!("{what}: unknown array element type {id}")))?;
                let n = self.u64(what)?;
                // Every element takes at least one byte (strings at least eight): a count larger
                // than the remaining bytes is corrupt, and checking first avoids a huge allocation.
                let min = elem.fixed_size().unwrap_or(8) as u64;
                let remaining = (self.buf.len() - self.pos) as u64;
                if n.saturating_mul(min) > remaining {
                    let start = self.pos as u64;
                    return Err(GgufError::Truncated {
                        path: self.path.to_path_buf(),
                        what: format!("{what} ({n} × {})", elem.name()),
                        start,
                        end: start.saturating_add(n.saturating_mul(min)),
                        len: self.buf.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}
