//! Training data: plain text cut into context windows, or JSONL samples (chat `messages`
//! or `prompt`/`completion`) with an optional loss mask on everything but the assistant.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use trit_llama::{ChatMessage, Model, Token};

/// Label of a position that contributes nothing to the loss (the patched ggml-opt leaves its
/// one-hot row empty, and the patched cross-entropy backward gives it zero gradient).
pub const MASKED: i32 = -1;

/// One training window: `tokens[i]` is the input at position i, `labels[i]` the token it should
/// predict or [`MASKED`]. Both have exactly n_ctx entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tokens: Vec<Token>,
    pub labels: Vec<i32>,
}

impl Sample {
    pub fn n_trained(&self) -> usize {
        self.labels.iter().filter(|&&l| l != MASKED).count()
    }
}

/// What to do with a JSONL line that does not parse (`--on-bad-line`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadLine {
    #[default]
    Error,
    Skip,
}

impl std::str::FromStr for BadLine {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "error" => Ok(Self::Error),
            "skip" => Ok(Self::Skip),
            _ => Err(format!("--on-bad-line: '{s}' (expected skip or error)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DataOptions {
    pub n_ctx: usize,
    /// Train only on assistant turns (chat) or on the completion (prompt/completion).
    pub assistant_only: bool,
    pub on_bad_line: BadLine,
    /// Chat template override: a llama.cpp template name or Jinja text; None = the model's.
    pub chat_template: Option<String>,
}

/// The parsed data set and what was dropped on the way.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    pub skipped_bad_lines: usize,
    pub skipped_too_long: usize,
    pub is_jsonl: bool,
}

#[derive(Debug, Deserialize)]
struct JsonMessage {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonLine {
    Chat { messages: Vec<JsonMessage> },
    Completion { prompt: String, completion: String },
}

fn looks_like_jsonl(path: &Path, text: &str) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("json") {
        return true;
    }
    text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.trim_start().starts_with('{'))
}

/// Load `path` and turn it into n_ctx windows.
pub fn load(model: &Model, path: &Path, opts: &DataOptions) -> Result<Dataset> {
    if opts.n_ctx < 2 {
        bail!("context size must be at least 2");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading training data {}", path.display()))?;
    if looks_like_jsonl(path, &text) {
        load_jsonl(model, path, &text, opts)
    } else {
        if opts.assistant_only {
            bail!(
                "--assistant-only-loss needs JSONL data (chat messages or prompt/completion), {} is plain text",
                path.display()
            );
        }
        Ok(Dataset { samples: plain_windows(model, &text, opts.n_ctx)?, ..Default::default() })
    }
}

/// Plain text: tokenise once (with BOS), cut windows of n_ctx + 1 tokens at stride n_ctx / 2.
pub fn plain_windows(model: &Model, text: &str, n_ctx: usize) -> Result<Vec<Sample>> {
    let toks = model.tokenize(text, true, false)?;
    if toks.len() < 2 {
        bail!("training text has fewer than 2 tokens");
    }
    let mut out = Vec::new();
    let stride = (n_ctx / 2).max(1);
    let mut start = 0;
    loop {
        let end = (start + n_ctx + 1).min(toks.len());
        let w = &toks[start..end];
        let labels: Vec<i32> = w[1..].to_vec();
        out.push(padded(model, w[..w.len() - 1].to_vec(), labels, n_ctx));
        if end == toks.len() {
            break;
        }
        start += stride;
    }
    Ok(out)
}

fn padded(model: &Model, mut tokens: Vec<Token>, mut labels: Vec<i32>, n_ctx: usize) -> Sample {
    let pad = model.eos().max(0);
    tokens.resize(n_ctx, pad);
    labels.resize(n_ctx, MASKED);
    Sample { tokens, labels }
}

/// A rendered sample as text segments; `true` segments are trained under assistant-only loss.
type Segments = Vec<(String, bool)>;

fn load_jsonl(model: &Model, path: &Path, text: &str, opts: &DataOptions) -> Result<Dataset> {
    let mut ds = Dataset { is_jsonl: true, ..Default::default() };
    let mut template: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(line).and_then(|l| {
            let segs = match l {
                JsonLine::Chat { messages } => {
                    if template.is_none() {
                        template = Some(resolve_template(model, opts)?);
                    }
                    let msgs: Vec<ChatMessage> =
                        messages.into_iter().map(|m| ChatMessage { role: m.role, content: m.content }).collect();
                    chat_segments(template.as_deref().unwrap_or_default(), &msgs)?
                }
                JsonLine::Completion { prompt, completion } => vec![(prompt, false), (completion, true)],
            };
            Ok(segs)
        });
        let segs = match parsed {
            Ok(s) => s,
            Err(e) => match opts.on_bad_line {
                BadLine::Error => {
                    return Err(BadLineError { path: path.into(), line: lineno, reason: format!("{e:#}") })?
                }
                BadLine::Skip => {
                    tracing::warn!("{}:{lineno}: skipped: {e:#}", path.display());
                    ds.skipped_bad_lines += 1;
                    continue;
                }
            },
        };
        match tokenize_segments(model, &segs, opts)? {
            Some(s) => ds.samples.push(s),
            None => {
                tracing::warn!("{}:{lineno}: longer than the context ({} tokens), skipped", path.display(), opts.n_ctx);
                ds.skipped_too_long += 1;
            }
        }
    }
    if ds.samples.is_empty() {
        bail!("{}: no usable samples", path.display());
    }
    Ok(ds)
}

