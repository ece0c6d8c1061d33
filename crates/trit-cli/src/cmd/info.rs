//! `trit info model.gguf`: architecture, hyper-parameters, tensor types and sizes, read
//! by trit's own GGUF reader (no llama.cpp load needed).

use anyhow::{bail, Result};

use crate::args::{self, flag, Flag};

const FLAGS: &[Flag] = &[flag(&["--tensors"], None, "also list every tensor (name, type, shape, bytes)")];

const ABOUT: &str = "trit info: describe a GGUF model file";

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let Some(p) = args::parse_or_help(&format!("{prog} MODEL.gguf"), ABOUT, FLAGS, argv)? else {
        return Ok(());
    };
    let [path] = p.positional.as_slice() else {
        bail!("error: give one model file\n{}", args::usage_line(&format!("{prog} MODEL.gguf"), FLAGS));
    };
    let file = trit_gguf::GgufFile::open(path)?;
    println!("{}", trit_gguf::ModelSummary::from_file(&file));
    if p.has("--tensors") {
        println!("\ntensors:");
        for t in file.tensors() {
            let shape: Vec<String> = t.ne.iter().map(|d| d.to_string()).collect();
            println!("  {:<40} {:<6} [{}] {} bytes", t.name, t.ty.name(), shape.join(", "), t.n_bytes);
        }
    }
    Ok(())
}
