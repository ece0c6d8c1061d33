//! `tokenizer.model` (SentencePiece `ModelProto`, protobuf) → llama.cpp "llama" vocabulary.
//!
//! Only the fields llama.cpp needs are read: `pieces` (1: piece, score, type), `trainer_spec`
//! (2: unk/bos/eos/pad ids) and `normalizer_spec` (3: add_dummy_prefix). The protobuf wire
//! format is decoded by hand.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::hf_json::added_tokens;
use super::{token_type, Vocab};
use crate::error::{ConvertError, Result};
use crate::json_file;

/// One protobuf field: number and payload.
enum Field<'a> {
    Varint(u32, u64),
    Fixed32(u32, [u8; 4]),
    Fixed64,
    Bytes(u32, &'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// The next field, `Ok(None)` at the end, `Err` on malformed input.
    fn field(&mut self) -> Result<Option<Field<'a>>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let bad = || format!("malformed protobuf at byte {at}");
        let key = self.varint().ok_or_else(bad)?;
        let number = (key >> 3) as u32;
        Ok(Some(match key & 7 {
            0 => Field::Varint(number, self.varint().ok_or_else(bad)?),
            1 => {
                self.take(8).ok_or_else(bad)?;
                Field::Fixed64
            }
            2 => {
                let n = self.varint().ok_or_else(bad)? as usize;
                Field::Bytes(number, self.take(n).ok_or_else(bad)?)
            }
            5 => Field::Fixed32(number, self.take(4).ok_or_else(bad)?.try_into().expect("4 bytes")),
            w => return Err(format!("unsupported protobuf wire type {w} at byte {at}")),
        }))
    }
}

struct Piece {
    text: String,
    score: f32,
    kind: i32,
}

fn parse_piece(buf: &[u8]) -> Result<Piece, String> {
    let mut r = Reader::new(buf);
    let mut p = Piece { text: String::new(), score: 0.0, kind: token_type::NORMAL };
    while let Some(f) = r.field()? {
        match f {
            Field::Bytes(1, s) => {
                p.text = String::from_utf8(s.to_vec()).map_err(|_| "piece is not UTF-8".to_string())?
            }
            Field::Fixed32(2, b) => p.score = f32::from_le_bytes(b),
            // SentencePiece's piece types share llama.cpp's numbering (NORMAL = 1 … BYTE = 6).
            Field::Varint(3, t) => p.kind = t as i32,
            _ => {}
        }
    }
    Ok(p)
}

#[derive(Default)]
struct Spec {
    unk: Option<i64>,
    bos: Option<i64>,
    eos: Option<i64>,
    pad: Option<i64>,
    add_dummy_prefix: Option<bool>,
}

fn parse_model(buf: &[u8]) -> Result<(Vec<Piece>, Spec), String> {
    let mut r = Reader::new(buf);
    let mut pieces = Vec::new();
    let mut spec = Spec::default();
    while let Some(f) = r.field()? {
        match f {
            Field::Bytes(1, b) => pieces.push(parse_piece(b)?),
            Field::Bytes(2, b) => {
                let mut t = Reader::new(b);
                while let Some(f) = t.field()? {
                    if let Field::Varint(n, v) = f {
                        // int32 fields: negative values arrive as 64-bit two's complement.
                        let v = v as i64;
                        match n {
                            40 => spec.unk = Some(v),
                            41 => spec.bos = Some(v),
                            42 => spec.eos = Some(v),
                            43 => spec.pad = Some(v),
                            _ => {}
                        }
                    }
                }
            }
            Field::Bytes(3, b) => {
                let mut t = Reader::new(b);
                while let Some(f) = t.field()? {
                    if let Field::Varint(3, v) = f {
                        spec.add_dummy_prefix = Some(v != 0);
                    }
                }
            }
            _ => {}
        }
    }
    Ok((pieces, spec))
}

fn to_id(v: Option<i64>, default: i64) -> Option<u32> {
    u32::try_from(v.unwrap_or(default)).ok()
}

