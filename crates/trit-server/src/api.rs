//! HTTP endpoints: llama-server's native API and the OpenAI-compatible one.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use trit_llama::{ChatMessage, Model, SamplerParams, Token};

use crate::engine::{Event, Final, GenParams, Request};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Everything the handlers share.
pub struct AppState {
    pub model: Arc<Model>,
    pub tx: Mutex<mpsc::Sender<Request>>,
    pub metrics: Arc<Metrics>,
    pub api_keys: Vec<String>,
    pub metrics_enabled: bool,
    pub slots_enabled: bool,
    pub model_id: String,
    pub aliases: Vec<String>,
    pub chat_template: String,
    pub n_ctx_slot: usize,
    pub n_slots: usize,
    pub defaults: SamplerParams,
    pub n_predict: i32,
    pub timeout: Duration,
    pub lora_paths: Vec<String>,
    /// Global adapter scales (`--lora`, POST /lora-adapters); a request's `lora` overrides.
    pub lora_scales: Mutex<Vec<f32>>,
    pub created: u64,
    pub next_id: AtomicU64,
}

pub type St = State<Arc<AppState>>;

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `--api-key`: every endpoint but /health needs `Authorization: Bearer KEY` (or `X-Api-Key`).
pub async fn auth(State(st): St, req: HttpRequest, next: Next) -> Response {
    let path = req.uri().path();
    if !st.api_keys.is_empty() && path != "/health" && path != "/v1/health" {
        let h = |name| req.headers().get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
        let bearer = h(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        let x_key = h(header::HeaderName::from_static("x-api-key"));
        let ok = |k: Option<&str>| k.is_some_and(|k| st.api_keys.iter().any(|key| key == k));
        if !ok(bearer) && !ok(x_key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("File Not Found")
}

/// Parse a request body as a JSON object, with llama-server's errors.
fn body_json(body: Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "invalid_request_error" } else { "server_error" };
        ApiError::new(status, kind, format!("could not read the request body: {e}"))
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON in the request body: {e}"))),
    }
}

// ---- typed field access with 400s ----

fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn f32_field(m: &Map<String, Value>, key: &str, default: f32) -> ApiResult<f32> {
    match field(m, key) {
        None => Ok(default),
        Some(v) => {
            v.as_f64().map(|x| x as f32).ok_or_else(|| ApiError::bad_request(format!("'{key}' must be a number")))
        }
    }
}

fn i64_field(m: &Map<String, Value>, key: &str) -> ApiResult<Option<i64>> {
    match field(m, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("'{key}' must be an integer"))),
    }
}

fn bool_field(m: &Map<String, Value>, key: &str, default: bool) -> ApiResult<bool> {
    match field(m, key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| ApiError::bad_request(format!("'{key}' must be a boolean"))),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match field(m, key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| ApiError::bad_request(format!("'{key}' must be a string"))),
    }
}

