//! `config.json`: architecture detection and hyper-parameters.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ConvertError, Result};
use crate::json_file;

/// Architectures this converter understands, for error messages.
pub(crate) const SUPPORTED: &str =
    "BitNetForCausalLM (microsoft bitnet-b1.58), BitnetForCausalLM (1bitLLM bitnet_b1_58)";

/// Which checkpoint family, and so which tensor names and activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `BitNetForCausalLM` (transformers' own; microsoft/bitnet-b1.58-2B-4T).
    MicrosoftBitNet,
    /// `BitnetForCausalLM` (1bitLLM/bitnet_b1_58-*: remote code on top of Llama).
    OneBitLlm,
}

impl Family {
    /// HF names of the two sub-norms, relative to `model.layers.N.`.
    pub(crate) fn sub_norm_names(self) -> (&'static str, &'static str) {
        match self {
            Family::MicrosoftBitNet => ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm"),
            Family::OneBitLlm => ("self_attn.inner_attn_ln", "mlp.ffn_layernorm"),
        }
    }
}

/// FFN gate activation, written as `bitnet.hidden_activation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Relu2,
    Silu,
}

impl Activation {
    pub(crate) fn gguf_name(self) -> &'static str {
        match self {
            Activation::Relu2 => "relu2",
            Activation::Silu => "silu",
        }
    }
}

/// How a packed checkpoint's `weight_scale` relates to the ternary codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinearClass {
    /// transformers `BitLinear`: `y = (x · codesᵀ) / weight_scale`.
    BitLinear,
    /// transformers `AutoBitLinear` (offline): `y = (x · codesᵀ) · weight_scale`.
    AutoBitLinear,
}

#[derive(Debug, Clone)]
pub(crate) struct QuantConfig {
    pub(crate) linear_class: LinearClass,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    pub(crate) path: PathBuf,
    pub(crate) arch: String,
    pub(crate) family: Family,
    pub(crate) hidden: usize,
    pub(crate) ff: usize,
    pub(crate) n_layers: usize,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) head_dim: usize,
    pub(crate) vocab: usize,
    pub(crate) context: usize,
    pub(crate) rms_eps: f32,
    pub(crate) rope_theta: f32,
    pub(crate) activation: Activation,
    /// `tie_word_embeddings` as written, if it is.
    pub(crate) tie_embeddings: Option<bool>,
    pub(crate) quant: Option<QuantConfig>,
    pub(crate) bos_id: Option<u32>,
    pub(crate) eos_id: Option<u32>,
    pub(crate) pad_id: Option<u32>,
}

struct Fields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Fields<'_> {
    fn err(&self, detail: String) -> ConvertError {
        ConvertError::Config { path: self.path.to_path_buf(), detail }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.err(format!("missing integer field '{key}'")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(format!("field '{key}' must be a positive 32-bit integer, found {x}"))),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => {
                x.as_f64().map(Some).ok_or_else(|| self.err(format!("field '{key}' must be a number, found {x}")))
            }
        }
    }

    fn opt_str(&self, key: &str) -> Option<&str> {
        self.v.get(key).and_then(Value::as_str)
    }

    /// A token id, or the first of a list of ids.
    fn opt_token_id(&self, key: &str) -> Option<u32> {
        token_id(self.v.get(key)?)
    }
}

/// A token id given as a number or as a list whose first entry is used.
pub(crate) fn token_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::Array(items) => items.first().and_then(token_id),
        _ => None,
    }
}

impl ModelConfig {
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v = json_file::read_required(&path, "the model configuration")?;
        Self::from_json(&path, &v)
    }

    pub(crate) fn from_json(path: &Path, v: &Value) -> Result<Self> {
        let f = Fields { path, v };
        let arch = v
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| f.err("missing 'architectures' (expected e.g. [\"BitNetForCausalLM\"])".into()))?
            .to_string();

        let quant = parse_quant(&f)?;
        let family = match arch.as_str() {
            "BitNetForCausalLM" => Family::MicrosoftBitNet,
            "BitnetForCausalLM" => Family::OneBitLlm,
            "LlamaForCausalLM" if quant.is_some() => {
                return Err(ConvertError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    arch,
                    reason: "Llama-architecture BitNet models (Falcon3-1.58bit, Llama3-8B-1.58) have no \
                             attn_sub_norm/ffn_sub_norm, which llama.cpp's bitnet graph requires, and \
                             llama.cpp's llama graph does not read per-tensor ternary scales"
                        .into(),
                })
            }
            _ => {
                return Err(ConvertError::UnknownArchitecture { path: path.to_path_buf(), arch, supported: SUPPORTED })
            }
        };

        let hidden = f.usize("hidden_size")?;
        let n_head = f.usize("num_attention_heads")?;
        let n_kv_head = f.opt_usize("num_key_value_heads")?.unwrap_or(n_head);
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(hidden / n_head);
        if head_dim * n_head != hidden {
            return Err(f.err(format!(
                "num_attention_heads ({n_head}) × head_dim ({head_dim}) must equal hidden_size ({hidden}) for llama.cpp's bitnet graph"
            )));
        }
        if n_head % n_kv_head != 0 {
            return Err(f.err(format!(
                "num_attention_heads ({n_head}) is not a multiple of num_key_value_heads ({n_kv_head})"
            )));
        }
        let rope_theta = match f.opt_f64("rope_theta")? {
            Some(t) => t,
            None => v.get("rope_parameters").and_then(|r| r.get("rope_theta")).and_then(Value::as_f64).unwrap_or(
                match family {
                    Family::MicrosoftBitNet => 500_000.0,
                    Family::OneBitLlm => 10_000.0,
                },
            ),
        };
        check_rope_scaling(&f)?;
        let act_name = f.opt_str("hidden_act").unwrap_or(match family {
            Family::MicrosoftBitNet => "relu2",
            Family::OneBitLlm => "silu",
        });
        let activation = match act_name {
            "relu2" => Activation::Relu2,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(f.err(format!(
                    "hidden_act '{other}' is not supported (llama.cpp's bitnet graph knows relu2 and silu)"
                )))
            }
        };
        if v.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err(f.err("attention_bias = true is not supported by llama.cpp's bitnet graph".into()));
        }

        Ok(ModelConfig {
            path: path.to_path_buf(),
            family,
            hidden,
            ff: f.usize("intermediate_size")?,
            n_layers: f.usize("num_hidden_layers")?,
            n_head,
            n_kv_head,
            head_dim,
            vocab: f.usize("vocab_size")?,
            context: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            rms_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-5) as f32,
            rope_theta: rope_theta as f32,
            activation,
            tie_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool),
            quant,
            bos_id: f.opt_token_id("bos_token_id"),
            eos_id: f.opt_token_id("eos_token_id"),
            pad_id: f.opt_token_id("pad_token_id"),
            arch,
        })
    }
}

