//! Builders for tiny Hugging Face model directories used by the conversion tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

pub const HIDDEN: usize = 256;
pub const FF: usize = 512;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 64;
pub const LAYERS: usize = 2;
pub const VOCAB: usize = 272;

/// Deterministic pseudo-random numbers.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
    pub fn code(&mut self) -> i8 {
        (self.next_u32() % 3) as i8 - 1
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() as f32 / (1u64 << 31) as f32) - 1.0
    }
}

/// One tensor to write: dtype, shape, raw little-endian bytes.
#[derive(Clone)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn floats(dtype: Dtype, shape: Vec<usize>, values: &[f32]) -> RawTensor {
    let data = match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        other => panic!("floats({other:?})"),
    };
    RawTensor { dtype, shape, data }
}

/// transformers' `pack_weights`: output row `r = i·(out/4) + p` goes to packed row `p`, bits `2i`.
pub fn pack_transformers(codes: &[i8], out: usize, inp: usize) -> RawTensor {
    let p_rows = out / 4;
    let mut data = vec![0u8; p_rows * inp];
    for r in 0..out {
        let (p, i) = (r % p_rows, r / p_rows);
        for c in 0..inp {
            data[p * inp + c] |= ((codes[r * inp + c] + 1) as u8) << (2 * i);
        }
    }
    RawTensor { dtype: Dtype::U8, shape: vec![p_rows, inp], data }
}

/// How the projections are stored in the checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// Latent float weights `code · 0.02 + noise` (absmean ternarisation recovers `code`).
    Latent(Dtype),
    /// 2-bit packed with `weight_scale`, transformers `linear_class`.
    Packed(&'static str),
}

/// A generated checkpoint plus the ternary codes and scales the converter should find.
pub struct Model {
    pub tensors: BTreeMap<String, RawTensor>,
    /// HF projection name → (codes [out·inp], out, inp).
    pub codes: BTreeMap<String, (Vec<i8>, usize, usize)>,
    /// HF projection name → effective per-tensor scale.
    pub scales: BTreeMap<String, f32>,
    pub embedding: Vec<f32>,
}

pub struct Family {
    pub arch: &'static str,
    pub attn_sub: &'static str,
    pub ffn_sub: &'static str,
    pub act: &'static str,
}

pub const MICROSOFT: Family = Family {
    arch: "BitNetForCausalLM",
    attn_sub: "self_attn.attn_sub_norm",
    ffn_sub: "mlp.ffn_sub_norm",
    act: "relu2",
};

pub const ONEBIT: Family = Family {
    arch: "BitnetForCausalLM",
    attn_sub: "self_attn.inner_attn_ln",
    ffn_sub: "mlp.ffn_layernorm",
    act: "silu",
};

pub fn projections(ff: usize) -> Vec<(&'static str, usize, usize)> {
    let kv = KV_HEADS * HEAD_DIM;
    vec![
        ("self_attn.q_proj", HIDDEN, HIDDEN),
        ("self_attn.k_proj", kv, HIDDEN),
        ("self_attn.v_proj", kv, HIDDEN),
        ("self_attn.o_proj", HIDDEN, HIDDEN),
        ("mlp.gate_proj", ff, HIDDEN),
        ("mlp.up_proj", ff, HIDDEN),
        ("mlp.down_proj", HIDDEN, ff),
    ]
}