impl AppState {
    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{prefix}-{:x}{n:04x}", t & 0xffff_ffff_ffff)
    }

    /// Adapter scales from a `lora` field (`[{"id":0,"scale":0.5}]`; unlisted adapters get 0).
    fn parse_lora(&self, v: &Value) -> ApiResult<Vec<f32>> {
        let items = v.as_array().ok_or_else(|| ApiError::bad_request("'lora' must be an array of {id, scale}"))?;
        let mut scales = vec![0.0; self.lora_paths.len()];
        for it in items {
            let id = it.get("id").and_then(Value::as_u64);
            let scale = it.get("scale").and_then(Value::as_f64);
            match (id, scale) {
                (Some(id), Some(scale)) if (id as usize) < scales.len() => scales[id as usize] = scale as f32,
                (Some(id), Some(_)) => return Err(ApiError::bad_request(format!("invalid LoRA adapter id {id}"))),
                _ => return Err(ApiError::bad_request("each 'lora' entry needs an integer 'id' and a number 'scale'")),
            }
        }
        Ok(scales)
    }

    /// Generation settings from a request, over the server's defaults.
    fn gen_params(&self, m: &Map<String, Value>) -> ApiResult<GenParams> {
        let d = &self.defaults;
        let seed = match i64_field(m, "seed")? {
            None | Some(-1) => d.seed,
            Some(s) if (0..=u32::MAX as i64).contains(&s) => s as u32,
            Some(s) => return Err(ApiError::bad_request(format!("'seed' out of range: {s}"))),
        };
        let sampling = SamplerParams {
            seed,
            temp: f32_field(m, "temperature", d.temp)?,
            top_k: i64_field(m, "top_k")?.map(|v| v as i32).unwrap_or(d.top_k),
            top_p: f32_field(m, "top_p", d.top_p)?,
            min_p: f32_field(m, "min_p", d.min_p)?,
            repeat_penalty: f32_field(m, "repeat_penalty", d.repeat_penalty)?,
            repeat_last_n: i64_field(m, "repeat_last_n")?.map(|v| v as i32).unwrap_or(d.repeat_last_n),
            frequency_penalty: f32_field(m, "frequency_penalty", d.frequency_penalty)?,
            presence_penalty: f32_field(m, "presence_penalty", d.presence_penalty)?,
        };
        let mut n_predict = self.n_predict;
        for key in ["n_predict", "max_tokens", "max_completion_tokens"] {
            if let Some(n) = i64_field(m, key)? {
                n_predict = n.clamp(-1, i32::MAX as i64) as i32;
            }
        }
        let stop = match field(m, "stop") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("'stop' must be a string or an array of strings"))?,
            Some(_) => return Err(ApiError::bad_request("'stop' must be a string or an array of strings")),
        };
        if i64_field(m, "n")?.is_some_and(|n| n != 1) || i64_field(m, "n_cmpl")?.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only one completion per request is supported (n = 1)"));
        }
        let lora = match field(m, "lora") {
            Some(v) => self.parse_lora(v)?,
            None => self.lora_scales.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        Ok(GenParams { n_predict, sampling, stop, ignore_eos: bool_field(m, "ignore_eos", false)?, lora })
    }

    fn tokenize_prompt(&self, text: &str) -> ApiResult<Vec<Token>> {
        let mut t = self.model.tokenize(text, true, true)?;
        // A template that writes BOS itself plus add_bos would double it.
        if t.len() >= 2 && t[0] == self.model.bos() && t[1] == self.model.bos() {
            t.remove(0);
        }
        Ok(t)
    }

    /// A `prompt` field: a string, or token ids mixed with strings.
    fn prompt_tokens(&self, v: Option<&Value>) -> ApiResult<Vec<Token>> {
        match v {
            None => Err(ApiError::bad_request("'prompt' is required")),
            Some(Value::String(s)) => self.tokenize_prompt(s),
            Some(Value::Array(a)) if a.len() == 1 && (a[0].is_string() || a[0].is_array()) => {
                self.prompt_tokens(Some(&a[0]))
            }
            Some(Value::Array(a)) => {
                if a.iter().any(|x| x.is_array() || x.is_object()) {
                    return Err(ApiError::bad_request("multiple prompts in one request are not supported"));
                }
                let mut out = Vec::new();
                for (i, x) in a.iter().enumerate() {
                    match x {
                        Value::String(s) => {
                            let mut t = self.model.tokenize(s, i == 0, true)?;
                            out.append(&mut t);
                        }
                        Value::Number(n) => {
                            let id = n.as_i64().filter(|&id| id >= 0 && (id as usize) < self.model.n_vocab());
                            out.push(id.ok_or_else(|| ApiError::bad_request(format!("invalid token id {n}")))? as Token);
                        }
                        _ => return Err(ApiError::bad_request("'prompt' array items must be strings or token ids")),
                    }
                }
                Ok(out)
            }
            Some(_) => Err(ApiError::bad_request("'prompt' must be a string or an array")),
        }
    }

    fn chat_prompt(&self, m: &Map<String, Value>) -> ApiResult<String> {
        let msgs = field(m, "messages")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::bad_request("'messages' must be an array"))?;
        if msgs.is_empty() {
            return Err(ApiError::bad_request("'messages' must not be empty"));
        }
        let mut out = Vec::new();
        for msg in msgs {
            let role = msg
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("message without 'role'"))?;
            let content = match msg.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => s.push_str(t),
                            _ => return Err(ApiError::bad_request("only text content parts are supported")),
                        }
                    }
                    s
                }
                None | Some(Value::Null) => String::new(),
                Some(_) => return Err(ApiError::bad_request("message 'content' must be a string or an array")),
            };
            out.push(ChatMessage { role: role.to_string(), content });
        }
        Model::apply_chat_template(&self.chat_template, &out, true).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Queue a generation; returns its event channel.
    fn submit(&self, prompt: Vec<Token>, params: GenParams) -> ApiResult<UnboundedReceiver<Event>> {
        if prompt.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        if prompt.len() >= self.n_ctx_slot {
            return Err(ApiError::bad_request(format!(
                "the request exceeds the available context size ({} prompt tokens, {} per slot): try increasing it",
                prompt.len(),
                self.n_ctx_slot
            )));
        }
        let (tx, rx) = unbounded_channel();
        let sender = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        sender.send(Request { prompt, params, tx }).map_err(|_| ApiError::unavailable("the engine has stopped"))?;
        Ok(rx)
    }

    fn generation_settings(&self, p: Option<&GenParams>) -> Value {
        let d = GenParams {
            n_predict: self.n_predict,
            sampling: self.defaults.clone(),
            stop: vec![],
            ignore_eos: false,
            lora: self.lora_scales.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        let p = p.unwrap_or(&d);
        let s = &p.sampling;
        json!({
            "n_ctx": self.n_ctx_slot, "n_predict": p.n_predict, "max_tokens": p.n_predict, "model": self.model_id,
            "seed": s.seed, "temperature": s.temp, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
            "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n,
            "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
            "stop": p.stop, "ignore_eos": p.ignore_eos, "stream": false,
            "lora": p.lora.iter().enumerate().map(|(id, s)| json!({"id": id, "scale": s})).collect::<Vec<_>>(),
            "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
        })
    }
}

