//! Special tokens, BOS/EOS flags and the chat template, from `tokenizer_config.json`,
//! `generation_config.json`, `config.json` and `chat_template.jinja`.
//!
//! Token ids come from the first source that names them: `tokenizer_config.json` (token
//! strings), then `generation_config.json`, then `config.json` (ids; a list's first entry).

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::{token_type, Vocab};
use crate::error::{ConvertError, Result};
use crate::hf_config::{token_id, ModelConfig};
use crate::json_file;

/// The content of a special-token entry: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

pub(crate) fn apply(dir: &Path, config: &ModelConfig, vocab: &mut Vocab) -> Result<()> {
    let tc_path = dir.join("tokenizer_config.json");
    let tc = json_file::read_optional(&tc_path)?;
    let gen = json_file::read_optional(&dir.join("generation_config.json"))?;

    // Tokens the tokenizer config marks special are control tokens.
    if let Some(decoder) = tc.as_ref().and_then(|t| t.get("added_tokens_decoder")).and_then(Value::as_object) {
        for (id, entry) in decoder {
            let (Ok(id), Some(true)) = (id.parse::<usize>(), entry.get("special").and_then(Value::as_bool)) else {
                continue;
            };
            if id < vocab.token_types.len() && vocab.token_types[id] != token_type::UNUSED {
                vocab.token_types[id] = token_type::CONTROL;
            }
        }
    }

    let by_name = |key: &str| -> Result<Option<u32>> {
        let Some(text) = tc.as_ref().and_then(|t| t.get(key)).and_then(token_text) else {
            return Ok(None);
        };
        match vocab.id_of(text) {
            Some(id) => Ok(Some(id)),
            None => Err(ConvertError::Tokenizer {
                path: tc_path.clone(),
                detail: format!("{key} {text:?} is not in the vocabulary"),
            }),
        }
    };
    let by_id = |key: &str| gen.as_ref().and_then(|g| g.get(key)).and_then(token_id);

    let bos = by_name("bos_token")?.or(by_id("bos_token_id")).or(config.bos_id);
    let eos = by_name("eos_token")?.or(by_id("eos_token_id")).or(config.eos_id);
    let pad = by_name("pad_token")?.or(by_id("pad_token_id")).or(config.pad_id);
    let unk = by_name("unk_token")?;
    vocab.bos = bos.or(vocab.bos);
    vocab.eos = eos.or(vocab.eos);
    vocab.pad = pad.or(vocab.pad);
    vocab.unk = unk.or(vocab.unk);

    if let Some(tc) = &tc {
        if let Some(b) = tc.get("add_bos_token").and_then(Value::as_bool) {
            vocab.add_bos = Some(b);
        }
        if let Some(b) = tc.get("add_eos_token").and_then(Value::as_bool) {
            vocab.add_eos = Some(b);
        }
    }
    vocab.chat_template = chat_template(dir, &tc_path, tc.as_ref())?;
    Ok(())
}

/// `chat_template` of tokenizer_config.json (a string, or a list of named templates of which
/// "default" is used), else `chat_template.jinja`, else `chat_template.json`.
fn chat_template(dir: &Path, tc_path: &Path, tc: Option<&Value>) -> Result<Option<String>> {
    match tc.and_then(|t| t.get("chat_template")) {
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let pick = list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str);
            return Ok(pick.map(String::from));
        }
        Some(Value::Null) | None => {}
        Some(other) => {
            return Err(ConvertError::Tokenizer {
                path: tc_path.to_path_buf(),
                detail: format!("chat_template must be a string or a list, found {other}"),
            })
        }
    }
    let jinja = dir.join("chat_template.jinja");
    match fs::read_to_string(&jinja) {
        Ok(s) => return Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ConvertError::Io { path: jinja, action: "cannot read", source }),
    }
    Ok(json_file::read_optional(&dir.join("chat_template.json"))?
        .and_then(|v| v.get("chat_template").and_then(Value::as_str).map(String::from)))
}
