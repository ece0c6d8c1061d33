//! `trit serve` / `llama-server`: the HTTP server with llama-server's flags.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::args::{self, flag, Flag};
use crate::common;

const SERVE_FLAGS: &[Flag] = &[
    flag(&["-np", "--parallel"], Some("N"), "number of server slots (default: 4)"),
    flag(&["-cb", "--cont-batching"], None, "continuous batching (default: on)"),
    flag(&["-nocb", "--no-cont-batching"], None, "admit new requests only when no slot is generating"),
    flag(&["--host"], Some("HOST"), "address to listen on (default: 127.0.0.1)"),
    flag(&["--port"], Some("PORT"), "port to listen on (default: 8080; 0 = any free port)"),
    flag(&["--api-key"], Some("KEY"), "API key(s), comma-separated, as 'Authorization: Bearer KEY' (all but /health)"),
    flag(&["--api-key-file"], Some("FNAME"), "file with API keys, one per line ('#' starts a comment)"),
    flag(&["--lora-init-without-apply"], None, "load LoRA adapters with scale 0 (set them with /lora-adapters)"),
    flag(&["--chat-template"], Some("NAME"), "chat template name or Jinja text (default: the model's)"),
    flag(&["-a", "--alias"], Some("NAME"), "model name(s) for the API, comma-separated (default: the model path)"),
    flag(&["-to", "--timeout"], Some("N"), "read/write timeout in seconds (default: 3600)"),
    flag(&["--metrics"], None, "enable the Prometheus /metrics endpoint (default: disabled)"),
    flag(&["--slots"], None, "expose /slots (default: enabled)"),
    flag(&["--no-slots"], None, "do not expose /slots"),
    flag(&["-n", "--predict", "--n-predict"], Some("N"), "default tokens to predict per request (default: -1)"),
    flag(&["--body-limit"], Some("BYTES"), "largest request body accepted (default: 4194304)"),
];

const ABOUT: &str = "trit serve (llama-server): OpenAI-compatible and llama.cpp HTTP API with parallel slots";

pub fn flags() -> Vec<Flag> {
    common::flags(&[common::MODEL_FLAGS, common::CONTEXT_FLAGS, common::SAMPLING_FLAGS, SERVE_FLAGS])
}

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let fl = flags();
    let Some(p) = args::parse_or_help(prog, ABOUT, &fl, argv)? else {
        return Ok(());
    };
    if !p.positional.is_empty() {
        bail!("error: unexpected argument '{}'\n{}", p.positional[0], args::usage_line(prog, &fl));
    }
    trit_llama::log::set_verbose(p.has("-v"));
    // trit's CPU kernels for the ternary products, as `trit run` (--ternary-kernels ggml: ggml's).
    common::install_ternary_kernels(common::ternary_kernels(&p, false)?[0]);
    let model = std::path::PathBuf::from(p.required("-m")?);
    common::preflight(&model)?;
    let mut cfg = trit_server::Config::new(model);
    cfg.model_params = common::model_params(&p)?;
    cfg.ctx = common::context_params(&p, 0)?;
    let np: i64 = p.get("-np", -1)?;
    cfg.n_parallel = if np <= 0 { 4 } else { np as usize };
    cfg.cont_batching = !p.has("-nocb");
    cfg.host = p.str("--host").unwrap_or("127.0.0.1").to_string();
    cfg.port = p.get("--port", 8080)?;
    for v in p.all("--api-key") {
        cfg.api_keys.extend(v.split(',').filter(|k| !k.is_empty()).map(String::from));
    }
    if let Some(f) = p.str("--api-key-file") {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading --api-key-file {f}"))?;
        let keys = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        cfg.api_keys.extend(keys.map(String::from));
    }
    cfg.metrics = p.has("--metrics");
    cfg.slots = !p.has("--no-slots");
    cfg.loras = common::lora_requests(&p)?;
    cfg.lora_init_without_apply = p.has("--lora-init-without-apply");
    cfg.chat_template = p.str("--chat-template").map(str::to_string);
    cfg.aliases = p.str("-a").map(|a| a.split(',').map(str::to_string).collect()).unwrap_or_default();
    cfg.timeout = Duration::from_secs(p.get("-to", 3600)?);
    cfg.n_predict = p.get("-n", -1)?;
    cfg.body_limit = p.get("--body-limit", cfg.body_limit)?;
    cfg.sampling = common::sampler_params(&p)?;
    trit_server::serve(cfg)
}
