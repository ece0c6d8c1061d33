//! Synthetic models and the SentencePiece tokenizer path.

mod common;

use common::*;
use safetensors::Dtype;
use serde_json::json;
use trit_convert::{convert, synth, ConvertOptions, SynthPreset, WeightType};
use trit_gguf::{quant, GgmlType, GgufFile, Value};

#[test]
fn tiny_synth_is_a_complete_bitnet_file() {
    let tmp = tempfile::tempdir().unwrap();
    for wt in [WeightType::Tq2_0, WeightType::Tq1_0, WeightType::F16] {
        let out = tmp.path().join(format!("tiny-{wt}.gguf"));
        let report = synth(SynthPreset::Tiny, &out, wt, 42).unwrap();
        assert_eq!(report.n_tokens, 1024);
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet");
        assert_eq!(f.get_u64("bitnet.block_count").unwrap(), 2);
        assert_eq!(f.get_str("bitnet.hidden_activation").unwrap(), "relu2");
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        let (_, tokens) = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
        assert_eq!(tokens.len(), 1024);
        let per_layer = if wt == WeightType::F16 { 11 } else { 18 };
        assert_eq!(f.tensors().len(), 2 + 2 * per_layer);
        assert_eq!(report.n_tensors, f.tensors().len());
        let q = f.tensor_info("blk.1.attn_q.weight").unwrap();
        assert_eq!(q.ty, wt.ggml_type());
        if wt == WeightType::Tq2_0 {
            let mut codes = Vec::new();
            let d = quant::unpack_tq2_0(f.tensor_data("blk.1.ffn_down.weight").unwrap(), &mut codes).unwrap();
            assert!(d.iter().all(|&d| d == 1.0));
            assert!(codes.iter().all(|c| (-1..=1).contains(c)));
            // all three codes occur, roughly uniformly
            let zeros = codes.iter().filter(|&&c| c == 0).count() as f64 / codes.len() as f64;
            assert!((zeros - 1.0 / 3.0).abs() < 0.02, "{zeros}");
        }
    }
    // same seed, same bytes
    let a = tmp.path().join("a.gguf");
    let b = tmp.path().join("b.gguf");
    synth(SynthPreset::Tiny, &a, WeightType::Tq2_0, 7).unwrap();
    synth(SynthPreset::Tiny, &b, WeightType::Tq2_0, 7).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// A hand-encoded SentencePiece model: field 1 pieces (piece, score, type), field 2 trainer
/// ids, field 3 normalizer `add_dummy_prefix`.
fn spm_model(n_pieces: usize) -> Vec<u8> {
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
    fn field(n: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    let mut out = Vec::new();
    for i in 0..n_pieces {
        let (text, kind) = match i {
            0 => ("<unk>".to_string(), 2u64),
            1 => ("<s>".into(), 3),
            2 => ("</s>".into(), 3),
            3..=258 => (format!("<0x{:02X}>", i - 3), 6),
            _ => (format!("▁w{i}"), 1),
        };
        let mut p = Vec::new();
        field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&(-(i as f32)).to_le_bytes());
        varint(3 << 3, &mut p);
        varint(kind, &mut p);
        field(1, &p, &mut out);
    }
    let mut trainer = Vec::new();
    for (n, v) in [(40u64, 0u64), (41, 1), (42, 2), (43, u64::MAX)] {
        varint(n << 3, &mut trainer);
        varint(v, &mut trainer);
    }
    field(2, &trainer, &mut out);
    out
}

#[test]
fn sentencepiece_tokenizer_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build_model(&ONEBIT, Layout::Latent(Dtype::F16), FF, 11);
    let dir = write_dir(tmp.path(), "spm", &ONEBIT, &model, FF, None);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    let mut cfg = config(&ONEBIT, FF, None);
    cfg["bos_token_id"] = json!(1);
    cfg["eos_token_id"] = json!(2);
    write_json(&dir.join("config.json"), &cfg);
    std::fs::write(dir.join("tokenizer.model"), spm_model(265)).unwrap();
    write_json(&dir.join("added_tokens.json"), &json!({"<pad>": 265}));

    let out = tmp.path().join("spm.gguf");
    let report = convert(&dir, &out, &ConvertOptions::default()).unwrap();
    assert_eq!(report.tokenizer, "llama");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert!(f.get("tokenizer.ggml.pre").is_none());
    let (_, tokens) = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), VOCAB);
    assert_eq!(tokens[13].as_str(), Some("<0x0A>"));
    assert_eq!(tokens[264].as_str(), Some("▁w264"));
    assert_eq!(tokens[265].as_str(), Some("<pad>"));
    assert_eq!(tokens[266].as_str(), Some("[PAD266]"));
    let (_, types) = f.get("tokenizer.ggml.token_type").unwrap().as_array().unwrap();
    assert_eq!(
        (&types[0], &types[1], &types[13], &types[264]),
        (&Value::I32(2), &Value::I32(3), &Value::I32(6), &Value::I32(1))
    );
    assert_eq!((&types[265], &types[266]), (&Value::I32(4), &Value::I32(5)));
    let (_, scores) = f.get("tokenizer.ggml.scores").unwrap().as_array().unwrap();
    assert_eq!(scores[264], Value::F32(-264.0));
    assert_eq!(scores[266], Value::F32(-1000.0));
    assert_eq!(f.get_u64("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(f.get_u64("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert_eq!(f.get_u64("tokenizer.ggml.unknown_token_id").unwrap(), 0);
    assert!(f.get("tokenizer.ggml.padding_token_id").is_none());
    assert_eq!(f.get("tokenizer.ggml.add_space_prefix"), Some(&Value::Bool(true)));
    assert_eq!(f.tensor_info("blk.0.attn_q.weight").unwrap().ty, GgmlType::TQ2_0);
}
