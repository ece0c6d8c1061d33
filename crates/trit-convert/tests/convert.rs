//! End-to-end conversions of tiny generated checkpoints, read back with trit-gguf.

mod common;

use std::path::Path;

use common::*;
use safetensors::Dtype;
use trit_convert::{convert, ConvertOptions, EmbeddingType, WeightType};
use trit_gguf::{quant, GgmlType, GgufFile, Value};

fn opts(weight_type: WeightType) -> ConvertOptions {
    ConvertOptions { weight_type, ..ConvertOptions::default() }
}

/// Reads the codes of a TQ tensor and checks every block scale is 1.0.
fn read_codes(f: &GgufFile, name: &str) -> Vec<i8> {
    let info = f.tensor_info(name).unwrap_or_else(|| panic!("no tensor {name}"));
    let data = f.tensor_data(name).unwrap();
    let mut codes = Vec::new();
    let d = match info.ty {
        GgmlType::TQ2_0 => quant::unpack_tq2_0(data, &mut codes).unwrap(),
        GgmlType::TQ1_0 => quant::unpack_tq1_0(data, &mut codes).unwrap(),
        other => panic!("{name} is {other}"),
    };
    assert!(d.iter().all(|&d| d == 1.0), "{name}: block scales {d:?}");
    codes
}

fn read_f32(f: &GgufFile, name: &str) -> Vec<f32> {
    f.tensor_data(name).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn gguf_proj(hf: &str) -> &'static str {
    match hf {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => unreachable!(),
    }
}