pub fn build_model(family: &Family, layout: Layout, ff: usize, seed: u64) -> Model {
    let mut rng = Lcg(seed);
    let mut tensors = BTreeMap::new();
    let mut codes_map = BTreeMap::new();
    let mut scales = BTreeMap::new();
    let fdt = match layout {
        Layout::Latent(d) => d,
        Layout::Packed(_) => Dtype::BF16,
    };
    let embedding: Vec<f32> = (0..VOCAB * HIDDEN).map(|_| rng.unit() * 0.05).collect();
    tensors.insert("model.embed_tokens.weight".into(), floats(fdt, vec![VOCAB, HIDDEN], &embedding));
    tensors.insert("model.norm.weight".into(), floats(fdt, vec![HIDDEN], &vec![1.0; HIDDEN]));
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}.");
        for (norm, n) in [
            ("input_layernorm", HIDDEN),
            ("post_attention_layernorm", HIDDEN),
            (family.attn_sub, HIDDEN),
            (family.ffn_sub, ff),
        ] {
            let v: Vec<f32> = (0..n).map(|i| 1.0 + (i % 64) as f32 / 128.0).collect();
            tensors.insert(format!("{p}{norm}.weight"), floats(fdt, vec![n], &v));
        }
        for (proj, out, inp) in projections(ff) {
            let codes: Vec<i8> = (0..out * inp).map(|_| rng.code()).collect();
            let name = format!("{p}{proj}.weight");
            match layout {
                Layout::Latent(dtype) => {
                    let w: Vec<f32> = codes.iter().map(|&c| f32::from(c) * 0.02 + rng.unit() * 0.003).collect();
                    let t = floats(dtype, vec![out, inp], &w);
                    // expected scale: mean |w| of the stored (rounded) values
                    let mut stored = Vec::new();
                    decode(&t, &mut stored);
                    let mean = stored.iter().map(|v| f64::from(v.abs())).sum::<f64>() / stored.len() as f64;
                    scales.insert(name.clone(), mean as f32);
                    tensors.insert(name.clone(), t);
                }
                Layout::Packed(class) => {
                    tensors.insert(name.clone(), pack_transformers(&codes, out, inp));
                    let ws = 1.0 + ((l * 7 + out) % 16) as f32 / 16.0; // exact in bf16
                    tensors.insert(format!("{p}{proj}.weight_scale"), floats(Dtype::BF16, vec![1], &[ws]));
                    let eff = if class == "bitlinear" { 1.0 / ws } else { ws };
                    scales.insert(name.clone(), eff);
                }
            }
            codes_map.insert(name, (codes, out, inp));
        }
    }
    Model { tensors, codes: codes_map, scales, embedding }
}

pub fn decode(t: &RawTensor, out: &mut Vec<f32>) {
    out.clear();
    match t.dtype {
        Dtype::F32 => out.extend(t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
        Dtype::F16 => out.extend(t.data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::BF16 => out.extend(t.data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        other => panic!("decode({other:?})"),
    }
}

pub fn config(family: &Family, ff: usize, packed: Option<&str>) -> Value {
    let mut c = json!({
        "architectures": [family.arch],
        "hidden_size": HIDDEN,
        "intermediate_size": ff,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "hidden_act": family.act,
        "tie_word_embeddings": true,
        "bos_token_id": 258,
        "eos_token_id": 259,
    });
    if let Some(class) = packed {
        c["quantization_config"] =
            json!({"quant_method": "bitnet", "linear_class": class, "quantization_mode": "offline"});
    }
    c
}

/// GPT-2's byte → character map.
pub fn byte_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub fn tokenizer_json(pre_regex: &str) -> Value {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b));
    }
    vocab.insert("Ġt".into(), json!(256));
    vocab.insert("he".into(), json!(257));
    json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 258, "content": "<|begin_of_text|>", "special": true},
            {"id": 259, "content": "<|end_of_text|>", "special": true},
            {"id": 260, "content": "<|eot_id|>", "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pre_regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ t", ["h", "e"]]}
    })
}

pub fn write_json(path: &Path, v: &Value) {
    fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, RawTensor>) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, t)| (n.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes a complete model directory; returns its path.
pub fn write_dir(root: &Path, name: &str, family: &Family, model: &Model, ff: usize, packed: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    write_json(&dir.join("config.json"), &config(family, ff, packed));
    write_json(&dir.join("tokenizer.json"), &tokenizer_json(LLAMA3_REGEX));
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}, "chat_template": "{{ messages }}", "add_bos_token": true}),
    );
    write_json(&dir.join("generation_config.json"), &json!({"bos_token_id": 258, "eos_token_id": [259, 260]}));
    write_safetensors(&dir.join("model.safetensors"), &model.tensors);
    dir
}

/// Files left in a directory (to check no partial output remains).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