/// Wait for a whole generation.
async fn collect(st: &AppState, mut rx: UnboundedReceiver<Event>) -> ApiResult<(String, Vec<Token>, Final)> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let deadline = tokio::time::Instant::now() + st.timeout;
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout_error", "generation timed out"))?;
        match ev {
            Some(Event::Text { text: t, tokens: mut ids }) => {
                text.push_str(&t);
                tokens.append(&mut ids);
            }
            Some(Event::Done(f)) => return Ok((text, tokens, *f)),
            Some(Event::Error(e)) => return Err(ApiError::internal(e)),
            None => return Err(ApiError::internal("the engine dropped the request")),
        }
    }
}

/// A server-sent-events response: `f` turns each engine event into `data:` payloads and
/// says whether the stream ends. Dropping the response (client gone) drops the channel,
/// which frees the slot.
fn sse<F>(st: &AppState, rx: UnboundedReceiver<Event>, f: F) -> Response
where
    F: FnMut(Event) -> (Vec<String>, bool) + Send + 'static,
{
    let timeout = st.timeout;
    let stream = futures_util::stream::unfold(Some((rx, f)), move |state| async move {
        let (mut rx, mut f) = state?;
        let ev = match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => Event::Error("the engine dropped the request".into()),
            Err(_) => Event::Error("generation timed out".into()),
        };
        let is_err = matches!(ev, Event::Error(_));
        let (items, done) = f(ev);
        let next = if done || is_err { None } else { Some((rx, f)) };
        Some((items, next))
    })
    .flat_map(|items| {
        futures_util::stream::iter(
            items.into_iter().map(|s| Ok::<_, Infallible>(Bytes::from(format!("data: {s}\n\n")))),
        )
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("response").into_response())
}

fn error_json(e: &str) -> String {
    ApiError::internal(e).body().to_string()
}

fn timings(f: &Final) -> Value {
    let per = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
    let rate = |ms: f64, n: usize| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    json!({
        "prompt_n": f.n_prompt, "prompt_ms": f.prompt_ms,
        "prompt_per_token_ms": per(f.prompt_ms, f.n_prompt), "prompt_per_second": rate(f.prompt_ms, f.n_prompt),
        "predicted_n": f.n_predicted, "predicted_ms": f.predicted_ms,
        "predicted_per_token_ms": per(f.predicted_ms, f.n_predicted),
        "predicted_per_second": rate(f.predicted_ms, f.n_predicted),
    })
}

