//! The decode loop shared by `trit run` and the tools built on it.

use anyhow::Result;
use trit_llama::{Batch, Context, Sampler, Token};

/// Feed `tokens` at positions `n_past..`, in batches of the context's `n_batch`; the last
/// token's logits are kept for sampling. Returns the new `n_past`.
pub fn feed(ctx: &mut Context<'_>, tokens: &[Token], mut n_past: i32) -> Result<i32> {
    let n_batch = ctx.n_batch().max(1) as usize;
    let mut batch = Batch::new(n_batch);
    for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        let last_chunk = (ci + 1) * n_batch >= tokens.len();
        for (i, &t) in chunk.iter().enumerate() {
            batch.push(t, n_past + i as i32, 0, last_chunk && i + 1 == chunk.len())?;
        }
        ctx.decode(&batch)?;
        n_past += chunk.len() as i32;
    }
    Ok(n_past)
}

/// Why generation stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    EndOfGeneration,
    Limit,
    ContextFull,
    ReversePrompt,
}

/// Sample up to `n_predict` tokens (-1: until end of generation or a full context;
/// -2: until the context is full), calling `emit` with each token's bytes.
pub fn generate(
    ctx: &mut Context<'_>,
    sampler: &mut Sampler,
    mut n_past: i32,
    n_predict: i32,
    reverse_prompts: &[String],
    ignore_eog: bool,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<(Stop, i32, Vec<Token>)> {
    let model = ctx.model();
    let n_ctx = ctx.n_ctx() as i32;
    let mut batch = Batch::new(1);
    let mut produced: Vec<Token> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    loop {
        if n_predict >= 0 && produced.len() as i32 >= n_predict {
            return Ok((Stop::Limit, n_past, produced));
        }
        if n_past >= n_ctx {
            return Ok((Stop::ContextFull, n_past, produced));
        }
        let t = sampler.sample(ctx, -1);
        if model.is_eog(t) && !ignore_eog && n_predict != -2 {
            return Ok((Stop::EndOfGeneration, n_past, produced));
        }
        produced.push(t);
        let bytes = model.token_bytes(t, false);
        emit(&bytes)?;
        text.extend_from_slice(&bytes);
        if reverse_prompts.iter().any(|r| !r.is_empty() && text.ends_with(r.as_bytes())) {
            return Ok((Stop::ReversePrompt, n_past, produced));
        }
        batch.clear();
        batch.push(t, n_past, 0, true)?;
        ctx.decode(&batch)?;
        n_past += 1;
    }
}