/// Checks metadata, tensor list and every projection's codes and scale.
fn check_output(path: &Path, model: &Model, ff: usize, weight_type: WeightType, act: &str) {
    let f = GgufFile::open(path).unwrap();
    let s = |k: &str| f.get_str(k).unwrap().to_string();
    let u = |k: &str| f.get_u64(k).unwrap() as usize;
    assert_eq!(s("general.architecture"), "bitnet");
    assert_eq!(u("general.file_type"), weight_type.file_type() as usize);
    assert_eq!(u("bitnet.block_count"), LAYERS);
    assert_eq!(u("bitnet.embedding_length"), HIDDEN);
    assert_eq!(u("bitnet.feed_forward_length"), ff);
    assert_eq!(u("bitnet.attention.head_count"), HEADS);
    assert_eq!(u("bitnet.attention.head_count_kv"), KV_HEADS);
    assert_eq!(u("bitnet.rope.dimension_count"), HEAD_DIM);
    assert_eq!(u("bitnet.context_length"), 1024);
    assert_eq!(u("bitnet.vocab_size"), VOCAB);
    assert_eq!(f.get("bitnet.rope.freq_base"), Some(&Value::F32(500000.0)));
    assert_eq!(f.get("bitnet.attention.layer_norm_rms_epsilon"), Some(&Value::F32(1e-5)));
    assert_eq!(s("bitnet.hidden_activation"), act);
    assert_eq!(s("tokenizer.ggml.model"), "gpt2");
    assert_eq!(s("tokenizer.ggml.pre"), "llama-bpe");
    let (_, tokens) = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), VOCAB);
    assert_eq!(tokens[32].as_str(), Some("Ġ"));
    assert_eq!(tokens[271].as_str(), Some("[PAD271]"));
    let (_, types) = f.get("tokenizer.ggml.token_type").unwrap().as_array().unwrap();
    assert_eq!(types[65], Value::I32(1));
    assert_eq!(types[258], Value::I32(3));
    assert_eq!(types[271], Value::I32(5));
    assert_eq!(f.get("tokenizer.ggml.merges"), Some(&Value::string_array(["Ġ t", "h e"])));
    assert_eq!(u("tokenizer.ggml.bos_token_id"), 258);
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 260);
    assert_eq!(f.get("tokenizer.ggml.add_bos_token"), Some(&Value::Bool(true)));
    assert_eq!(s("tokenizer.chat_template"), "{{ messages }}");

    // Tensor list: embedding, 11 (+7 scales) per block, output norm, no output head.
    let ternary = weight_type != WeightType::F16;
    let n_f16_fallbacks = if ternary && ff % 256 != 0 { LAYERS } else { 0 };
    let per_layer = 11 + if ternary { 7 } else { 0 };
    assert_eq!(f.tensors().len(), 2 + LAYERS * per_layer - n_f16_fallbacks);
    assert!(f.tensor_info("output.weight").is_none());
    let emb = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!(emb.ne, vec![HIDDEN as u64, VOCAB as u64]);
    let on = f.tensor_info("output_norm.weight").unwrap();
    assert_eq!((on.ty, on.ne.clone()), (GgmlType::F32, vec![HIDDEN as u64]));
    let sub = f.tensor_info("blk.1.ffn_sub_norm.weight").unwrap();
    assert_eq!((sub.ty, sub.ne.clone()), (GgmlType::F32, vec![ff as u64]));
    let sub = read_f32(&f, "blk.0.attn_sub_norm.weight");
    assert_eq!(sub[3], 1.0 + 3.0 / 128.0);

    for (hf, (codes, out, inp)) in &model.codes {
        let (layer, proj) =
            hf.strip_prefix("model.layers.").unwrap().strip_suffix(".weight").unwrap().split_once('.').unwrap();
        let name = format!("blk.{layer}.{}.weight", gguf_proj(proj));
        let info = f.tensor_info(&name).unwrap();
        assert_eq!(info.ne, vec![*inp as u64, *out as u64], "{name}");
        let want_scale = model.scales[hf];
        let scale_name = format!("blk.{layer}.{}.scale", gguf_proj(proj));
        if info.ty.is_ternary() {
            assert_eq!(info.ty, weight_type.ggml_type());
            // codes come back in HF row order: q/k rows are not permuted (NEOX rope)
            assert!(read_codes(&f, &name) == *codes, "{name}: codes differ");
            let scale = read_f32(&f, &scale_name);
            assert_eq!(f.tensor_info(&scale_name).unwrap().ne, vec![1]);
            assert!((scale[0] - want_scale).abs() <= want_scale * 1e-5, "{name}: scale {} vs {want_scale}", scale[0]);
        } else {
            assert_eq!(info.ty, GgmlType::F16);
            assert!(f.tensor_info(&scale_name).is_none());
            let mut vals = Vec::new();
            quant::f16_bytes_to_f32(f.tensor_data(&name).unwrap(), &mut vals);
            for (i, (&v, &c)) in vals.iter().zip(codes).enumerate() {
                let want = f32::from(c) * want_scale;
                assert!((v - want).abs() <= want.abs() * 1e-3 + 1e-7, "{name}[{i}]: {v} vs {want}");
            }
        }
    }
}

#[test]
fn bf16_latent_2b4t_layout_to_tq2_0() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build_model(&MICROSOFT, Layout::Latent(Dtype::BF16), FF, 1);
    let dir = write_dir(tmp.path(), "bitnet-tiny", &MICROSOFT, &model, FF, None);
    let out = tmp.path().join("out.gguf");
    let report = convert(&dir, &out, &opts(WeightType::Tq2_0)).unwrap();
    assert_eq!(report.output, out);
    assert_eq!(report.source_architecture, "BitNetForCausalLM");
    assert_eq!(report.tokenizer, "gpt2/llama-bpe");
    assert_eq!(report.n_tokens, VOCAB);
    assert!(report.f16_fallbacks.is_empty());
    check_output(&out, &model, FF, WeightType::Tq2_0, "relu2");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str("general.name").unwrap(), "bitnet-tiny");
    assert_eq!(f.tensor_info("token_embd.weight").unwrap().ty, GgmlType::F16);
    // embedding rows keep HF order: row 5 of the F16 embedding is HF row 5
    let mut emb = Vec::new();
    quant::f16_bytes_to_f32(f.tensor_data("token_embd.weight").unwrap(), &mut emb);
    let want = half::bf16::from_f32(model.embedding[5 * HIDDEN + 7]).to_f32();
    assert!((emb[5 * HIDDEN + 7] - want).abs() < 1e-4);
    assert_eq!(files_in(tmp.path()), ["bitnet-tiny", "out.gguf"]);
}

