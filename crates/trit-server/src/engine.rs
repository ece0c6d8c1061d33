//! The engine thread: it alone owns the llama context. Each step it admits queued requests
//! into free slots (one slot = one sequence id of the KV cache), then runs ONE `llama_decode`
//! holding the next token of every generating slot plus prompt chunks of slots still in
//! prefill (continuous batching), and samples each slot's token with that slot's sampler.
//! Results go back to the HTTP handlers through per-request channels; a closed channel
//! (the client went away) frees the slot and clears its cache cells.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use trit_llama::{Batch, Context, LoraAdapter, Model, Sampler, SamplerParams, Token};

use crate::metrics::Metrics;
use crate::text::{find_stop, held_back_len, take_utf8};

/// What a request asks the engine to generate.
#[derive(Debug, Clone)]
pub struct GenParams {
    /// Tokens to predict; negative = until end of generation or the slot's context is full.
    pub n_predict: i32,
    pub sampling: SamplerParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Scale of every loaded adapter for this request (index = adapter id).
    pub lora: Vec<f32>,
}

pub struct Request {
    pub prompt: Vec<Token>,
    pub params: GenParams,
    pub tx: UnboundedSender<Event>,
}

/// What the engine sends back for a request, in order: Text*, then Done or Error.
#[derive(Debug)]
pub enum Event {
    Text { text: String, tokens: Vec<Token> },
    Done(Box<Final>),
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopType {
    Eos,
    Limit,
    Word,
}

impl StopType {
    pub fn as_str(self) -> &'static str {
        match self {
            StopType::Eos => "eos",
            StopType::Limit => "limit",
            StopType::Word => "word",
        }
    }

    /// OpenAI's finish_reason.
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopType::Eos | StopType::Word => "stop",
            StopType::Limit => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Final {
    pub slot: usize,
    pub stop_type: StopType,
    pub stopping_word: String,
    pub n_prompt: usize,
    pub n_predicted: usize,
    /// The slot's context filled up before the request was done.
    pub truncated: bool,
    pub prompt_ms: f64,
    pub predicted_ms: f64,
}

/// A request in a slot.
struct Active {
    prompt: Vec<Token>,
    /// Prompt tokens already in the KV cache.
    n_fed: usize,
    /// Next position of this sequence.
    n_past: i32,
    params: GenParams,
    tx: UnboundedSender<Event>,
    sampler: Sampler,
    /// Sampled, sent, not yet decoded (the next step feeds it).
    pending: Option<Token>,
    n_predicted: usize,
    text: Vec<u8>,
    /// Bytes of `text` already sent.
    sent: usize,
    unsent_tokens: Vec<Token>,
    t_start: Instant,
    t_prompt_done: Option<Instant>,
}

enum Outcome {
    Continue,
    Finished(StopType, String, bool),
}

impl Active {
    fn new(r: Request, n_vocab: usize) -> Self {
        let mut sampler = Sampler::new(&r.params.sampling, n_vocab);
        let p = &r.params.sampling;
        if p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for &t in &r.prompt {
                sampler.accept(t);
            }
        }
        Self {
            prompt: r.prompt,
            n_fed: 0,
            n_past: 0,
            params: r.params,
            tx: r.tx,
            sampler,
            pending: None,
            n_predicted: 0,
            text: Vec::new(),
            sent: 0,
            unsent_tokens: Vec::new(),
            t_start: Instant::now(),
            t_prompt_done: None,
        }
    }

    fn in_prefill(&self) -> bool {
        self.n_fed < self.prompt.len()
    }

    /// Send what can be sent: complete UTF-8, not a possible start of a stop word.
    fn flush(&mut self, all: bool) {
        let end = if all { self.text.len() } else { self.text.len() - held_back_len(&self.text, &self.params.stop) };
        if end <= self.sent && self.unsent_tokens.is_empty() {
            return;
        }
        let (text, used) = take_utf8(&self.text[self.sent..end.max(self.sent)], all);
        if text.is_empty() && !all {
            return;
        }
        self.sent += used;
        let tokens = std::mem::take(&mut self.unsent_tokens);
        let _ = self.tx.send(Event::Text { text, tokens });
    }

