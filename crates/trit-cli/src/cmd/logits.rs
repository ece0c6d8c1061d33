//! `trit logits`: the per-position logits of a prompt, as a float32 `.npy` of shape
//! [tokens, vocab], so trit can be compared with any other implementation.

use std::path::PathBuf;

use anyhow::{bail, Result};
use trit_llama::{Batch, Token};

use crate::args::{self, flag, Flag};
use crate::{common, npy};

const LOGIT_FLAGS: &[Flag] = &[
    flag(&["-p", "--prompt"], Some("TEXT"), "text to evaluate (tokenised with the model's BOS)"),
    flag(&["--ids"], Some("ID,ID,..."), "token ids to evaluate, instead of -p"),
    flag(&["-o", "--output"], Some("FNAME"), "write the logits here (.npy, float32 [tokens, vocab])"),
];

const ABOUT: &str = "trit logits: print the token ids of a prompt and write its logits as .npy";

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let fl = common::flags(&[common::MODEL_FLAGS, common::CONTEXT_FLAGS, LOGIT_FLAGS]);
    let Some(p) = args::parse_or_help(prog, ABOUT, &fl, argv)? else {
        return Ok(());
    };
    let model = common::load_model(&p)?;
    let tokens: Vec<Token> = match (p.str("-p"), p.str("--ids")) {
        (Some(text), None) => model.tokenize(text, true, true)?,
        (None, Some(ids)) => ids
            .split(',')
            .map(|s| s.trim().parse::<Token>().map_err(|_| anyhow::anyhow!("--ids: '{s}' is not a token id")))
            .collect::<Result<_>>()?,
        _ => bail!("error: give exactly one of -p or --ids\n{}", args::usage_line(prog, &fl)),
    };
    let n_vocab = model.n_vocab();
    if tokens.is_empty() {
        bail!("nothing to evaluate: no tokens");
    }
    if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
        bail!("token id {bad} is outside the vocabulary (0..{n_vocab})");
    }
    let mut cp = common::context_params(&p, 0)?;
    cp.n_ctx = cp.n_ctx.max(tokens.len() as u32);
    cp.n_batch = cp.n_batch.max(1);
    let (adapters, scales) = common::load_adapters(&model, &common::lora_requests(&p)?)?;
    let mut ctx = common::new_context(&model, &cp, &adapters, &scales)?;
    let n_batch = ctx.n_batch() as usize;
    let mut batch = Batch::new(n_batch);
    let mut logits = Vec::with_capacity(tokens.len() * n_vocab);
    for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (i, &t) in chunk.iter().enumerate() {
            batch.push(t, (ci * n_batch + i) as i32, 0, true)?;
        }
        ctx.decode(&batch)?;
        for i in 0..chunk.len() {
            logits.extend_from_slice(ctx.logits_ith(i as i32)?);
        }
    }
    let ids: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    println!("ids: {}", ids.join(","));
    let argmax: Vec<String> = logits
        .chunks(n_vocab)
        .map(|row| {
            let (i, _) =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
            i.to_string()
        })
        .collect();
    println!("top1: {}", argmax.join(","));
    if let Some(out) = p.str("-o") {
        npy::write_f32(&PathBuf::from(out), tokens.len(), n_vocab, &logits)?;
        eprintln!("wrote {} x {} logits to {out}", tokens.len(), n_vocab);
    }
    Ok(())
}