/// A malformed JSONL line, reported as `file:line: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason} (use --on-bad-line skip to drop such lines)", path.display())]
pub struct BadLineError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

fn parse_line(line: &str) -> Result<JsonLine> {
    let v: serde_json::Value = serde_json::from_str(line).context("invalid JSON")?;
    let l: JsonLine = serde_json::from_value(v)
        .context("expected {\"messages\":[{\"role\",\"content\"},...]} or {\"prompt\",\"completion\"}")?;
    if let JsonLine::Chat { messages } = &l {
        if messages.is_empty() {
            bail!("\"messages\" is empty");
        }
        if !messages.iter().any(|m| m.role == "assistant") {
            bail!("no assistant message");
        }
    }
    Ok(l)
}

fn resolve_template(model: &Model, opts: &DataOptions) -> Result<String> {
    if let Some(t) = &opts.chat_template {
        let p = Path::new(t);
        if p.is_file() {
            return std::fs::read_to_string(p).with_context(|| format!("reading chat template {}", p.display()));
        }
        return Ok(t.clone());
    }
    model.chat_template().context("the model has no chat template; pass --chat-template NAME|FILE")
}

/// Render a conversation and find each assistant reply's text generically: the reply spans
/// from the end of `render(messages[..k], add_assistant=true)` to the end of
/// `render(messages[..=k])`. Works for any template whose renderings are prefix-stable.
pub fn chat_segments(template: &str, msgs: &[ChatMessage]) -> Result<Segments> {
    let full = Model::apply_chat_template(template, msgs, false)?;
    let mut segs: Segments = Vec::new();
    let mut pos = 0usize;
    for (k, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = Model::apply_chat_template(template, &msgs[..k], true)?;
        let through = Model::apply_chat_template(template, &msgs[..=k], false)?;
        if !full.starts_with(&through) || !through.starts_with(&before) || before.len() < pos {
            bail!("chat template is not prefix-stable around assistant message {k}; cannot locate its tokens");
        }
        segs.push((full[pos..before.len()].to_string(), false));
        segs.push((full[before.len()..through.len()].to_string(), true));
        pos = through.len();
    }
    if pos < full.len() {
        segs.push((full[pos..].to_string(), false));
    }
    segs.retain(|(s, _)| !s.is_empty());
    Ok(segs)
}

/// Tokenise segment by segment (BOS before the first), append EOS after a trained final
/// segment that does not end in an end-of-generation token, and build the labels.
/// None when the sample does not fit n_ctx + 1 tokens.
fn tokenize_segments(model: &Model, segs: &Segments, opts: &DataOptions) -> Result<Option<Sample>> {
    let mut toks: Vec<Token> = Vec::new();
    let mut trained: Vec<bool> = Vec::new();
    for (i, (text, is_assistant)) in segs.iter().enumerate() {
        let t = model.tokenize(text, i == 0, true)?;
        trained.extend(std::iter::repeat_n(*is_assistant, t.len()));
        toks.extend(t);
    }
    if let (Some(&last), Some(&last_trained)) = (toks.last(), trained.last()) {
        if last_trained && !model.is_eog(last) && model.eos() >= 0 {
            toks.push(model.eos());
            trained.push(true);
        }
    }
    if toks.len() > opts.n_ctx + 1 {
        return Ok(None);
    }
    let inputs = toks[..toks.len() - 1].to_vec();
    let labels: Vec<i32> =
        (1..toks.len()).map(|i| if !opts.assistant_only || trained[i] { toks[i] } else { MASKED }).collect();
    Ok(Some(padded(model, inputs, labels, opts.n_ctx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assistant_spans_are_found_for_any_builtin_template() {
        let m = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
        let conv = [
            m("system", "Be brief."),
            m("user", "Hi there"),
            m("assistant", "Hello friend"),
            m("user", "Bye now"),
            m("assistant", "See you"),
        ];
        for tmpl in ["chatml", "llama3", "gemma", "phi3", "mistral-v7", "deepseek3", "llama2"] {
            let segs = chat_segments(tmpl, &conv).unwrap_or_else(|e| panic!("{tmpl}: {e:#}"));
            let trained: Vec<&str> = segs.iter().filter(|s| s.1).map(|s| s.0.as_str()).collect();
            let other: String = segs.iter().filter(|s| !s.1).map(|s| s.0.as_str()).collect();
            assert_eq!(trained.len(), 2, "{tmpl}: {segs:?}");
            assert!(trained[0].trim_start().starts_with("Hello friend"), "{tmpl}: {:?}", trained[0]);
            assert!(trained[1].trim_start().starts_with("See you"), "{tmpl}: {:?}", trained[1]);
            assert!(other.contains("Hi there") && other.contains("Bye now"), "{tmpl}: {other:?}");
            assert!(!other.contains("Hello friend") && !other.contains("See you"), "{tmpl}: {other:?}");
        }
    }

    #[test]
    fn bad_lines_are_classified() {
        assert!(parse_line("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}").is_err());
        assert!(parse_line("{\"prompt\":1}").is_err());
        assert!(parse_line("not json").is_err());
        assert!(parse_line("{\"prompt\":\"a\",\"completion\":\"b\"}").is_ok());
    }
}
