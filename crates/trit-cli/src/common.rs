//! Flags shared by the commands that load a model (llama.cpp's common parameters).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use trit_kernels::ggml::TernaryKernels;
use trit_llama::{Context, ContextParams, LoraAdapter, Model, ModelParams, SamplerParams};

use crate::args::{flag, ArgError, Flag, Parsed};

pub const MODEL_FLAGS: &[Flag] = &[
    flag(&["-m", "--model"], Some("FNAME"), "model path (GGUF)"),
    flag(&["-t", "--threads"], Some("N"), "threads for generation (default: cores)"),
    flag(&["-tb", "--threads-batch"], Some("N"), "threads for batch processing (default: = -t)"),
    flag(
        &["-ngl", "--gpu-layers", "--n-gpu-layers"],
        Some("N"),
        "layers to offload to GPU: number, 'auto' or 'all' (default: auto)",
    ),
    flag(&["-fa", "--flash-attn"], Some("on|off|auto"), "flash attention (default: auto)"),
    flag(&["--no-mmap"], None, "do not memory-map the model"),
    flag(&["--repack"], None, "re-encode TQ1_0 weights on the CPU as TQ2_0 at load (default: on)"),
    flag(&["-nr", "--no-repack"], None, "keep TQ1_0 weights as stored (less memory, slower decode)"),
    OVERRIDE_TENSOR_FLAG,
    flag(&["--lora"], Some("FNAME"), "LoRA adapter (comma-separated for several)"),
    flag(&["--lora-scaled"], Some("FNAME:SCALE,..."), "LoRA adapter with a user scale"),
    flag(&["-v", "--verbose", "--log-verbose"], None, "show llama.cpp's log"),
    TERNARY_KERNELS_FLAG,
];

pub const OVERRIDE_TENSOR_FLAG: Flag = flag(
    &["-ot", "--override-tensor"],
    Some("PATTERN=BUFFER_TYPE,..."),
    "load tensors matching a regex into a buffer type (CPU, TritVulkan0, ...)",
);

/// Parse `-ot PATTERN=BUFFER_TYPE` (pairs separated by ',' or ';', the flag repeatable), as
/// llama.cpp's `--override-tensor`.
pub fn tensor_overrides(p: &Parsed) -> Result<Vec<(String, String)>, ArgError> {
    let mut out = Vec::new();
    for v in p.all("-ot") {
        for item in v.split([',', ';']).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some((pat, buft)) if !pat.is_empty() && !buft.is_empty() => {
                    out.push((pat.to_string(), buft.to_string()))
                }
                _ => {
                    return Err(ArgError::Usage(format!(
                        "error: invalid tensor override '{item}' (expected PATTERN=BUFFER_TYPE)"
                    )))
                }
            }
        }
    }
    Ok(out)
}

pub const TERNARY_KERNELS_FLAG: Flag =
    flag(&["--ternary-kernels"], Some("trit|ggml"), "CPU kernels for TQ1_0/TQ2_0 matrix products (default: trit)");

/// Parse `--ternary-kernels` (a comma-separated list where `allow_list`, as in bench).
pub fn ternary_kernels(p: &Parsed, allow_list: bool) -> Result<Vec<TernaryKernels>, ArgError> {
    let v = p.str("--ternary-kernels").unwrap_or("trit");
    let items: Vec<&str> = v.split(',').filter(|s| !s.is_empty()).collect();
    if items.is_empty() || (!allow_list && items.len() > 1) {
        return Err(ArgError::Usage(format!("error: invalid value '{v}' for --ternary-kernels (trit, ggml)")));
    }
    items.iter().map(|s| s.parse().map_err(|e: String| ArgError::Usage(format!("error: {e}")))).collect()
}

/// Route ternary MUL_MAT to the chosen kernels (process-wide; call between decodes).
pub fn install_ternary_kernels(which: TernaryKernels) {
    let isa = trit_kernels::ggml::install(which);
    tracing::debug!("ternary kernels: {} ({})", which.name(), isa.name());
}