    fn on_token(&mut self, model: &Model, t: Token, n_ctx_slot: i32) -> Outcome {
        if !self.params.ignore_eos && model.is_eog(t) {
            return Outcome::Finished(StopType::Eos, String::new(), false);
        }
        self.n_predicted += 1;
        self.unsent_tokens.push(t);
        let from = self.sent.saturating_sub(self.params.stop.iter().map(String::len).max().unwrap_or(0));
        self.text.extend_from_slice(&model.token_bytes(t, false));
        if let Some((at, word)) = find_stop(&self.text, from, &self.params.stop) {
            self.text.truncate(at);
            return Outcome::Finished(StopType::Word, word, false);
        }
        self.flush(false);
        if self.params.n_predict >= 0 && self.n_predicted as i32 >= self.params.n_predict {
            return Outcome::Finished(StopType::Limit, String::new(), false);
        }
        if self.n_past + 1 > n_ctx_slot {
            return Outcome::Finished(StopType::Limit, String::new(), true);
        }
        self.pending = Some(t);
        Outcome::Continue
    }

    fn finish(mut self, slot: usize, stop_type: StopType, stopping_word: String, truncated: bool, m: &Metrics) {
        self.flush(true);
        let now = Instant::now();
        let prompt_done = self.t_prompt_done.unwrap_or(now);
        let f = Final {
            slot,
            stop_type,
            stopping_word,
            n_prompt: self.prompt.len(),
            n_predicted: self.n_predicted,
            truncated,
            prompt_ms: (prompt_done - self.t_start).as_secs_f64() * 1e3,
            predicted_ms: (now - prompt_done).as_secs_f64() * 1e3,
        };
        m.requests_done.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Event::Done(Box::new(f)));
    }
}

