//! `trit perplexity` / `llama-perplexity`: perplexity of a text file, computed the way
//! llama.cpp's tool does: the text is cut into chunks of `-c` tokens, each evaluated on its
//! own, and only the second half of each chunk is scored (the first half is context).

use anyhow::{bail, Context as _, Result};
use trit_llama::{Batch, Token};

use crate::args::{self, flag, Flag};
use crate::common;

const PPL_FLAGS: &[Flag] = &[
    flag(&["-f", "--file"], Some("FNAME"), "text file to score"),
    flag(&["--chunks"], Some("N"), "score at most N chunks (default: all)"),
];

const ABOUT: &str = "trit perplexity (llama-perplexity): perplexity of a model on a text file";

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let fl = common::flags(&[common::MODEL_FLAGS, common::CONTEXT_FLAGS, PPL_FLAGS]);
    let Some(p) = args::parse_or_help(prog, ABOUT, &fl, argv)? else {
        return Ok(());
    };
    let file = p.required("-f")?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let model = common::load_model(&p)?;
    let mut cp = common::context_params(&p, 512)?;
    if cp.n_ctx == 0 {
        cp.n_ctx = model.n_ctx_train();
    }
    let n_ctx = cp.n_ctx as usize;
    if n_ctx < 8 {
        bail!("error: -c must be at least 8 for perplexity");
    }
    cp.n_batch = cp.n_batch.min(cp.n_ctx);
    let (adapters, scales) = common::load_adapters(&model, &common::lora_requests(&p)?)?;
    let mut ctx = common::new_context(&model, &cp, &adapters, &scales)?;

    let tokens = model.tokenize(&text, true, false)?;
    let max_chunks = tokens.len() / n_ctx;
    let n_chunks = match p.opt::<usize>("--chunks")? {
        Some(n) => n.min(max_chunks),
        None => max_chunks,
    };
    if n_chunks == 0 {
        bail!(
            "{file}: {} tokens is too little text for one chunk of {n_ctx} tokens (need at least {n_ctx}; lower -c)",
            tokens.len()
        );
    }
    eprintln!(
        "perplexity: tokenizing the input .. {} tokens\nperplexity: calculating perplexity over {n_chunks} chunks, n_ctx={n_ctx}, batch_size={}, n_seq=1",
        tokens.len(),
        cp.n_batch
    );
    let first = n_ctx / 2;
    let n_vocab = model.n_vocab();
    let mut nll_sum = 0.0f64;
    let mut nll2_sum = 0.0f64;
    let mut count = 0usize;
    let n_batch = cp.n_batch as usize;
    let mut batch = Batch::new(n_batch);
    let add_bos = model.add_bos();
    for c in 0..n_chunks {
        let mut chunk: Vec<Token> = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if add_bos {
            chunk[0] = model.bos();
        }
        ctx.clear_memory();
        let mut logits: Vec<f32> = Vec::with_capacity(n_ctx * n_vocab);
        for (bi, piece) in chunk.chunks(n_batch).enumerate() {
            batch.clear();
            for (i, &t) in piece.iter().enumerate() {
                batch.push(t, (bi * n_batch + i) as i32, 0, true)?;
            }
            ctx.decode(&batch)?;
            for i in 0..piece.len() {
                logits.extend_from_slice(ctx.logits_ith(i as i32)?);
            }
        }
        // Score token j+1 from the logits at j, over the second half of the chunk.
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let nll = neg_log_softmax(row, tokens[c * n_ctx + j + 1] as usize);
            nll_sum += nll;
            nll2_sum += nll * nll;
            count += 1;
        }
        eprint!("[{}]{:.4},", c + 1, (nll_sum / count as f64).exp());
    }
    eprintln!();
    let mean = nll_sum / count as f64;
    let ppl = mean.exp();
    let var = (nll2_sum / count as f64 - mean * mean).max(0.0);
    let err = ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt();
    println!("Final estimate: PPL = {ppl:.4} +/- {err:.5}");
    Ok(())
}

/// -log softmax(row)[target], computed in f64 with the max subtracted.
pub fn neg_log_softmax(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn uniform_logits_give_log_vocab() {
        let v = super::neg_log_softmax(&[0.0; 8], 3);
        assert!((v - 8f64.ln()).abs() < 1e-12);
    }
}