#[test]
fn latent_to_tq1_0_and_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build_model(&MICROSOFT, Layout::Latent(Dtype::F32), FF, 2);
    let dir = write_dir(tmp.path(), "m", &MICROSOFT, &model, FF, None);
    for wt in [WeightType::Tq1_0, WeightType::F16] {
        let out = tmp.path().join(format!("{wt}.gguf"));
        convert(&dir, &out, &opts(wt)).unwrap();
        check_output(&out, &model, FF, wt, "relu2");
    }
}

#[test]
fn packed_bitlinear_and_autobitlinear() {
    for class in ["bitlinear", "autobitlinear"] {
        let tmp = tempfile::tempdir().unwrap();
        let model = build_model(&MICROSOFT, Layout::Packed(class), FF, 3);
        let dir = write_dir(tmp.path(), "packed", &MICROSOFT, &model, FF, Some(class));
        let out = tmp.path().join("p.gguf");
        convert(&dir, &out, &opts(WeightType::Tq2_0)).unwrap();
        check_output(&out, &model, FF, WeightType::Tq2_0, "relu2");
    }
}

#[test]
fn onebitllm_family_with_f16_fallback_and_q8_embedding() {
    // FFN 384 is not a multiple of 256: ffn_down (384 inputs) must fall back to F16.
    let ff = 384;
    let tmp = tempfile::tempdir().unwrap();
    let model = build_model(&ONEBIT, Layout::Latent(Dtype::F16), ff, 4);
    let dir = write_dir(tmp.path(), "onebit", &ONEBIT, &model, ff, None);
    let out = tmp.path().join("o.gguf");
    let o = ConvertOptions {
        weight_type: WeightType::Tq2_0,
        embedding_type: EmbeddingType::Q8_0,
        name: Some("one-bit".into()),
        progress: false,
    };
    let report = convert(&dir, &out, &o).unwrap();
    assert_eq!(report.f16_fallbacks, ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"]);
    check_output(&out, &model, ff, WeightType::Tq2_0, "silu");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str("general.name").unwrap(), "one-bit");
    assert_eq!(f.tensor_info("token_embd.weight").unwrap().ty, GgmlType::Q8_0);
    assert!(f.tensor_info("blk.0.attn_sub_norm.weight").is_some());
}

#[test]
fn sharded_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build_model(&MICROSOFT, Layout::Latent(Dtype::BF16), FF, 5);
    let dir = write_dir(tmp.path(), "sharded", &MICROSOFT, &model, FF, None);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (a, b): (Vec<_>, Vec<_>) =
        model.tensors.iter().partition(|(n, _)| n.contains("layers.0.") || n.contains("embed"));
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", &a), ("model-00002-of-00002.safetensors", &b)] {
        let part: std::collections::BTreeMap<String, RawTensor> =
            part.iter().map(|(n, t)| ((*n).clone(), (*t).clone())).collect();
        write_safetensors(&dir.join(file), &part);
        for n in part.keys() {
            map.insert(n.clone(), serde_json::json!(file));
        }
    }
    write_json(&dir.join("model.safetensors.index.json"), &serde_json::json!({"metadata": {}, "weight_map": map}));
    let out = tmp.path().join("s.gguf");
    convert(&dir, &out, &opts(WeightType::Tq2_0)).unwrap();
    check_output(&out, &model, FF, WeightType::Tq2_0, "relu2");
}
