//! The `trit` multi-call binary: `trit <command>`, or invoked as `llama-cli`,
//! `llama-bench`, `llama-perplexity`, `llama-server` or `llama-finetune-lora` (a symlink or copy)
//! with llama.cpp's (and QVAC Fabric's) flags.

pub mod args;
pub mod cmd;
pub mod common;
pub mod generate;
pub mod npy;

use anyhow::{bail, Result};

/// (command, llama.cpp name it also answers to, what it does)
pub const COMMANDS: &[(&str, Option<&str>, &str)] = &[
    ("run", Some("llama-cli"), "generate text or chat (llama-cli flags)"),
    ("bench", Some("llama-bench"), "measure pp/tg speed (llama-bench flags and table)"),
    ("perplexity", Some("llama-perplexity"), "perplexity of a text file"),
    ("serve", Some("llama-server"), "HTTP server: OpenAI and llama.cpp APIs, parallel slots"),
    ("logits", None, "token ids and per-position logits (.npy) of a prompt"),
    ("info", None, "describe a GGUF model"),
    ("convert", None, "Hugging Face BitNet checkpoint -> GGUF"),
    ("synth", None, "random-weight model of the 2B-4T shape, for speed work"),
    ("finetune", Some("llama-finetune-lora"), "train a LoRA adapter (CPU)"),
    ("lora", None, "lora merge: fold an adapter into the base model (F16 projections)"),
];

pub fn usage() -> String {
    let mut s = String::from("usage: trit <command> [flags]   (-h after a command for its flags)\n\ncommands:\n");
    for (name, alias, help) in COMMANDS {
        let alias = alias.map(|a| format!(" (also: {a})")).unwrap_or_default();
        s.push_str(&format!("  {name:<12} {help}{alias}\n"));
    }
    s
}

/// Dispatch on the program name (multi-call) or the first argument.
pub fn dispatch(argv0: &str, args: &[String]) -> Result<()> {
    let base = std::path::Path::new(argv0).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for (name, alias, _) in COMMANDS {
        if alias.is_some_and(|a| a == base) {
            return run_command(name, &base, args);
        }
    }
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{}", usage());
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{}", usage());
            Ok(())
        }
        "--version" | "version" => {
            println!("trit {} ({})", env!("CARGO_PKG_VERSION"), trit_sys::LLAMA_CPP_PIN);
            Ok(())
        }
        _ => run_command(cmd, &format!("trit {cmd}"), rest),
    }
}

fn run_command(cmd: &str, prog: &str, args: &[String]) -> Result<()> {
    match cmd {
        "run" => cmd::run::main(prog, args),
        "bench" => cmd::bench::main(prog, args),
        "perplexity" => cmd::perplexity::main(prog, args),
        "serve" => cmd::serve::main(prog, args),
        "logits" => cmd::logits::main(prog, args),
        "info" => cmd::info::main(prog, args),
        "convert" => cmd::convert::convert_main(prog, args),
        "synth" => cmd::convert::synth_main(prog, args),
        "finetune" => cmd::finetune::main(prog, args),
        "lora" => cmd::lora::main(prog, args),
        other => bail!("unknown command '{other}'\n{}", usage()),
    }
}
