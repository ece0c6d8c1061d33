//! LoRA adapter GGUF files in the format llama.cpp's `llama_adapter_lora_init` loads:
//! `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and per target
//! `<base>.lora_a` with ggml shape `[n_in, r]` and `<base>.lora_b` with `[r, n_out]`, F32.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trit_gguf::{GgmlType, GgufFile, GgufWriter, Value};

/// The projections a LoRA adapter can attach to, by their trit/QVAC names.
pub const ALL_TARGETS: &[&str] = &["attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down"];

/// GGUF tensor stem (`blk.N.<stem>.weight`) of a target.
fn target_stem(target: &str) -> &str {
    match target {
        "attn_o" => "attn_output",
        t => t,
    }
}

/// Parse a `--lora-targets` list: names from [`ALL_TARGETS`], `attn_output` for `attn_o`,
/// `all`, or QVAC's `attn`/`ffn` groups. Returns the canonical sorted, de-duplicated list.
pub fn parse_targets(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let names: Vec<&str> = match item {
            "all" => ALL_TARGETS.to_vec(),
            "attn" => ALL_TARGETS[..4].to_vec(),
            "ffn" => ALL_TARGETS[4..].to_vec(),
            "attn_output" => vec!["attn_o"],
            "output" => bail!(
                "--lora-targets: 'output' is not supported: BitNet ties the output head to token_embd \
                 (choose from {})",
                ALL_TARGETS.join(",")
            ),
            t if ALL_TARGETS.contains(&t) => vec![t],
            t => bail!("--lora-targets: unknown target '{t}' (choose from {}, all)", ALL_TARGETS.join(",")),
        };
        for n in names {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    }
    if out.is_empty() {
        bail!("--lora-targets: empty list");
    }
    out.sort_by_key(|t| ALL_TARGETS.iter().position(|a| a == t));
    Ok(out)
}

/// What defines an adapter's shape: checkpoints refuse to resume with a different one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSpec {
    pub rank: u32,
    pub alpha: f32,
    pub targets: Vec<String>,
}

/// One adapted projection: the base tensor name and its LoRA factors, row-major in ggml order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// Base tensor, e.g. `blk.0.attn_q.weight`.
    pub base: String,
    pub n_in: u64,
    pub n_out: u64,
    pub rank: u64,
    /// ggml shape [n_in, r]: `a[j * n_in + i]`.
    pub a: Vec<f32>,
    /// ggml shape [r, n_out]: `b[o * r + j]`.
    pub b: Vec<f32>,
}

/// A whole adapter in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraWeights {
    pub arch: String,
    pub alpha: f32,
    /// Sorted by base tensor name.
    pub pairs: Vec<LoraPair>,
}

/// How to initialise a fresh adapter.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    pub seed: u64,
    /// Standard deviation of B (0 = PEFT's B = 0, so training starts at the base model).
    pub b_std: f32,
}

/// The base projections a spec adapts, with their (n_in, n_out), read from the base GGUF.
pub fn target_tensors(base: &GgufFile, spec: &LoraSpec) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for t in base.tensors() {
        let Some(rest) = t.name.strip_prefix("blk.") else { continue };
        let Some((_layer, tail)) = rest.split_once('.') else { continue };
        let Some(stem) = tail.strip_suffix(".weight") else { continue };
        if spec.targets.iter().any(|target| target_stem(target) == stem) {
            if t.ne.len() != 2 {
                bail!("{}: expected a 2-D projection, found shape {:?}", t.name, t.ne);
            }
            out.push((t.name.clone(), t.ne[0], t.ne[1]));
        }
    }
    if out.is_empty() {
        bail!("{}: no tensors match the LoRA targets {:?}", base.path().display(), spec.targets);
    }
    out.sort();
    Ok(out)
}

/// A fresh adapter: A from PEFT's default (Kaiming-uniform, bound 1/sqrt(n_in)), B = 0
/// (or N(0, b_std) for tests that need a non-zero starting point).
pub fn init_weights(base_path: &Path, spec: &LoraSpec, init: InitOptions) -> Result<LoraWeights> {
    if spec.rank == 0 {
        bail!("--lora-rank must be at least 1");
    }
    let base = GgufFile::open(base_path).with_context(|| format!("reading {}", base_path.display()))?;
    let arch = base.get_str(trit_gguf::KEY_ARCHITECTURE)?.to_string();
    let mut rng = StdRng::seed_from_u64(init.seed);
    let r = spec.rank as u64;
    let mut pairs = Vec::new();
    for (name, n_in, n_out) in target_tensors(&base, spec)? {
        if r > n_in.min(n_out) {
            bail!("--lora-rank {r} exceeds the smaller side of {name} ({n_in} x {n_out})");
        }
        let bound = 1.0 / (n_in as f32).sqrt();
        let a: Vec<f32> = (0..n_in * r).map(|_| rng.gen_range(-bound..bound)).collect();
        let b: Vec<f32> = if init.b_std > 0.0 {
            (0..r * n_out).map(|_| normal(&mut rng) * init.b_std).collect()
        } else {
            vec![0.0; (r * n_out) as usize]
        };
        pairs.push(LoraPair { base: name, n_in, n_out, rank: r, a, b });
    }
    Ok(LoraWeights { arch, alpha: spec.alpha, pairs })
}

