//! Every bad input gives a one-line error naming the file (and tensor), and no output file.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use safetensors::Dtype;
use serde_json::json;
use trit_convert::{convert, ConvertError, ConvertOptions};

struct Case {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    model: Model,
}

fn case(layout: Layout) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let model = build_model(&MICROSOFT, layout, FF, 9);
    let packed = match layout {
        Layout::Packed(c) => Some(c),
        Layout::Latent(_) => None,
    };
    let dir = write_dir(tmp.path(), "m", &MICROSOFT, &model, FF, packed);
    Case { tmp, dir, model }
}

impl Case {
    fn out(&self) -> PathBuf {
        self.tmp.path().join("out.gguf")
    }

    /// Runs the conversion, expects an error, checks nothing was written, returns the message.
    fn fails(&self) -> String {
        let err: ConvertError = convert(&self.dir, &self.out(), &ConvertOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg}");
        assert_eq!(files_in(self.tmp.path()), ["m"], "output or temp file left behind after: {msg}");
        msg
    }

    fn rewrite_weights(&mut self, edit: impl FnOnce(&mut Model)) {
        edit(&mut self.model);
        write_safetensors(&self.dir.join("model.safetensors"), &self.model.tensors);
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

#[test]
fn missing_config() {
    let c = case(Layout::Latent(Dtype::BF16));
    fs::remove_file(c.dir.join("config.json")).unwrap();
    assert_eq!(c.fails(), format!("{}: missing (the model configuration)", c.path("config.json")));
}

#[test]
fn unknown_architecture() {
    let c = case(Layout::Latent(Dtype::BF16));
    let mut cfg = config(&MICROSOFT, FF, None);
    cfg["architectures"] = json!(["GPT2LMHeadModel"]);
    write_json(&c.dir.join("config.json"), &cfg);
    let msg = c.fails();
    assert!(
        msg.starts_with(&format!("{}: unknown architecture 'GPT2LMHeadModel' (supported: ", c.path("config.json"))),
        "{msg}"
    );
}

#[test]
fn llama_with_bitnet_quantization_is_named() {
    let c = case(Layout::Packed("bitlinear"));
    let mut cfg = config(&MICROSOFT, FF, Some("bitlinear"));
    cfg["architectures"] = json!(["LlamaForCausalLM"]);
    write_json(&c.dir.join("config.json"), &cfg);
    let msg = c.fails();
    assert!(
        msg.contains("architecture 'LlamaForCausalLM' is not supported: Llama-architecture BitNet models"),
        "{msg}"
    );
}

#[test]
fn wrong_shape() {
    let mut c = case(Layout::Latent(Dtype::BF16));
    c.rewrite_weights(|m| {
        m.tensors.insert(
            "model.layers.1.self_attn.k_proj.weight".into(),
            floats(Dtype::BF16, vec![64, HIDDEN], &vec![0.01; 64 * HIDDEN]),
        );
    });
    let msg = c.fails();
    assert!(
        msg.starts_with(&format!(
            "{}: tensor 'model.layers.1.self_attn.k_proj.weight' has shape [64, 256], expected [128, 256]",
            c.path("model.safetensors")
        )),
        "{msg}"
    );
}

#[test]
fn wrong_dtype() {
    let mut c = case(Layout::Latent(Dtype::BF16));
    c.rewrite_weights(|m| {
        let t = m.tensors.get_mut("model.norm.weight").unwrap();
        t.dtype = Dtype::I16;
    });
    let msg = c.fails();
    assert!(msg.contains("tensor 'model.norm.weight' has dtype I16, expected F32, F16 or BF16"), "{msg}");
}

#[test]
fn non_ternary_packed_values_fail_mid_stream_without_output() {
    let mut c = case(Layout::Packed("bitlinear"));
    // An existing file at the output path must survive a failed conversion untouched.
    let out = c.out();
    c.rewrite_weights(|m| {
        let t = m.tensors.get_mut("model.layers.1.mlp.down_proj.weight").unwrap();
        t.data[3 * FF + 5] = 0b1100_0000; // row 3·(out/4)+3 of packed row 3, column 5 gets digit 3
    });
    fs::write(&out, b"previous").unwrap();
    let err = convert(&c.dir, &out, &ConvertOptions::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: packed tensor 'model.layers.1.mlp.down_proj.weight' is not ternary: 2-bit value 3 at row {}, column 5",
            c.path("model.safetensors"),
            3 * (HIDDEN / 4) + 3
        )
    );
    assert_eq!(fs::read(&out).unwrap(), b"previous");
    assert_eq!(files_in(c.tmp.path()), ["m", "out.gguf"]);
}

#[test]
fn truncated_safetensors() {
    let c = case(Layout::Latent(Dtype::BF16));
    let p = c.dir.join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let msg = c.fails();
    assert!(
        msg.starts_with(&format!("{}: corrupt or truncated safetensors file:", c.path("model.safetensors"))),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn missing_tensor() {
    let mut c = case(Layout::Latent(Dtype::BF16));
    c.rewrite_weights(|m| {
        m.tensors.remove("model.layers.1.mlp.ffn_sub_norm.weight");
    });
    assert_eq!(
        c.fails(),
        format!("{}: missing tensor 'model.layers.1.mlp.ffn_sub_norm.weight'", c.path("model.safetensors"))
    );
}

#[test]
fn missing_weight_scale() {
    let mut c = case(Layout::Packed("bitlinear"));
    c.rewrite_weights(|m| {
        m.tensors.remove("model.layers.0.self_attn.o_proj.weight_scale");
    });
    assert_eq!(
        c.fails(),
        format!("{}: missing tensor 'model.layers.0.self_attn.o_proj.weight_scale'", c.path("model.safetensors"))
    );
}

#[test]
fn missing_weights_and_tokenizer() {
    let c = case(Layout::Latent(Dtype::BF16));
    fs::remove_file(c.dir.join("tokenizer.json")).unwrap();
    let msg = c.fails();
    assert!(msg.starts_with(&format!("{}: missing", c.path("tokenizer.json"))), "{msg}");
    fs::remove_file(c.dir.join("model.safetensors")).unwrap();
    let msg = c.fails();
    assert!(msg.starts_with(&format!("{}: missing", c.path("model.safetensors"))), "{msg}");
}

#[test]
fn unsupported_pre_tokenizer() {
    let c = case(Layout::Latent(Dtype::BF16));
    write_json(&c.dir.join("tokenizer.json"), &tokenizer_json(r"(?i:'s|'t)|\p{N}| ?\p{L}+"));
    let msg = c.fails();
    assert!(msg.starts_with(&format!("{}: unrecognised pre-tokenizer split regex", c.path("tokenizer.json"))), "{msg}");
    assert!(msg.contains("supported: Llama-3 regex → llama-bpe, GPT-2 regex → gpt-2"), "{msg}");
}

#[test]
fn untied_output_head() {
    let mut c = case(Layout::Latent(Dtype::BF16));
    let mut cfg = config(&MICROSOFT, FF, None);
    cfg["tie_word_embeddings"] = json!(false);
    write_json(&c.dir.join("config.json"), &cfg);
    c.rewrite_weights(|m| {
        m.tensors.insert("lm_head.weight".into(), floats(Dtype::BF16, vec![VOCAB, HIDDEN], &vec![0.5; VOCAB * HIDDEN]));
    });
    let msg = c.fails();
    assert!(msg.contains("tensor 'lm_head.weight': differs from model.embed_tokens.weight"), "{msg}");

    // an lm_head identical to the embedding is accepted
    c.rewrite_weights(|m| {
        let e = m.tensors["model.embed_tokens.weight"].clone();
        m.tensors.insert("lm_head.weight".into(), e);
    });
    convert(&c.dir, &c.out(), &ConvertOptions::default()).unwrap();
}

#[test]
fn tokenizer_larger_than_embedding() {
    let c = case(Layout::Latent(Dtype::BF16));
    let mut tok = tokenizer_json(LLAMA3_REGEX);
    tok["added_tokens"].as_array_mut().unwrap().push(json!({"id": 400, "content": "<|x|>", "special": true}));
    write_json(&c.dir.join("tokenizer.json"), &tok);
    let msg = c.fails();
    assert!(msg.contains("401 tokens but the model's embedding has only 272 rows"), "{msg}");
}