fn usage(f: &Final) -> Value {
    json!({"prompt_tokens": f.n_prompt, "completion_tokens": f.n_predicted, "total_tokens": f.n_prompt + f.n_predicted})
}

// ---- endpoints ----

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn models(State(st): St) -> Json<Value> {
    let m = &st.model;
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.model_id, "object": "model", "created": st.created, "owned_by": "llamacpp",
            "aliases": st.aliases,
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
            "meta": {"n_vocab": m.n_vocab(), "n_ctx_train": m.n_ctx_train(), "n_params": m.n_params(), "size": m.size()},
        }],
    }))
}

pub async fn props(State(st): St) -> Json<Value> {
    Json(json!({
        "default_generation_settings": {
            "n_ctx": st.n_ctx_slot, "params": st.generation_settings(None), "is_processing": false,
        },
        "total_slots": st.n_slots,
        "model_alias": st.model_id,
        "model_path": st.model.path().display().to_string(),
        "chat_template": st.chat_template,
        "modalities": {"vision": false, "audio": false},
        "build_info": format!("trit {} ({})", env!("CARGO_PKG_VERSION"), trit_llama_pin()),
        "is_sleeping": false,
    }))
}

fn trit_llama_pin() -> &'static str {
    "llama.cpp via llama-cpp-sys-2 0.1.161"
}

fn not_supported(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported_error", format!("This server does not support {what}"))
}

pub async fn slots(State(st): St) -> ApiResult<Json<Value>> {
    if !st.slots_enabled {
        return Err(not_supported("slots endpoint (remove --no-slots)"));
    }
    let v: Vec<Value> = st
        .metrics
        .slot_busy
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"id": i, "n_ctx": st.n_ctx_slot, "is_processing": b.load(Ordering::Relaxed)}))
        .collect();
    Ok(Json(Value::Array(v)))
}

pub async fn metrics(State(st): St) -> ApiResult<Response> {
    if !st.metrics_enabled {
        return Err(not_supported("metrics endpoint (start it with --metrics)"));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response())
}

pub async fn tokenize(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let m = body_json(body)?;
    let content = str_field(&m, "content")?.ok_or_else(|| ApiError::bad_request("'content' is required"))?;
    let ids =
        st.model.tokenize(content, bool_field(&m, "add_special", false)?, bool_field(&m, "parse_special", true)?)?;
    let tokens: Vec<Value> = if bool_field(&m, "with_pieces", false)? {
        ids.iter()
            .map(|&id| {
                let b = st.model.token_bytes(id, true);
                let piece = match String::from_utf8(b) {
                    Ok(s) => json!(s),
                    Err(e) => json!(e.into_bytes()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })))
}

pub async fn detokenize(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let m = body_json(body)?;
    let ids = match field(&m, "tokens") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_i64().filter(|&id| id >= 0 && (id as usize) < st.model.n_vocab()).map(|id| id as Token))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_request("'tokens' must be valid token ids"))?,
        Some(_) => return Err(ApiError::bad_request("'tokens' must be an array")),
    };
    Ok(Json(json!({ "content": st.model.detokenize(&ids, true) })))
}

pub async fn apply_template(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let m = body_json(body)?;
    Ok(Json(json!({ "prompt": st.chat_prompt(&m)? })))
}

pub async fn lora_get(State(st): St) -> Json<Value> {
    let scales = st.lora_scales.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let v: Vec<Value> = st
        .lora_paths
        .iter()
        .zip(scales)
        .enumerate()
        .map(|(id, (path, scale))| json!({"id": id, "path": path, "scale": scale}))
        .collect();
    Json(Value::Array(v))
}

pub async fn lora_post(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), "invalid_request_error", e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let scales = st.parse_lora(&v)?;
    *st.lora_scales.lock().unwrap_or_else(|e| e.into_inner()) = scales;
    Ok(Json(json!({"success": true})))
}

