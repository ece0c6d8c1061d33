//! Recognising the pre-tokenizer of a byte-level BPE `tokenizer.json` by its split regex.

use serde_json::Value;

/// The Llama-3 split regex as it appears in `tokenizer.json`.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The same regex with the case-insensitive group spelled out (as llama.cpp rewrites it).
const LLAMA3_EXPANDED: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split regex (what `ByteLevel` with `use_regex: true` applies).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Result of inspecting `pre_tokenizer`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// A supported byte-level pre-tokenizer and its llama.cpp name.
    Known(&'static str),
    /// Not byte-level BPE at all (e.g. SentencePiece-style Metaspace).
    NotByteLevel(String),
    /// Byte-level, but with split rules llama.cpp has no name for here.
    Unknown(String),
}

/// Identifies the `pre_tokenizer` object of a `tokenizer.json`.
pub(crate) fn detect(pre: &Value) -> PreTokenizer {
    let steps: Vec<&Value> = match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            pre.get("pretokenizers").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
        }
        Some(_) => vec![pre],
        None => return PreTokenizer::NotByteLevel(format!("pre_tokenizer {pre}")),
    };
    let type_of = |s: &Value| s.get("type").and_then(Value::as_str).unwrap_or("?").to_string();
    if !steps.iter().any(|s| type_of(s) == "ByteLevel") {
        let kinds: Vec<String> = steps.iter().map(|s| type_of(s)).collect();
        return PreTokenizer::NotByteLevel(format!("pre_tokenizer without a ByteLevel step ({})", kinds.join(", ")));
    }
    let mut regexes = Vec::new();
    for step in &steps {
        match type_of(step).as_str() {
            "ByteLevel" => {
                if step.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
                    return PreTokenizer::Unknown("ByteLevel with add_prefix_space=true".into());
                }
                if step.get("use_regex").and_then(Value::as_bool).unwrap_or(true) {
                    regexes.push(GPT2.to_string());
                }
            }
            "Split" => match step.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str) {
                Some(r) => regexes.push(r.to_string()),
                None => return PreTokenizer::Unknown(format!("Split step {step}")),
            },
            other => return PreTokenizer::Unknown(format!("pre-tokenizer step '{other}'")),
        }
    }
    match regexes.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [r] if *r == LLAMA3 || *r == LLAMA3_EXPANDED => PreTokenizer::Known("llama-bpe"),
        [r] if *r == GPT2 => PreTokenizer::Known("gpt-2"),
        [] => PreTokenizer::Unknown("ByteLevel without any split regex".into()),
        rs => PreTokenizer::Unknown(format!("split regex {rs:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn llama3_pre() -> Value {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]})
    }

    #[test]
    fn recognises_llama3_and_gpt2() {
        assert_eq!(detect(&llama3_pre()), PreTokenizer::Known("llama-bpe"));
        let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        assert_eq!(detect(&gpt2), PreTokenizer::Known("gpt-2"));
    }

    #[test]
    fn rejects_others() {
        let qwen = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t)|\\p{N}"}, "behavior": "Isolated"},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}
        ]});
        assert!(matches!(detect(&qwen), PreTokenizer::Unknown(_)));
        let spm = json!({"type": "Metaspace", "replacement": "▁"});
        assert!(matches!(detect(&spm), PreTokenizer::NotByteLevel(_)));
    }
}
