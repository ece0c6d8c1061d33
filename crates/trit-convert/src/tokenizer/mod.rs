//! Tokenizer conversion: `tokenizer.json` (byte-level BPE → llama.cpp "gpt2") or
//! `tokenizer.model` (SentencePiece → llama.cpp "llama"), plus special tokens and chat template.

mod byte_level;
mod hf_json;
mod pretokenizer;
mod sentencepiece;
mod special;
mod synthetic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use trit_gguf::{GgufWriter, Value};

use crate::error::{ConvertError, Result};
use crate::hf_config::ModelConfig;

pub(crate) use synthetic::synthetic_vocab;

/// llama.cpp token types (`enum llama_token_type`), all listed for reference.
#[allow(dead_code)]
pub(crate) mod token_type {
    pub(crate) const NORMAL: i32 = 1;
    pub(crate) const UNKNOWN: i32 = 2;
    pub(crate) const CONTROL: i32 = 3;
    pub(crate) const USER_DEFINED: i32 = 4;
    pub(crate) const UNUSED: i32 = 5;
    pub(crate) const BYTE: i32 = 6;
}

/// A vocabulary ready to be written as `tokenizer.*` metadata.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vocab {
    /// `tokenizer.ggml.model`: "gpt2" or "llama".
    pub(crate) model: &'static str,
    /// `tokenizer.ggml.pre` (BPE only).
    pub(crate) pre: Option<&'static str>,
    pub(crate) tokens: Vec<String>,
    pub(crate) token_types: Vec<i32>,
    pub(crate) scores: Option<Vec<f32>>,
    pub(crate) merges: Option<Vec<String>>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) pad: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) add_bos: Option<bool>,
    pub(crate) add_eos: Option<bool>,
    pub(crate) add_space_prefix: Option<bool>,
    pub(crate) chat_template: Option<String>,
    /// The file the tokens came from (for error messages).
    pub(crate) source: PathBuf,
}

impl Vocab {
    pub(crate) fn describe(&self) -> String {
        match self.pre {
            Some(p) => format!("{}/{p}", self.model),
            None => self.model.to_string(),
        }
    }

    pub(crate) fn id_of(&self, token: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == token).map(|i| i as u32)
    }

    /// Pads with `[PAD<id>]` tokens of type UNUSED up to `n` entries (the embedding rows).
    /// UNUSED keeps them out of llama.cpp's special-token matcher, and they never tokenize.
    pub(crate) fn pad_to(&mut self, n: usize) -> Result<()> {
        if self.tokens.len() > n {
            return Err(ConvertError::Tokenizer {
                path: self.source.clone(),
                detail: format!(
                    "{} tokens but the model's embedding has only {n} rows (config.json vocab_size)",
                    self.tokens.len()
                ),
            });
        }
        for id in self.tokens.len()..n {
            self.tokens.push(format!("[PAD{id}]"));
            self.token_types.push(token_type::UNUSED);
            if let Some(s) = &mut self.scores {
                s.push(-1000.0);
            }
        }
        Ok(())
    }

    /// llama.cpp aborts on duplicate token strings; catch them here with a readable message.
    pub(crate) fn check_unique(&self) -> Result<()> {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.tokens.len());
        for (id, t) in self.tokens.iter().enumerate() {
            if let Some(first) = seen.insert(t.as_str(), id) {
                return Err(ConvertError::Tokenizer {
                    path: self.source.clone(),
                    detail: format!("token {t:?} appears twice (ids {first} and {id})"),
                });
            }
        }
        Ok(())
    }

    fn check_id(&self, what: &str, id: Option<u32>) -> Result<()> {
        match id {
            Some(i) if i as usize >= self.tokens.len() => Err(ConvertError::Tokenizer {
                path: self.source.clone(),
                detail: format!("{what} token id {i} is outside the {}-token vocabulary", self.tokens.len()),
            }),
            _ => Ok(()),
        }
    }

    /// Declares the `tokenizer.*` metadata.
    pub(crate) fn write_metadata(&self, w: &mut GgufWriter) -> Result<()> {
        self.check_unique()?;
        for (what, id) in [("bos", self.bos), ("eos", self.eos), ("pad", self.pad), ("unk", self.unk)] {
            self.check_id(what, id)?;
        }
        w.add_kv("tokenizer.ggml.model", self.model)?;
        if let Some(pre) = self.pre {
            w.add_kv("tokenizer.ggml.pre", pre)?;
        }
        w.add_kv("tokenizer.ggml.tokens", Value::string_array(self.tokens.iter().cloned()))?;
        if let Some(scores) = &self.scores {
            w.add_kv("tokenizer.ggml.scores", Value::f32_array(scores.iter().copied()))?;
        }
        w.add_kv("tokenizer.ggml.token_type", Value::i32_array(self.token_types.iter().copied()))?;
        if let Some(merges) = &self.merges {
            w.add_kv("tokenizer.ggml.merges", Value::string_array(merges.iter().cloned()))?;
        }
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", self.bos),
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.padding_token_id", self.pad),
            ("tokenizer.ggml.unknown_token_id", self.unk),
        ] {
            if let Some(id) = id {
                w.add_kv(key, id)?;
            }
        }
        for (key, flag) in [
            ("tokenizer.ggml.add_bos_token", self.add_bos),
            ("tokenizer.ggml.add_eos_token", self.add_eos),
            ("tokenizer.ggml.add_space_prefix", self.add_space_prefix),
        ] {
            if let Some(flag) = flag {
                w.add_kv(key, flag)?;
            }
        }
        if let Some(t) = &self.chat_template {
            w.add_kv("tokenizer.chat_template", t.as_str())?;
        }
        Ok(())
    }
}

/// Loads the tokenizer of an HF model directory, padded to the embedding's row count.
pub(crate) fn load(dir: &Path, config: &ModelConfig) -> Result<Vocab> {
    let json_path = dir.join("tokenizer.json");
    let spm_path = dir.join("tokenizer.model");
    let mut vocab = match hf_json::load(&json_path)? {
        hf_json::Loaded::ByteLevel(v) => v,
        hf_json::Loaded::NotByteLevel(why) if spm_path.exists() => {
            tracing::info!(reason = %why, "tokenizer.json is not byte-level BPE; using tokenizer.model");
            sentencepiece::load(&spm_path, &json_path)?
        }
        hf_json::Loaded::NotByteLevel(why) => {
            return Err(ConvertError::Tokenizer {
                path: json_path,
                detail: format!("{why}: not a byte-level BPE tokenizer, and there is no tokenizer.model"),
            })
        }
        hf_json::Loaded::Missing if spm_path.exists() => sentencepiece::load(&spm_path, &json_path)?,
        hf_json::Loaded::Missing => {
            return Err(ConvertError::MissingFile {
                path: json_path,
                needed_for: "the tokenizer (or tokenizer.model for SentencePiece)",
            })
        }
    };
    special::apply(dir, config, &mut vocab)?;
    vocab.pad_to(config.vocab)?;
    tracing::info!(
        tokenizer = %vocab.describe(),
        tokens = vocab.tokens.len(),
        bos = ?vocab.bos,
        eos = ?vocab.eos,
        "tokenizer loaded"
    );
    Ok(vocab)
}
