//! A small valid byte-level BPE vocabulary for synthetic models: the 256 GPT-2 byte
//! characters, Llama-3's special tokens at their Llama-3 ids, and UNUSED padding.

use std::path::PathBuf;

use super::byte_level::alphabet;
use super::{token_type, Vocab};

/// First special token id (Llama-3 layout).
const SPECIAL_BASE: usize = 128_000;

/// A Llama-3 style chat template for the synthetic vocabulary.
const CHAT_TEMPLATE: &str = "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

fn special_name(offset: usize) -> String {
    match offset {
        0 => "<|begin_of_text|>".into(),
        1 => "<|end_of_text|>".into(),
        6 => "<|start_header_id|>".into(),
        7 => "<|end_header_id|>".into(),
        9 => "<|eot_id|>".into(),
        n => format!("<|reserved_special_token_{n}|>"),
    }
}

/// Builds a vocabulary of exactly `n_vocab` tokens. With fewer than 128 256 entries the
/// special tokens follow the bytes directly instead of sitting at 128 000.
pub(crate) fn synthetic_vocab(n_vocab: usize) -> Vocab {
    let n_special = 256.min(n_vocab.saturating_sub(256));
    let special_base = if n_vocab >= SPECIAL_BASE + 256 { SPECIAL_BASE } else { 256 };
    let mut tokens: Vec<String> = alphabet().iter().map(|c| c.to_string()).collect();
    let mut types = vec![token_type::NORMAL; 256];
    tokens.truncate(n_vocab);
    types.truncate(n_vocab);
    while tokens.len() < n_vocab {
        let id = tokens.len();
        if (special_base..special_base + n_special).contains(&id) {
            tokens.push(special_name(id - special_base));
            types.push(token_type::CONTROL);
        } else {
            tokens.push(format!("[PAD{id}]"));
            types.push(token_type::UNUSED);
        }
    }
    let id = |off: usize| (n_special > off).then_some((special_base + off) as u32);
    Vocab {
        model: "gpt2",
        pre: Some("llama-bpe"),
        tokens,
        token_types: types,
        scores: None,
        merges: Some(Vec::new()),
        bos: id(0),
        eos: id(9).or(id(1)),
        add_bos: Some(true),
        chat_template: Some(CHAT_TEMPLATE.into()),
        source: PathBuf::from("<synthetic vocabulary>"),
        ..Vocab::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_size_vocab_matches_llama3_ids() {
        let v = synthetic_vocab(128_256);
        assert_eq!(v.tokens.len(), 128_256);
        assert_eq!(v.tokens[32], "Ġ");
        assert_eq!(v.tokens[128_000], "<|begin_of_text|>");
        assert_eq!(v.tokens[128_009], "<|eot_id|>");
        assert_eq!(v.token_types[128_009], token_type::CONTROL);
        assert_eq!(v.token_types[1000], token_type::UNUSED);
        assert_eq!((v.bos, v.eos), (Some(128_000), Some(128_009)));
        v.check_unique().unwrap();
    }

    #[test]
    fn small_vocab_keeps_specials() {
        let v = synthetic_vocab(1024);
        assert_eq!(v.tokens[256], "<|begin_of_text|>");
        assert_eq!(v.bos, Some(256));
        v.check_unique().unwrap();
    }
}