/// Standard normal sample (Box–Muller; rand 0.8 keeps distributions in rand_distr).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl LoraWeights {
    /// Write the adapter GGUF (atomically: a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<PathBuf> {
        let mut w = GgufWriter::new();
        w.add_kv(trit_gguf::KEY_ARCHITECTURE, self.arch.as_str())?;
        w.add_kv("general.type", "adapter")?;
        w.add_kv("general.name", "trit LoRA adapter")?;
        w.add_kv("adapter.type", "lora")?;
        w.add_kv("adapter.lora.alpha", Value::F32(self.alpha))?;
        for p in &self.pairs {
            w.add_tensor(format!("{}.lora_a", p.base), GgmlType::F32, &[p.n_in, p.rank])?;
            w.add_tensor(format!("{}.lora_b", p.base), GgmlType::F32, &[p.rank, p.n_out])?;
        }
        let mut s = w.create(path).with_context(|| format!("creating {}", path.display()))?;
        for p in &self.pairs {
            s.write_tensor(&format!("{}.lora_a", p.base), &f32_bytes(&p.a))?;
            s.write_tensor(&format!("{}.lora_b", p.base), &f32_bytes(&p.b))?;
        }
        Ok(s.finish()?)
    }

    /// Read an adapter GGUF written by [`LoraWeights::save`] (or any F32 llama.cpp LoRA).
    pub fn load(path: &Path) -> Result<Self> {
        let f = GgufFile::open(path).with_context(|| format!("reading adapter {}", path.display()))?;
        if f.get_str("general.type").ok() != Some("adapter") || f.get_str("adapter.type").ok() != Some("lora") {
            bail!("{}: not a LoRA adapter (general.type/adapter.type)", path.display());
        }
        let arch = f.get_str(trit_gguf::KEY_ARCHITECTURE)?.to_string();
        let alpha = f.get_f64("adapter.lora.alpha").unwrap_or(0.0) as f32;
        let read = |name: &str| -> Result<(Vec<f32>, Vec<u64>)> {
            let info = f.tensor_info(name).with_context(|| format!("{}: missing {name}", path.display()))?;
            if info.ty != GgmlType::F32 {
                bail!("{}: {name} is {:?}, trit reads F32 adapters only", path.display(), info.ty);
            }
            let bytes = f.tensor_data(name)?;
            let v = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok((v, info.ne.clone()))
        };
        let mut pairs = Vec::new();
        for t in f.tensors() {
            let Some(base) = t.name.strip_suffix(".lora_a") else { continue };
            let (a, ne_a) = read(&t.name)?;
            let (b, ne_b) = read(&format!("{base}.lora_b"))?;
            if ne_a.len() != 2 || ne_b.len() != 2 || ne_a[1] != ne_b[0] {
                bail!("{}: {base}: lora_a {:?} and lora_b {:?} do not fit together", path.display(), ne_a, ne_b);
            }
            pairs.push(LoraPair { base: base.to_string(), n_in: ne_a[0], n_out: ne_b[1], rank: ne_a[1], a, b });
        }
        pairs.sort_by(|x, y| x.base.cmp(&y.base));
        Ok(Self { arch, alpha, pairs })
    }

    pub fn n_params(&self) -> u64 {
        self.pairs.iter().map(|p| (p.a.len() + p.b.len()) as u64).sum()
    }

    /// The targets (trit names) this adapter covers, in canonical order.
    pub fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = ALL_TARGETS
            .iter()
            .filter(|name| self.pairs.iter().any(|p| p.base.contains(&format!(".{}.", target_stem(name)))))
            .map(|s| s.to_string())
            .collect();
        t.dedup();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_aliases_and_reject_unknown() {
        assert_eq!(parse_targets("all").unwrap(), ALL_TARGETS);
        assert_eq!(parse_targets("ffn_down,attn_output,attn_q").unwrap(), ["attn_q", "attn_o", "ffn_down"]);
        assert!(parse_targets("output").unwrap_err().to_string().contains("tie"));
        assert!(parse_targets("attn_x").is_err());
    }
}