fn parse_quant(f: &Fields<'_>) -> Result<Option<QuantConfig>> {
    let Some(q) = f.v.get("quantization_config").filter(|q| !q.is_null()) else {
        return Ok(None);
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    if method != "bitnet" {
        return Err(f.err(format!("quantization_config.quant_method '{method}' is not supported (only 'bitnet')")));
    }
    let linear_class = match q.get("linear_class").and_then(Value::as_str).unwrap_or("bitlinear") {
        "bitlinear" => LinearClass::BitLinear,
        "autobitlinear" => LinearClass::AutoBitLinear,
        other => {
            return Err(f.err(format!(
                "quantization_config.linear_class '{other}' is not supported (bitlinear, autobitlinear)"
            )))
        }
    };
    if q.get("use_rms_norm").and_then(Value::as_bool) == Some(true) {
        return Err(f.err(
            "quantization_config.use_rms_norm = true (an extra RMSNorm before every linear) is not supported by llama.cpp's bitnet graph".into(),
        ));
    }
    Ok(Some(QuantConfig { linear_class }))
}

fn check_rope_scaling(f: &Fields<'_>) -> Result<()> {
    let scaling = f.v.get("rope_scaling").filter(|s| !s.is_null()).or_else(|| {
        f.v.get("rope_parameters")
            .filter(|p| p.get("rope_type").and_then(Value::as_str).is_some_and(|t| t != "default"))
    });
    if let Some(s) = scaling {
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("?");
        let factor = s.get("factor").and_then(Value::as_f64).unwrap_or(1.0);
        if !(kind == "default" || (kind == "linear" && factor == 1.0)) {
            return Err(
                f.err(format!("rope scaling '{kind}' (factor {factor}) is not supported for the bitnet architecture"))
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["BitNetForCausalLM"],
            "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30,
            "num_attention_heads": 20, "num_key_value_heads": 5, "vocab_size": 128256,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "hidden_act": "relu2", "tie_word_embeddings": true,
            "bos_token_id": 128000, "eos_token_id": [128001, 128009]
        })
    }

    #[test]
    fn parses_2b4t() {
        let c = ModelConfig::from_json(Path::new("config.json"), &base()).unwrap();
        assert_eq!(c.family, Family::MicrosoftBitNet);
        assert_eq!((c.head_dim, c.n_kv_head, c.context), (128, 5, 4096));
        assert_eq!(c.activation, Activation::Relu2);
        assert_eq!(c.eos_id, Some(128001));
        assert!(c.quant.is_none());
    }

    #[test]
    fn rope_parameters_and_quant_config() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = json!({"rope_theta": 123.0, "rope_type": "default"});
        v["quantization_config"] =
            json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"});
        let c = ModelConfig::from_json(Path::new("config.json"), &v).unwrap();
        assert_eq!(c.rope_theta, 123.0);
        assert_eq!(c.quant.unwrap().linear_class, LinearClass::AutoBitLinear);
    }

    #[test]
    fn architecture_errors() {
        let mut v = base();
        v["architectures"] = json!(["MistralForCausalLM"]);
        let e = ModelConfig::from_json(Path::new("m/config.json"), &v).unwrap_err().to_string();
        assert!(e.starts_with("m/config.json: unknown architecture 'MistralForCausalLM'"), "{e}");
        v["architectures"] = json!(["LlamaForCausalLM"]);
        v["quantization_config"] = json!({"quant_method": "bitnet"});
        let e = ModelConfig::from_json(Path::new("m/config.json"), &v).unwrap_err().to_string();
        assert!(e.contains("architecture 'LlamaForCausalLM' is not supported"), "{e}");
    }
}
