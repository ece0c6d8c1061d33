//! `tokenizer.json` (Hugging Face `tokenizers`) with a byte-level BPE model.

use std::path::Path;

use serde_json::Value;

use super::pretokenizer::{self, PreTokenizer};
use super::{token_type, Vocab};
use crate::error::{ConvertError, Result};
use crate::json_file;

pub(crate) enum Loaded {
    ByteLevel(Vocab),
    /// A tokenizer.json that is not byte-level BPE (why).
    NotByteLevel(String),
    Missing,
}

fn tok_err(path: &Path, detail: String) -> ConvertError {
    ConvertError::Tokenizer { path: path.to_path_buf(), detail }
}

/// `(id, content, special)` of each entry of `added_tokens`.
pub(crate) fn added_tokens(path: &Path, root: &Value) -> Result<Vec<(u32, String, bool)>> {
    let Some(list) = root.get("added_tokens").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|t| {
            let id = t.get("id").and_then(Value::as_u64);
            let content = t.get("content").and_then(Value::as_str);
            match (id, content) {
                (Some(id), Some(c)) => {
                    Ok((id as u32, c.to_string(), t.get("special").and_then(Value::as_bool).unwrap_or(false)))
                }
                _ => Err(tok_err(path, format!("malformed added_tokens entry {t}"))),
            }
        })
        .collect()
}

pub(crate) fn load(path: &Path) -> Result<Loaded> {
    let Some(root) = json_file::read_optional(path)? else {
        return Ok(Loaded::Missing);
    };
    let model = root.get("model").ok_or_else(|| tok_err(path, "no 'model' object".into()))?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if kind != "BPE" {
        return Ok(Loaded::NotByteLevel(format!("tokenizer model type '{kind}'")));
    }
    let pre = match pretokenizer::detect(root.get("pre_tokenizer").unwrap_or(&Value::Null)) {
        PreTokenizer::Known(name) => name,
        PreTokenizer::NotByteLevel(why) => return Ok(Loaded::NotByteLevel(why)),
        PreTokenizer::Unknown(found) => {
            return Err(ConvertError::UnsupportedPreTokenizer { path: path.to_path_buf(), found })
        }
    };
    if let Some(n) = root.get("normalizer").filter(|n| !n.is_null()) {
        tracing::warn!(normalizer = %n, "tokenizer.json has a normalizer; llama.cpp's BPE tokenizer ignores it");
    }

    let vocab_map = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tok_err(path, "model.vocab is not an object".into()))?;
    let added = added_tokens(path, &root)?;
    let max_id =
        vocab_map.values().filter_map(Value::as_u64).chain(added.iter().map(|a| u64::from(a.0))).max().unwrap_or(0)
            as usize;
    let mut tokens: Vec<Option<String>> = vec![None; max_id + 1];
    let mut types = vec![token_type::NORMAL; max_id + 1];
    for (text, id) in vocab_map {
        let id = id.as_u64().ok_or_else(|| tok_err(path, format!("model.vocab entry {text:?} has a non-integer id")))?
            as usize;
        tokens[id] = Some(text.clone());
    }
    for (id, text, special) in &added {
        let id = *id as usize;
        if let Some(prev) = &tokens[id] {
            if prev != text {
                return Err(tok_err(path, format!("id {id} is both {prev:?} (vocab) and {text:?} (added_tokens)")));
            }
        }
        tokens[id] = Some(text.clone());
        types[id] = if *special { token_type::CONTROL } else { token_type::USER_DEFINED };
    }
    // Holes in the id space become UNUSED placeholders, as padding does.
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.unwrap_or_else(|| {
                types[id] = token_type::UNUSED;
                format!("[PAD{id}]")
            })
        })
        .collect();

    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tok_err(path, "model.merges is missing".into()))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => {
                match (pair.first().and_then(Value::as_str), pair.get(1).and_then(Value::as_str), pair.len()) {
                    (Some(a), Some(b), 2) => Ok(format!("{a} {b}")),
                    _ => Err(tok_err(path, format!("malformed merge {m}"))),
                }
            }
            _ => Err(tok_err(path, format!("malformed merge {m}"))),
        })
        .collect::<Result<Vec<_>>>()?;

    let add_bos = template_starts_with_special(&root);
    Ok(Loaded::ByteLevel(Vocab {
        model: "gpt2",
        pre: Some(pre),
        tokens,
        token_types: types,
        scores: None,
        merges: Some(merges),
        add_bos,
        source: path.to_path_buf(),
        ..Vocab::default()
    }))
}

/// `Some(true)` when the post-processor's single-sequence template starts with a special token
/// (how Llama-3 style tokenizers add BOS), `Some(false)` when it starts with the sequence.
fn template_starts_with_special(root: &Value) -> Option<bool> {
    let post = root.get("post_processor")?;
    let template = match post.get("type").and_then(Value::as_str)? {
        "TemplateProcessing" => post,
        "Sequence" => post
            .get("processors")?
            .as_array()?
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))?,
        _ => return None,
    };
    let first = template.get("single")?.as_array()?.first()?;
    Some(first.get("SpecialToken").is_some())
}
