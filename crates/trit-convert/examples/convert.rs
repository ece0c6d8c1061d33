//! Stand-alone converter for trying trit-convert before the CLI wires it in:
//!
//! ```text
//! cargo run --release -p trit-convert --example convert -- <hf_dir> <out.gguf> [tq2_0|tq1_0|f16] [f16|q8_0]
//! cargo run --release -p trit-convert --example convert -- synth:2b4t <out.gguf> [tq2_0|tq1_0|f16]
//! ```

use std::path::Path;
use std::process::ExitCode;

use trit_convert::{convert, synth, ConvertOptions, SynthPreset};

fn run(args: &[String]) -> Result<(), String> {
    let [input, out, rest @ ..] = args else {
        return Err(
            "usage: convert <hf_dir | synth:2b4t | synth:tiny> <out.gguf> [weight type] [embedding type]".into()
        );
    };
    let weight_type = rest.first().map_or(Ok(Default::default()), |s| s.parse())?;
    let report = if let Some(preset) = input.strip_prefix("synth:") {
        synth(preset.parse::<SynthPreset>()?, Path::new(out), weight_type, 1)
    } else {
        let opts = ConvertOptions {
            weight_type,
            embedding_type: rest.get(1).map_or(Ok(Default::default()), |s| s.parse())?,
            name: None,
            progress: true,
        };
        convert(Path::new(input), Path::new(out), &opts)
    }
    .map_err(|e| e.to_string())?;
    println!("{report:#?}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
