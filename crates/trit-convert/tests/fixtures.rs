//! Converts the transformers-generated fixtures in `tests/fixtures/` (see FORMAT.md there).
//! The three model layouts hold bit-identical weights, so their GGUFs must agree tensor for
//! tensor: latent bf16 ternarised with absmean == packed uint8 with 1/weight_scale == latent
//! fp16 under 1bitLLM names.

use std::path::{Path, PathBuf};

use trit_convert::{convert, ConvertOptions, WeightType};
use trit_gguf::{GgmlType, GgufFile, Value};

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    dir.join("bitnet-2b4t-bf16/config.json").exists().then_some(dir)
}

fn convert_fixture(root: &Path, name: &str, out_dir: &Path, wt: WeightType) -> GgufFile {
    let out = out_dir.join(format!("{name}-{wt}.gguf"));
    let opts = ConvertOptions { weight_type: wt, ..ConvertOptions::default() };
    let report = convert(&root.join(name), &out, &opts).unwrap();
    assert!(report.f16_fallbacks.is_empty());
    GgufFile::open(&out).unwrap()
}

#[test]
fn fixtures_convert_identically() {
    let Some(root) = fixtures() else {
        eprintln!("tests/fixtures not present; skipping");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for wt in [WeightType::Tq2_0, WeightType::Tq1_0, WeightType::F16] {
        let bf16 = convert_fixture(&root, "bitnet-2b4t-bf16", tmp.path(), wt);
        let packed = convert_fixture(&root, "bitnet-2b4t-packed", tmp.path(), wt);
        let onebit = convert_fixture(&root, "bitnet-1bitllm", tmp.path(), wt);

        for f in [&bf16, &packed, &onebit] {
            assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet");
            assert_eq!(f.get_u64("bitnet.block_count").unwrap(), 2);
            assert_eq!(f.get_u64("bitnet.vocab_size").unwrap(), 512);
            assert_eq!(f.get_u64("bitnet.context_length").unwrap(), 256);
            assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
            assert_eq!(f.get_u64("tokenizer.ggml.bos_token_id").unwrap(), 480);
            assert_eq!(f.get_u64("tokenizer.ggml.eos_token_id").unwrap(), 481);
            assert_eq!(f.get("tokenizer.ggml.add_bos_token"), Some(&Value::Bool(true)));
            assert!(f.get_str("tokenizer.chat_template").unwrap().contains("<|start_header_id|>"));
            let (_, types) = f.get("tokenizer.ggml.token_type").unwrap().as_array().unwrap();
            assert_eq!(types.len(), 512);
            assert_eq!(types[100], Value::I32(1));
            assert_eq!(types[484], Value::I32(3));
            assert_eq!(types[511], Value::I32(3));
            let n_scale = f.tensors().iter().filter(|t| t.name.ends_with(".scale")).count();
            assert_eq!(n_scale, if wt == WeightType::F16 { 0 } else { 14 });
        }
        assert_eq!(bf16.get_str("bitnet.hidden_activation").unwrap(), "relu2");
        assert_eq!(packed.get_str("bitnet.hidden_activation").unwrap(), "relu2");
        assert_eq!(onebit.get_str("bitnet.hidden_activation").unwrap(), "silu");

        let names: Vec<&str> = bf16.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), packed.tensors().len());
        assert_eq!(names.len(), onebit.tensors().len());
        for name in names {
            let a = bf16.tensor_data(name).unwrap();
            assert!(a == packed.tensor_data(name).unwrap(), "{wt}: {name} differs bf16 vs packed");
            assert!(a == onebit.tensor_data(name).unwrap(), "{wt}: {name} differs bf16 vs 1bitllm");
            if name.ends_with(".scale") {
                let s = f32::from_le_bytes(a.try_into().unwrap());
                assert!([0.125, 0.0625, 0.03125].contains(&s), "{name}: scale {s}");
            }
            let info = bf16.tensor_info(name).unwrap();
            if name.ends_with("attn_q.weight") {
                assert_eq!(info.ty, if wt == WeightType::F16 { GgmlType::F16 } else { wt.ggml_type() });
            }
        }
    }
}