pub(crate) fn load(path: &Path, tokenizer_json: &Path) -> Result<Vocab> {
    let bytes = fs::read(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        action: "cannot read",
        source,
    })?;
    let err = |detail: String| ConvertError::Tokenizer { path: path.to_path_buf(), detail };
    let (pieces, spec) = parse_model(&bytes).map_err(err)?;
    if pieces.is_empty() {
        return Err(err("no pieces: not a SentencePiece model".into()));
    }
    let mut vocab = Vocab {
        model: "llama",
        pre: None,
        tokens: Vec::with_capacity(pieces.len()),
        token_types: Vec::with_capacity(pieces.len()),
        scores: Some(Vec::with_capacity(pieces.len())),
        merges: None,
        unk: to_id(spec.unk, 0),
        bos: to_id(spec.bos, 1),
        eos: to_id(spec.eos, 2),
        pad: to_id(spec.pad, -1),
        add_space_prefix: Some(spec.add_dummy_prefix.unwrap_or(true)),
        source: path.to_path_buf(),
        ..Vocab::default()
    };
    for p in pieces {
        vocab.tokens.push(p.text);
        vocab.token_types.push(p.kind);
        vocab.scores.as_mut().expect("set above").push(p.score);
    }

    // Tokens added on top of the SentencePiece model (ids past its pieces).
    let mut extra: Vec<(u32, String, bool)> = Vec::new();
    if let Some(root) = json_file::read_optional(tokenizer_json)? {
        extra.extend(added_tokens(tokenizer_json, &root)?);
    }
    let added_json = path.with_file_name("added_tokens.json");
    if let Some(Value::Object(map)) = json_file::read_optional(&added_json)? {
        extra.extend(map.iter().filter_map(|(t, id)| Some((id.as_u64()? as u32, t.clone(), false))));
    }
    extra.sort_by_key(|e| e.0);
    for (id, text, special) in extra {
        let id = id as usize;
        if id < vocab.tokens.len() {
            continue; // already a piece
        }
        vocab.pad_to(id)?;
        vocab.tokens.push(text);
        vocab.token_types.push(if special { token_type::CONTROL } else { token_type::USER_DEFINED });
        vocab.scores.as_mut().expect("set above").push(-1000.0);
    }
    Ok(vocab)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(n << 3 | 2), out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// Encodes a minimal ModelProto: pieces (text, score, type) and trainer ids.
    pub(crate) fn encode_model(pieces: &[(&str, f32, i32)], bos: i64, eos: i64, pad: i64) -> Vec<u8> {
        let mut out = Vec::new();
        for (text, score, kind) in pieces {
            let mut p = Vec::new();
            bytes_field(1, text.as_bytes(), &mut p);
            varint(u64::from(2u32 << 3 | 5), &mut p);
            p.extend_from_slice(&score.to_le_bytes());
            varint(u64::from(3u32 << 3), &mut p);
            varint(*kind as u64, &mut p);
            bytes_field(1, &p, &mut out);
        }
        let mut t = Vec::new();
        for (n, v) in [(41u32, bos), (42, eos), (43, pad)] {
            varint(u64::from(n << 3), &mut t);
            varint(v as u64, &mut t);
        }
        bytes_field(2, &t, &mut out);
        let mut ns = Vec::new();
        varint(u64::from(3u32 << 3), &mut ns);
        varint(0, &mut ns);
        bytes_field(3, &ns, &mut out);
        out
    }

    #[test]
    fn parses_pieces_and_specs() {
        let bytes = encode_model(
            &[("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("<0x0A>", 0.0, 6), ("▁the", -1.5, 1)],
            1,
            2,
            -1,
        );
        let (pieces, spec) = parse_model(&bytes).unwrap();
        assert_eq!(pieces.len(), 5);
        assert_eq!(pieces[4].text, "▁the");
        assert_eq!(pieces[4].score, -1.5);
        assert_eq!(pieces[3].kind, token_type::BYTE);
        assert_eq!((spec.bos, spec.eos, spec.pad), (Some(1), Some(2), Some(-1)));
        assert_eq!(spec.add_dummy_prefix, Some(false));
        assert_eq!(to_id(spec.pad, -1), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_model(&[0x0a, 0xff]).is_err());
    }
}
