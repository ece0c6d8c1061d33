//! `trit convert HF_DIR -o model.gguf` and `trit synth --config 2b4t -o m.gguf`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use trit_convert::{ConvertOptions, ConvertReport, EmbeddingType, SynthPreset, WeightType};

use crate::args::{self, flag, Flag};

const CONVERT_FLAGS: &[Flag] = &[
    flag(&["-o", "--outfile"], Some("FNAME"), "output GGUF (required)"),
    flag(&["--type", "--outtype"], Some("tq2_0|tq1_0|f16"), "ternary weight storage (default: tq2_0)"),
    flag(&["--embed-type"], Some("f16|q8_0"), "token embedding / output head storage (default: f16)"),
    flag(&["--name"], Some("NAME"), "general.name (default: the directory name)"),
    flag(&["--no-progress"], None, "no progress bar"),
];

const SYNTH_FLAGS: &[Flag] = &[
    flag(&["--config"], Some("2b4t|tiny|tiny-deep"), "model shape (default: 2b4t = bitnet-b1.58-2B-4T)"),
    flag(&["-o", "--outfile"], Some("FNAME"), "output GGUF (required)"),
    flag(&["--type"], Some("tq2_0|tq1_0|f16"), "ternary weight storage (default: tq2_0)"),
    flag(&["--seed"], Some("N"), "random seed (default: 42)"),
    flag(&["--no-progress"], None, "no progress bar"),
];

pub fn convert_main(prog: &str, argv: &[String]) -> Result<()> {
    let prog_usage = format!("{prog} HF_DIR");
    let about = "trit convert: Hugging Face BitNet checkpoint directory -> GGUF for llama.cpp";
    let Some(p) = args::parse_or_help(&prog_usage, about, CONVERT_FLAGS, argv)? else {
        return Ok(());
    };
    let [dir] = p.positional.as_slice() else {
        bail!("error: give one model directory\n{}", args::usage_line(&prog_usage, CONVERT_FLAGS));
    };
    let out = PathBuf::from(p.required("-o")?);
    let opts = ConvertOptions {
        weight_type: parse_enum::<WeightType>(p.str("--type"))?,
        embedding_type: parse_enum::<EmbeddingType>(p.str("--embed-type"))?,
        name: p.str("--name").map(str::to_string),
        progress: !p.has("--no-progress"),
    };
    let report = trit_convert::convert(std::path::Path::new(dir), &out, &opts)?;
    print_report(&report);
    Ok(())
}

pub fn synth_main(prog: &str, argv: &[String]) -> Result<()> {
    let about = "trit synth: write a random-weight BitNet model of a known shape (for speed work)";
    let Some(p) = args::parse_or_help(prog, about, SYNTH_FLAGS, argv)? else {
        return Ok(());
    };
    if let Some(extra) = p.positional.first() {
        bail!("error: unexpected argument '{extra}'\n{}", args::usage_line(prog, SYNTH_FLAGS));
    }
    let preset: SynthPreset = p.str("--config").unwrap_or("2b4t").parse().map_err(anyhow::Error::msg)?;
    let out = PathBuf::from(p.required("-o")?);
    let wt = parse_enum::<WeightType>(p.str("--type"))?;
    let report = trit_convert::synth(preset, &out, wt, p.get("--seed", 42u64)?)?;
    print_report(&report);
    Ok(())
}

fn parse_enum<T: std::str::FromStr<Err = String> + Default>(v: Option<&str>) -> Result<T> {
    v.map(|s| s.parse::<T>().map_err(anyhow::Error::msg)).transpose().map(Option::unwrap_or_default)
}

fn print_report(r: &ConvertReport) {
    println!(
        "wrote {}: {} ({} layers, {} tensors, {} tokens, tokenizer {}), weights {}, embeddings {}",
        r.output.display(),
        r.source_architecture,
        r.n_layers,
        r.n_tensors,
        r.n_tokens,
        r.tokenizer,
        r.weight_type,
        r.embedding_type
    );
    for t in &r.f16_fallbacks {
        println!("  note: {t} stored as F16 (input dimension not a multiple of 256)");
    }
}