/// Run the engine until every request sender is gone and no work is left.
pub fn run<'m>(
    ctx: &mut Context<'m>,
    adapters: &[LoraAdapter<'m>],
    rx: mpsc::Receiver<Request>,
    metrics: Arc<Metrics>,
    cont_batching: bool,
) {
    let model = ctx.model();
    let n_vocab = model.n_vocab();
    let n_slots = ctx.n_seq_max() as usize;
    let n_ctx_slot = ctx.n_ctx_seq() as i32;
    let n_batch = (ctx.n_batch() as usize).max(1);
    let mut slots: Vec<Option<Active>> = (0..n_slots).map(|_| None).collect();
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut batch = Batch::new(n_batch);
    let mut applied: Option<Vec<f32>> = None;
    let mut next_group = 0usize;
    let mut senders_gone = false;

    loop {
        // 1. Take new requests: block only when there is nothing to do.
        if slots.iter().all(Option::is_none) && queue.is_empty() {
            if senders_gone {
                return;
            }
            match rx.recv() {
                Ok(r) => queue.push_back(r),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(r) => queue.push_back(r),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    senders_gone = true;
                    break;
                }
            }
        }

        // 2. Clients that went away free their slot and its cache cells.
        for (i, s) in slots.iter_mut().enumerate() {
            if s.as_ref().is_some_and(|a| a.tx.is_closed()) {
                *s = None;
                ctx.remove_positions(i as i32, -1, -1);
                metrics.requests_cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        queue.retain(|r| !r.tx.is_closed());

        // 3. Admit queued requests into free slots (without continuous batching, only
        //    when no slot is generating).
        let generating = slots.iter().flatten().any(|a| !a.in_prefill());
        if cont_batching || !generating {
            for (i, s) in slots.iter_mut().enumerate() {
                if s.is_none() {
                    let Some(r) = queue.pop_front() else { break };
                    ctx.remove_positions(i as i32, -1, -1);
                    *s = Some(Active::new(r, n_vocab));
                }
            }
        }
        for (i, s) in slots.iter().enumerate() {
            metrics.slot_busy[i].store(s.is_some(), Ordering::Relaxed);
        }
        let busy = slots.iter().filter(|s| s.is_some()).count();
        metrics.requests_processing.store(busy as u64, Ordering::Relaxed);
        metrics.requests_deferred.store(queue.len() as u64, Ordering::Relaxed);
        if busy == 0 {
            continue;
        }

        // 4. LoRA scales are per context: one step serves the slots that share one set
        //    of scales, taking turns between sets.
        let pick = (0..n_slots).map(|k| (next_group + k) % n_slots).find(|&i| slots[i].is_some()).unwrap_or(0);
        next_group = pick + 1;
        let lora = slots[pick].as_ref().map(|a| a.params.lora.clone()).unwrap_or_default();
        if applied.as_ref() != Some(&lora) {
            let pairs: Vec<(&LoraAdapter<'m>, f32)> =
                adapters.iter().zip(lora.iter().copied()).filter(|(_, s)| *s != 0.0).collect();
            if let Err(e) = ctx.set_adapters(&pairs) {
                if let Some(a) = slots[pick].take() {
                    let _ = a.tx.send(Event::Error(e.to_string()));
                }
                continue;
            }
            applied = Some(lora.clone());
        }
        let in_group = |a: &Active| a.params.lora == lora;

        // 5. One batch: a token for every generating slot, then prompt chunks.
        batch.clear();
        let mut outputs: Vec<(usize, i32)> = Vec::new();
        let mut fed: Vec<(usize, usize)> = Vec::new();
        let mut n_prompt_tokens = 0usize;
        for (i, s) in slots.iter().enumerate() {
            if batch.len() >= n_batch {
                break;
            }
            if let Some(a) = s.as_ref().filter(|a| in_group(a)) {
                if let Some(t) = a.pending {
                    outputs.push((i, batch.len() as i32));
                    fed.push((i, 1));
                    let _ = batch.push(t, a.n_past, i as i32, true);
                }
            }
        }
        for (i, s) in slots.iter().enumerate() {
            let Some(a) = s.as_ref().filter(|a| in_group(a) && a.in_prefill()) else { continue };
            let room = n_batch - batch.len();
            if room == 0 {
                break;
            }
            let take = room.min(a.prompt.len() - a.n_fed);
            for k in 0..take {
                let last = a.n_fed + k + 1 == a.prompt.len();
                if last {
                    outputs.push((i, batch.len() as i32));
                }
                let _ = batch.push(a.prompt[a.n_fed + k], a.n_past + k as i32, i as i32, last);
            }
            n_prompt_tokens += take;
            fed.push((i, take));
        }
        if batch.is_empty() {
            continue;
        }

        let t0 = Instant::now();
        let result = ctx.decode(&batch);
        let dt_us = t0.elapsed().as_micros() as u64;
        metrics.n_decode_total.fetch_add(1, Ordering::Relaxed);
        metrics.busy_slots_total.fetch_add(fed.len() as u64, Ordering::Relaxed);
        let n_gen = batch.len() - n_prompt_tokens;
        let prompt_us = dt_us * n_prompt_tokens as u64 / batch.len() as u64;
        metrics.prompt_tokens_total.fetch_add(n_prompt_tokens as u64, Ordering::Relaxed);
        metrics.prompt_us_total.fetch_add(prompt_us, Ordering::Relaxed);
        metrics.tokens_predicted_total.fetch_add(n_gen as u64, Ordering::Relaxed);
        metrics.predict_us_total.fetch_add(dt_us - prompt_us, Ordering::Relaxed);
        if let Err(e) = result {
            // The whole batch failed: fail its requests, keep serving the others.
            for &(i, _) in &fed {
                if let Some(a) = slots[i].take() {
                    let _ = a.tx.send(Event::Error(format!("decode failed: {e}")));
                }
                ctx.remove_positions(i as i32, -1, -1);
            }
            continue;
        }
        for &(i, n) in &fed {
            if let Some(a) = slots[i].as_mut() {
                a.n_past += n as i32;
                if a.pending.take().is_none() {
                    a.n_fed += n;
                    if !a.in_prefill() {
                        a.t_prompt_done = Some(Instant::now());
                    }
                }
            }
        }
        let max_pos = slots.iter().flatten().map(|a| a.n_past as u64).max().unwrap_or(0);
        metrics.n_tokens_max.fetch_max(max_pos, Ordering::Relaxed);

        // 6. Sample each slot's next token from its row of the batch.
        for (i, idx) in outputs {
            let Some(a) = slots[i].as_mut() else { continue };
            let outcome = if a.params.n_predict == 0 {
                Outcome::Finished(StopType::Limit, String::new(), false)
            } else {
                let t = a.sampler.sample(ctx, idx);
                a.on_token(model, t, n_ctx_slot)
            };
            if let Outcome::Finished(stop, word, truncated) = outcome {
                if let Some(a) = slots[i].take() {
                    a.finish(i, stop, word, truncated, &metrics);
                }
                ctx.remove_positions(i as i32, -1, -1);
            }
        }
    }
}
