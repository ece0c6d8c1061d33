//! Counters the engine keeps and `/metrics` renders in Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub prompt_tokens_total: AtomicU64,
    pub prompt_us_total: AtomicU64,
    pub tokens_predicted_total: AtomicU64,
    pub predict_us_total: AtomicU64,
    pub requests_processing: AtomicU64,
    pub requests_deferred: AtomicU64,
    pub requests_done: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub n_tokens_max: AtomicU64,
    pub n_decode_total: AtomicU64,
    /// Sum over decode calls of the slots in each call.
    pub busy_slots_total: AtomicU64,
    pub slot_busy: Vec<AtomicBool>,
}

impl Metrics {
    pub fn new(n_slots: usize) -> Self {
        Self { slot_busy: (0..n_slots).map(|_| AtomicBool::new(false)).collect(), ..Default::default() }
    }

    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let prompt_s = g(&self.prompt_us_total) as f64 / 1e6;
        let predict_s = g(&self.predict_us_total) as f64 / 1e6;
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let n_decode = g(&self.n_decode_total);
        let rows: [(&str, &str, &str, f64); 12] = [
            (
                "prompt_tokens_total",
                "counter",
                "Number of prompt tokens processed.",
                g(&self.prompt_tokens_total) as f64,
            ),
            ("prompt_seconds_total", "counter", "Prompt process time", prompt_s),
            ("tokens_predicted_total", "counter", "Number of generation tokens processed.", {
                g(&self.tokens_predicted_total) as f64
            }),
            ("tokens_predicted_seconds_total", "counter", "Predict process time", predict_s),
            ("n_decode_total", "counter", "Total number of llama_decode() calls", n_decode as f64),
            ("n_tokens_max", "counter", "Largest observed n_tokens.", g(&self.n_tokens_max) as f64),
            ("requests_completed_total", "counter", "Requests answered in full.", g(&self.requests_done) as f64),
            ("requests_cancelled_total", "counter", "Requests whose client went away.", {
                g(&self.requests_cancelled) as f64
            }),
            ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", {
                rate(g(&self.prompt_tokens_total), prompt_s)
            }),
            ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", {
                rate(g(&self.tokens_predicted_total), predict_s)
            }),
            ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call", {
                if n_decode > 0 {
                    g(&self.busy_slots_total) as f64 / n_decode as f64
                } else {
                    0.0
                }
            }),
            ("requests_processing", "gauge", "Number of requests processing.", g(&self.requests_processing) as f64),
        ];
        let mut s = String::new();
        let mut row = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {v}");
        };
        for (name, kind, help, v) in rows {
            row(name, kind, help, v);
        }
        row("requests_deferred", "gauge", "Number of requests deferred.", g(&self.requests_deferred) as f64);
        s
    }
}