/// POST /completion (llama.cpp's native format).
pub async fn completion(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let m = body_json(body)?;
    let prompt = st.prompt_tokens(field(&m, "prompt"))?;
    let params = st.gen_params(&m)?;
    let return_tokens = bool_field(&m, "return_tokens", false)?;
    let stream = bool_field(&m, "stream", false)?;
    let prompt_text = st.model.detokenize(&prompt, true);
    let settings = st.generation_settings(Some(&params));
    let rx = st.submit(prompt, params)?;
    let model_id = st.model_id.clone();
    let final_obj = move |content: String, tokens: Vec<Token>, f: &Final| {
        json!({
            "index": 0, "content": content, "tokens": tokens, "id_slot": f.slot, "stop": true, "model": model_id,
            "tokens_predicted": f.n_predicted, "tokens_evaluated": f.n_prompt, "generation_settings": settings,
            "prompt": prompt_text, "truncated": f.truncated, "stop_type": f.stop_type.as_str(),
            "stopping_word": f.stopping_word, "tokens_cached": 0, "timings": timings(f),
        })
    };
    if !stream {
        let (text, tokens, f) = collect(&st, rx).await?;
        let tokens = if return_tokens { tokens } else { Vec::new() };
        return Ok(Json(final_obj(text, tokens, &f)).into_response());
    }
    Ok(sse(&st, rx, move |ev| match ev {
        Event::Text { text, tokens } => {
            (vec![json!({"index": 0, "content": text, "tokens": tokens, "stop": false}).to_string()], false)
        }
        Event::Done(f) => (vec![final_obj(String::new(), Vec::new(), &f).to_string()], true),
        Event::Error(e) => (vec![error_json(&e)], true),
    }))
}

/// POST /v1/completions.
pub async fn v1_completions(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let m = body_json(body)?;
    let prompt = st.prompt_tokens(field(&m, "prompt"))?;
    let params = st.gen_params(&m)?;
    let stream = bool_field(&m, "stream", false)?;
    let rx = st.submit(prompt, params)?;
    let (id, created, model) = (st.id("cmpl"), now_s(), st.model_id.clone());
    let chunk = move |text: &str, finish: Option<&str>, f: Option<&Final>| {
        let mut v = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
        });
        if let Some(f) = f {
            v["usage"] = usage(f);
            v["timings"] = timings(f);
        }
        v
    };
    if !stream {
        let (text, _, f) = collect(&st, rx).await?;
        return Ok(Json(chunk(&text, Some(f.stop_type.finish_reason()), Some(&f))).into_response());
    }
    Ok(sse(&st, rx, move |ev| match ev {
        Event::Text { text, .. } => (vec![chunk(&text, None, None).to_string()], false),
        Event::Done(f) => {
            (vec![chunk("", Some(f.stop_type.finish_reason()), Some(&f)).to_string(), "[DONE]".into()], true)
        }
        Event::Error(e) => (vec![error_json(&e)], true),
    }))
}

/// POST /v1/chat/completions.
pub async fn chat_completions(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let m = body_json(body)?;
    let text = st.chat_prompt(&m)?;
    let prompt = st.tokenize_prompt(&text)?;
    let params = st.gen_params(&m)?;
    let stream = bool_field(&m, "stream", false)?;
    let include_usage =
        field(&m, "stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let rx = st.submit(prompt, params)?;
    let (id, created, model) = (st.id("chatcmpl"), now_s(), st.model_id.clone());
    if !stream {
        let (content, _, f) = collect(&st, rx).await?;
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0, "message": {"role": "assistant", "content": content},
                "logprobs": null, "finish_reason": f.stop_type.finish_reason(),
            }],
            "usage": usage(&f), "timings": timings(&f),
        }))
        .into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut first = true;
    Ok(sse(&st, rx, move |ev| {
        let mut out = Vec::new();
        if first {
            first = false;
            out.push(chunk(json!({"role": "assistant", "content": null}), None).to_string());
        }
        match ev {
            Event::Text { text, .. } => {
                out.push(chunk(json!({ "content": text }), None).to_string());
                (out, false)
            }
            Event::Done(f) => {
                let mut last = chunk(json!({}), Some(f.stop_type.finish_reason()));
                last["timings"] = timings(&f);
                out.push(last.to_string());
                if include_usage {
                    let mut u = chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage(&f);
                    out.push(u.to_string());
                }
                out.push("[DONE]".into());
                (out, true)
            }
            Event::Error(e) => {
                out.push(error_json(&e));
                (out, true)
            }
        }
    }))
}