pub const CONTEXT_FLAGS: &[Flag] = &[
    flag(&["-c", "--ctx-size"], Some("N"), "context size (default: 0 = from model)"),
    flag(&["-b", "--batch-size"], Some("N"), "logical batch size (default: 2048)"),
    flag(&["-ub", "--ubatch-size"], Some("N"), "physical batch size (default: 512)"),
    flag(&["-ctk", "--cache-type-k"], Some("TYPE"), "KV cache type for K: f32, f16, q8_0 (default: f16)"),
    flag(&["-ctv", "--cache-type-v"], Some("TYPE"), "KV cache type for V: f32, f16, q8_0 (default: f16)"),
];

/// Sampling flags shared by `trit run` and `trit serve` (llama.cpp's names and defaults).
pub const SAMPLING_FLAGS: &[Flag] = &[
    flag(&["-s", "--seed"], Some("SEED"), "RNG seed (default: -1, random)"),
    flag(&["--temp", "--temperature"], Some("N"), "temperature (default: 0.8; 0 = greedy)"),
    flag(&["--top-k"], Some("N"), "top-k sampling (default: 40, 0 = disabled)"),
    flag(&["--top-p"], Some("N"), "top-p sampling (default: 0.95, 1.0 = disabled)"),
    flag(&["--min-p"], Some("N"), "min-p sampling (default: 0.05, 0.0 = disabled)"),
    flag(&["--repeat-penalty"], Some("N"), "penalise repeated tokens (default: 1.0 = disabled)"),
    flag(&["--repeat-last-n"], Some("N"), "tokens considered for the penalty (default: 64)"),
    flag(&["--presence-penalty"], Some("N"), "presence penalty (default: 0.0 = disabled)"),
    flag(&["--frequency-penalty"], Some("N"), "frequency penalty (default: 0.0 = disabled)"),
];

/// Sampling settings from [`SAMPLING_FLAGS`]; a negative seed means llama.cpp's
/// `LLAMA_DEFAULT_SEED`, for which llama.cpp picks a random one.
pub fn sampler_params(p: &Parsed) -> Result<SamplerParams, ArgError> {
    let d = SamplerParams::default();
    let seed: i64 = p.get("-s", -1)?;
    Ok(SamplerParams {
        seed: if seed < 0 { trit_llama::DEFAULT_SEED } else { seed as u32 },
        temp: p.get("--temp", d.temp)?,
        top_k: p.get("--top-k", d.top_k)?,
        top_p: p.get("--top-p", d.top_p)?,
        min_p: p.get("--min-p", d.min_p)?,
        repeat_penalty: p.get("--repeat-penalty", d.repeat_penalty)?,
        repeat_last_n: p.get("--repeat-last-n", d.repeat_last_n)?,
        presence_penalty: p.get("--presence-penalty", d.presence_penalty)?,
        frequency_penalty: p.get("--frequency-penalty", d.frequency_penalty)?,
    })
}

/// Join flag tables into one list for a command.
pub fn flags(parts: &[&[Flag]]) -> Vec<Flag> {
    parts.iter().flat_map(|p| p.iter()).map(|f| Flag { names: f.names, value: f.value, help: f.help }).collect()
}

pub fn parse_ngl(v: &str) -> Result<i32, ArgError> {
    match v {
        "auto" => Ok(-1),
        "all" => Ok(-2),
        _ => v.parse().map_err(|_| ArgError::Usage(format!("error: invalid value '{v}' for -ngl"))),
    }
}

pub fn model_params(p: &Parsed) -> Result<ModelParams, ArgError> {
    let n_gpu_layers = match p.str("-ngl") {
        Some(v) => parse_ngl(v)?,
        None => -1,
    };
    Ok(ModelParams {
        n_gpu_layers,
        use_mmap: !p.has("--no-mmap"),
        vocab_only: false,
        cpu_only: false,
        tensor_overrides: tensor_overrides(p)?,
        use_extra_bufts: !p.has("-nr"),
    })
}

