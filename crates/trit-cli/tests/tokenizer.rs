//! llama.cpp's tokenizer, loaded from a `trit convert`ed GGUF, against Hugging Face
//! `tokenizers` on the committed cases (ASCII, numbers, whitespace runs, contractions,
//! accents, Cyrillic, Greek, CJK, emoji and ZWJ sequences, combining marks, inline special
//! tokens), and the chat template against transformers' `apply_chat_template`.

mod common;

use common::*;
use trit_llama::{ChatMessage, Model, ModelParams};

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap()).unwrap()
}

fn vocab_model() -> Model {
    let gguf = converted("bitnet-2b4t-bf16", "tq2_0");
    Model::load(&gguf, &ModelParams { vocab_only: true, ..Default::default() }).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<i32> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect()
}

#[test]
fn tokenisation_matches_hf_tokenizers() {
    let model = vocab_model();
    let cases = cases();
    let list = cases["cases"].as_array().unwrap();
    assert!(list.len() >= 300, "expected a few hundred cases, got {}", list.len());
    let mut failures = Vec::new();
    for c in list {
        let text = c["text"].as_str().unwrap();
        let plain = model.tokenize(text, false, true).unwrap();
        let with_bos = model.tokenize(text, true, true).unwrap();
        if plain != ids(&c["ids"]) || with_bos != ids(&c["ids_with_bos"]) {
            failures.push(format!("{text:?}: trit {plain:?} / hf {:?}", ids(&c["ids"])));
        }
        // Byte-level BPE round-trips exactly.
        assert_eq!(model.detokenize(&plain, true), text, "detokenize({plain:?})");
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), list.len(), failures.join("\n"));
}

#[test]
fn special_tokens_and_bos_match() {
    let model = vocab_model();
    let cases = cases();
    let sp = &cases["special_ids"];
    assert_eq!(model.bos(), sp["<|begin_of_text|>"].as_i64().unwrap() as i32);
    assert!(model.add_bos());
    assert!(model.is_eog(sp["<|eot_id|>"].as_i64().unwrap() as i32), "<|eot_id|> ends generation");
    assert_eq!(model.n_vocab(), cases["vocab_size"].as_u64().unwrap() as usize);
    // Without parse_special, special-token text is ordinary text.
    let raw = model.tokenize("<|eot_id|>", false, false).unwrap();
    assert!(raw.len() > 1, "special text must not become one token without parse_special: {raw:?}");
}

#[test]
fn chat_template_matches_transformers() {
    let model = vocab_model();
    let template = model.chat_template().expect("converted model carries the chat template");
    let cases = cases();
    for c in cases["chat_template_cases"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        let add = c["add_generation_prompt"].as_bool().unwrap();
        let text = Model::apply_chat_template(&template, &messages, add).unwrap();
        // The Jinja template writes the BOS text itself; llama.cpp leaves BOS to the
        // tokenizer (add_special), so the same tokens come out either way.
        let hf_text = c["text"].as_str().unwrap();
        assert_eq!(hf_text.strip_prefix("<|begin_of_text|>"), Some(text.as_str()), "rendering of {messages:?}");
        assert_eq!(model.tokenize(&text, true, true).unwrap(), ids(&c["ids"]));
    }
}
