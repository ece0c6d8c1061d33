//! Checkpoints: `checkpoint_step_%08d/` with the adapter GGUF, the AdamW state as a GGUF
//! (`trit.opt.iter` plus one F32 tensor per moment) and `meta.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use trit_gguf::{GgmlType, GgufFile, GgufWriter, Value};

use crate::adapter::{LoraSpec, LoraWeights};
use crate::session::OptimizerState;

pub const ADAPTER_FILE: &str = "adapter.gguf";
pub const OPTIMIZER_FILE: &str = "optimizer.gguf";
pub const META_FILE: &str = "meta.json";

/// One row of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub step: u64,
    pub epoch: u32,
    pub lr: f32,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// The training graph's compute buffers, all backends (0 in logs from before this field).
    #[serde(default)]
    pub compute_bytes: u64,
    /// Peak of the GPU backend's buffers so far, where the caller can tell.
    #[serde(default)]
    pub device_peak_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub spec: LoraSpec,
    /// Optimizer steps taken.
    pub step: u64,
    /// Context windows consumed (over all epochs).
    pub windows_done: u64,
    pub epoch: u32,
    pub seed: u64,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub n_train_windows: u64,
    pub n_val_windows: u64,
    pub log: Vec<LogRow>,
}

pub fn dir_for(root: &Path, step: u64) -> PathBuf {
    root.join(format!("checkpoint_step_{step:08}"))
}

/// Write a checkpoint directory (files are each written atomically).
pub fn save(dir: &Path, adapter: &LoraWeights, opt: &OptimizerState, meta: &Meta) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    adapter.save(&dir.join(ADAPTER_FILE))?;
    let mut w = GgufWriter::new();
    w.add_kv("general.type", "trit-optimizer-state")?;
    w.add_kv("trit.opt.iter", Value::I64(opt.iter))?;
    for (name, data) in &opt.tensors {
        w.add_tensor(name.as_str(), GgmlType::F32, &[data.len() as u64])?;
    }
    let mut s = w.create(dir.join(OPTIMIZER_FILE))?;
    for (name, data) in &opt.tensors {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.write_tensor(name, &bytes)?;
    }
    s.finish()?;
    let tmp = dir.join(".meta.json.partial");
    std::fs::write(&tmp, serde_json::to_vec_pretty(meta)?)?;
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    Ok(())
}

/// The newest `checkpoint_step_*` under `root`, if `root` is not itself a checkpoint.
pub fn resolve(root: &Path) -> Result<PathBuf> {
    if root.join(META_FILE).is_file() {
        return Ok(root.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading checkpoint directory {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("checkpoint_step_"))
                && p.join(META_FILE).is_file()
        })
        .collect();
    found.sort();
    found.pop().with_context(|| format!("{}: no checkpoint (meta.json) found", root.display()))
}

pub fn load_meta(dir: &Path) -> Result<Meta> {
    let p = dir.join(META_FILE);
    let m: Meta = serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
        .with_context(|| format!("parsing {}", p.display()))?;
    if m.format != 1 {
        bail!("{}: checkpoint format {} is not supported", p.display(), m.format);
    }
    Ok(m)
}

pub fn load_optimizer(dir: &Path) -> Result<OptimizerState> {
    let p = dir.join(OPTIMIZER_FILE);
    let f = GgufFile::open(&p).with_context(|| format!("reading {}", p.display()))?;
    let iter = f.get("trit.opt.iter").and_then(Value::as_i64).context("optimizer state without trit.opt.iter")?;
    let mut tensors = Vec::new();
    for t in f.tensors() {
        if t.ty != GgmlType::F32 {
            bail!("{}: {} is not F32", p.display(), t.name);
        }
        let v = f.tensor_data(&t.name)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.push((t.name.clone(), v));
    }
    Ok(OptimizerState { iter, tensors })
}

/// Refuse to resume with a different adapter shape.
pub fn check_compatible(meta: &Meta, spec: &LoraSpec) -> Result<()> {
    if meta.spec.rank != spec.rank || meta.spec.alpha != spec.alpha || meta.spec.targets != spec.targets {
        bail!(
            "checkpoint was trained with rank {} alpha {} targets {}; this run asks for rank {} alpha {} targets {} \
             (resume with the checkpoint's settings)",
            meta.spec.rank,
            meta.spec.alpha,
            meta.spec.targets.join(","),
            spec.rank,
            spec.alpha,
            spec.targets.join(",")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(spec: LoraSpec) -> Meta {
        Meta {
            format: 1,
            spec,
            step: 3,
            windows_done: 3,
            epoch: 0,
            seed: 1,
            n_ctx: 256,
            n_batch: 256,
            n_ubatch: 256,
            n_train_windows: 4,
            n_val_windows: 0,
            log: Vec::new(),
        }
    }

    #[test]
    fn rank_alpha_and_targets_must_match() {
        let spec = LoraSpec { rank: 8, alpha: 16.0, targets: vec!["attn_q".into(), "ffn_up".into()] };
        let m = meta(spec.clone());
        assert!(check_compatible(&m, &spec).is_ok());
        assert!(check_compatible(&m, &LoraSpec { rank: 4, ..spec.clone() }).is_err());
        assert!(check_compatible(&m, &LoraSpec { alpha: 32.0, ..spec.clone() }).is_err());
        let e = check_compatible(&m, &LoraSpec { targets: vec!["attn_q".into()], ..spec }).unwrap_err();
        assert!(e.to_string().contains("targets attn_q,ffn_up"), "{e}");
    }

    #[test]
    fn checkpoint_round_trips_and_resolves_the_newest() {
        let root = std::env::temp_dir().join(format!("trit-ckpt-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let adapter = LoraWeights {
            arch: "bitnet".into(),
            alpha: 16.0,
            pairs: vec![crate::adapter::LoraPair {
                base: "blk.0.attn_q.weight".into(),
                n_in: 2,
                n_out: 3,
                rank: 1,
                a: vec![0.5, -1.25],
                b: vec![1.0, 2.0, f32::MIN_POSITIVE],
            }],
        };
        let opt = OptimizerState { iter: 4, tensors: vec![("AdamW m for x".into(), vec![1.5, -0.0, 3.0e-30])] };
        let spec = LoraSpec { rank: 1, alpha: 16.0, targets: vec!["attn_q".into()] };
        for step in [3, 12] {
            save(&dir_for(&root, step), &adapter, &opt, &Meta { step, ..meta(spec.clone()) }).unwrap();
        }
        let newest = resolve(&root).unwrap();
        assert!(newest.ends_with("checkpoint_step_00000012"));
        assert_eq!(load_meta(&newest).unwrap().step, 12);
        assert_eq!(load_optimizer(&newest).unwrap(), opt);
        assert_eq!(LoraWeights::load(&newest.join(ADAPTER_FILE)).unwrap(), adapter);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
