//! `trit run` / `llama-cli`: text completion and chat with llama.cpp's flags.

use std::io::{BufRead, Write};

use anyhow::{bail, Context as _, Result};
use trit_llama::{ChatMessage, Model, Sampler};

use crate::args::{self, flag, Flag, Parsed};
use crate::common;
use crate::generate::{feed, generate};

const RUN_FLAGS: &[Flag] = &[
    flag(&["-p", "--prompt"], Some("PROMPT"), "prompt to start generation with"),
    flag(&["-f", "--file"], Some("FNAME"), "a file containing the prompt"),
    flag(
        &["-n", "--predict", "--n-predict"],
        Some("N"),
        "tokens to predict (default: -1 = until end, -2 = until context is full)",
    ),
    flag(&["-r", "--reverse-prompt"], Some("PROMPT"), "halt generation at PROMPT"),
    flag(&["-sys", "--system-prompt"], Some("PROMPT"), "system prompt (conversation mode)"),
    flag(&["-cnv", "--conversation"], None, "conversation mode (default: on if the model has a chat template)"),
    flag(&["-no-cnv", "--no-conversation"], None, "plain completion"),
    flag(&["-st", "--single-turn"], None, "one conversation turn, then exit"),
    flag(&["--chat-template"], Some("NAME"), "chat template name or Jinja text (default: the model's)"),
    flag(&["-no-display-prompt", "--no-display-prompt"], None, "do not echo the prompt"),
    flag(&["--ignore-eos"], None, "keep generating past end-of-generation tokens"),
    flag(&["-sp", "--special"], None, "print special tokens"),
];

const ABOUT: &str = "trit run (llama-cli): generate text or chat with a GGUF model";

pub fn flags() -> Vec<Flag> {
    common::flags(&[common::MODEL_FLAGS, common::CONTEXT_FLAGS, common::SAMPLING_FLAGS, RUN_FLAGS])
}

pub fn main(prog: &str, argv: &[String]) -> Result<()> {
    let fl = flags();
    let Some(p) = args::parse_or_help(prog, ABOUT, &fl, argv)? else {
        return Ok(());
    };
    if !p.positional.is_empty() {
        bail!("error: unexpected argument '{}'\n{}", p.positional[0], args::usage_line(prog, &fl));
    }
    let model = common::load_model(&p)?;
    let cparams = common::context_params(&p, 0)?;
    let (adapters, scales) = common::load_adapters(&model, &common::lora_requests(&p)?)?;
    let mut ctx = common::new_context(&model, &cparams, &adapters, &scales)?;
    let mut sampler = Sampler::new(&common::sampler_params(&p)?, model.n_vocab());

    let prompt = match (p.str("-p"), p.str("-f")) {
        (Some(_), Some(_)) => bail!("error: give either -p or -f, not both"),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(f)) => Some(std::fs::read_to_string(f).with_context(|| format!("reading prompt file {f}"))?),
        (None, None) => None,
    };
    let template = p.str("--chat-template").map(str::to_string).or_else(|| model.chat_template());
    let conversation = if p.has("-no-cnv") { false } else { p.has("-cnv") || template.is_some() };
    let n_predict: i32 = p.get("-n", -1)?;
    let reverse: Vec<String> = p.all("-r").to_vec();
    let ignore_eos = p.has("--ignore-eos");

    if conversation {
        let template = template.context(
            "conversation mode needs a chat template: the model has none; pass --chat-template NAME or -no-cnv",
        )?;
        return chat(&model, &mut ctx, &mut sampler, &template, &p, prompt, n_predict);
    }

    let prompt = prompt.unwrap_or_default();
    let mut tokens = model.tokenize(&prompt, true, true)?;
    if tokens.is_empty() {
        tokens.push(model.bos());
    }
    if tokens.len() as u32 >= ctx.n_ctx() {
        bail!("prompt is {} tokens, longer than the context ({}); raise -c", tokens.len(), ctx.n_ctx());
    }
    let mut out = std::io::stdout().lock();
    if !p.has("-no-display-prompt") {
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
    }
    for &t in &tokens {
        sampler.accept(t);
    }
    let n_past = feed(&mut ctx, &tokens, 0)?;
    generate(&mut ctx, &mut sampler, n_past, n_predict, &reverse, ignore_eos, |b| {
        out.write_all(b)?;
        out.flush()?;
        Ok(())
    })?;
    writeln!(out)?;
    print_perf(&ctx);
    Ok(())
}

/// Conversation mode: the first user turn is -p/-f if given, then lines from stdin.
fn chat(
    model: &Model,
    ctx: &mut trit_llama::Context<'_>,
    sampler: &mut trit_llama::Sampler,
    template: &str,
    p: &Parsed,
    first: Option<String>,
    n_predict: i32,
) -> Result<()> {
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(sys) = p.str("-sys") {
        messages.push(ChatMessage { role: "system".into(), content: sys.into() });
    }
    let single_turn = p.has("-st");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut pending = first;
    let mut rendered_len = 0usize;
    let mut n_past = 0;
    let mut out = std::io::stdout();
    loop {
        let user = match pending.take() {
            Some(u) => u,
            None => {
                eprint!("\n> ");
                match lines.next() {
                    Some(line) => line?,
                    None => break,
                }
            }
        };
        if user.trim() == "/exit" {
            break;
        }
        messages.push(ChatMessage { role: "user".into(), content: user });
        let rendered = Model::apply_chat_template(template, &messages, true)?;
        let new_text = &rendered[rendered_len.min(rendered.len())..];
        let tokens = model.tokenize(new_text, n_past == 0, true)?;
        if n_past as u32 + tokens.len() as u32 >= ctx.n_ctx() {
            bail!("the conversation no longer fits the context ({} tokens); raise -c", ctx.n_ctx());
        }
        n_past = feed(ctx, &tokens, n_past)?;
        let mut reply = Vec::new();
        let (_, np, _) = generate(ctx, sampler, n_past, n_predict, p.all("-r"), false, |b| {
            reply.extend_from_slice(b);
            out.write_all(b)?;
            out.flush()?;
            Ok(())
        })?;
        n_past = np;
        writeln!(out)?;
        // The cache now holds the prompt and the reply; the next turn feeds only what the
        // template renders after them (the end-of-turn marker and the new user turn).
        rendered_len = rendered.len() + reply.len();
        messages.push(ChatMessage { role: "assistant".into(), content: String::from_utf8_lossy(&reply).into_owned() });
        if single_turn {
            break;
        }
    }
    print_perf(ctx);
    Ok(())
}

fn print_perf(ctx: &trit_llama::Context<'_>) {
    let d = ctx.perf();
    let rate = |n: i32, ms: f64| if ms > 0.0 { 1e3 * n as f64 / ms } else { 0.0 };
    eprintln!();
    eprintln!("llama_perf_context_print:        load time = {:10.2} ms", d.t_load_ms);
    eprintln!(
        "llama_perf_context_print: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} tokens per second)",
        d.t_prompt_ms,
        d.n_prompt,
        rate(d.n_prompt, d.t_prompt_ms)
    );
    eprintln!(
        "llama_perf_context_print:        eval time = {:10.2} ms / {:5} runs   ({:8.2} tokens per second)",
        d.t_eval_ms,
        d.n_eval,
        rate(d.n_eval, d.t_eval_ms)
    );
}
