//! `trit lora merge`: fold a LoRA adapter into its base model (F16 projections).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::args::{self, flag, Flag};
use crate::common;

const FLAGS: &[Flag] = &[
    flag(&["-m", "--model"], Some("FNAME"), "base model (GGUF)"),
    flag(&["--lora"], Some("FNAME"), "adapter to merge (scale 1)"),
    flag(&["--lora-scaled"], Some("FNAME:SCALE"), "adapter to merge with a user scale"),
    flag(&["-o", "--output"], Some("FNAME"), "merged model to write"),
];

const ABOUT: &str = "trit lora merge: write a model with a LoRA adapter folded into its projections (F16)";

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let Some((sub, rest)) = argv.split_first() else {
        bail!("usage: {prog} merge -m base.gguf --lora adapter.gguf -o merged.gguf");
    };
    if sub == "-h" || sub == "--help" {
        print!("{}", args::help_text(&format!("{prog} merge"), ABOUT, FLAGS));
        return Ok(());
    }
    if sub != "merge" {
        bail!("unknown subcommand '{sub}' (expected: merge)");
    }
    let prog = format!("{prog} merge");
    let Some(p) = args::parse_or_help(&prog, ABOUT, FLAGS, rest)? else {
        return Ok(());
    };
    let base = PathBuf::from(p.required("-m")?);
    common::preflight(&base)?;
    let reqs = common::lora_requests(&p)?;
    let [(adapter, scale)] = reqs.as_slice() else {
        bail!("give exactly one adapter (--lora or --lora-scaled); merge several one after another");
    };
    let out = PathBuf::from(p.required("-o")?);
    let r = trit_finetune::merge::merge(&base, adapter, *scale, &out)?;
    eprintln!("merged {} projection(s) into {}", r.merged.len(), r.output.display());
    Ok(())
}