pub fn context_params(p: &Parsed, default_ctx: u32) -> Result<ContextParams, ArgError> {
    let d = ContextParams::default();
    let n_threads = p.get("-t", d.n_threads)?;
    let flash_attn = match p.str("-fa") {
        None | Some("auto") => None,
        Some("on" | "1" | "true") => Some(true),
        Some("off" | "0" | "false") => Some(false),
        Some(v) => return Err(ArgError::Usage(format!("error: invalid value '{v}' for -fa (on, off, auto)"))),
    };
    Ok(ContextParams {
        n_ctx: p.get("-c", default_ctx)?,
        n_batch: p.get("-b", d.n_batch)?,
        n_ubatch: p.get("-ub", d.n_ubatch)?,
        n_threads,
        n_threads_batch: p.get("-tb", n_threads)?,
        flash_attn,
        n_seq_max: 1,
        cache_type_k: p.get("-ctk", d.cache_type_k)?,
        cache_type_v: p.get("-ctv", d.cache_type_v)?,
    })
}

/// LoRA adapters requested with `--lora` and `--lora-scaled`, in order.
pub fn lora_requests(p: &Parsed) -> Result<Vec<(PathBuf, f32)>, ArgError> {
    let mut out = Vec::new();
    for v in p.all("--lora") {
        out.extend(v.split(',').filter(|s| !s.is_empty()).map(|s| (PathBuf::from(s), 1.0)));
    }
    for v in p.all("--lora-scaled") {
        for item in v.split(',').filter(|s| !s.is_empty()) {
            let (path, scale) = item
                .rsplit_once(':')
                .ok_or_else(|| ArgError::Usage("error: --lora-scaled format: FNAME:SCALE".into()))?;
            let scale: f32 = scale
                .parse()
                .map_err(|_| ArgError::Usage(format!("error: invalid scale '{scale}' in --lora-scaled")))?;
            out.push((PathBuf::from(path), scale));
        }
    }
    Ok(out)
}

pub fn load_model(p: &Parsed) -> Result<Model> {
    trit_llama::log::set_verbose(p.has("-v"));
    install_ternary_kernels(ternary_kernels(p, false)?[0]);
    let path = Path::new(p.required("-m")?);
    preflight(path)?;
    Ok(Model::load(path, &model_params(p)?)?)
}

/// Check the file with trit's own GGUF reader first: a truncated or corrupt file gets an
/// error that names the file and the tensor, before llama.cpp sees it.
pub fn preflight(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!("{}: no such model file", path.display());
    }
    trit_gguf::GgufFile::open(path).with_context(|| format!("{}: not a loadable GGUF model", path.display()))?;
    Ok(())
}

/// Create a context and apply the requested adapters.
pub fn new_context<'m>(
    model: &'m Model,
    params: &ContextParams,
    loras: &'m [LoraAdapter<'m>],
    scales: &[f32],
) -> Result<Context<'m>> {
    let mut ctx = Context::new(model, params)?;
    if !loras.is_empty() {
        let pairs: Vec<(&LoraAdapter<'m>, f32)> = loras.iter().zip(scales.iter().copied()).collect();
        ctx.set_adapters(&pairs)?;
    }
    Ok(ctx)
}

/// Load the adapters the flags name (they live as long as the model).
pub fn load_adapters<'m>(model: &'m Model, reqs: &[(PathBuf, f32)]) -> Result<(Vec<LoraAdapter<'m>>, Vec<f32>)> {
    let mut adapters = Vec::new();
    let mut scales = Vec::new();
    for (path, scale) in reqs {
        adapters.push(LoraAdapter::load(model, path)?);
        scales.push(*scale);
    }
    Ok((adapters, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Parsed {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        crate::args::parse("x", MODEL_FLAGS, &args).unwrap()
    }

    #[test]
    fn tensor_overrides_parse_like_llama_cpp() {
        let p = parsed(&["-ot", "token_embd=TritVulkan0;blk\\.0\\..*=CPU", "--override-tensor", "output=CPU"]);
        assert_eq!(
            tensor_overrides(&p).unwrap(),
            vec![
                ("token_embd".to_string(), "TritVulkan0".to_string()),
                ("blk\\.0\\..*".to_string(), "CPU".to_string()),
                ("output".to_string(), "CPU".to_string()),
            ]
        );
        assert!(tensor_overrides(&parsed(&[])).unwrap().is_empty());
        for bad in ["token_embd", "=CPU", "token_embd="] {
            assert!(tensor_overrides(&parsed(&["-ot", bad])).is_err(), "{bad}");
        }
    }
}
