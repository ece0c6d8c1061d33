//! `trit serve` / `llama-server`: llama-server's HTTP API (native and OpenAI-compatible)
//! over the pinned llama.cpp, with parallel slots and continuous batching.
//!
//! One engine thread owns the llama context ([`engine`]); HTTP handlers ([`api`]) tokenize,
//! validate and queue requests, and read results back from per-request channels.

pub mod api;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod text;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use trit_llama::{Context, ContextParams, LoraAdapter, Model, ModelParams, SamplerParams};

use crate::api::AppState;
use crate::metrics::Metrics;

/// Everything `llama-server`'s flags set.
#[derive(Debug, Clone)]
pub struct Config {
    pub model: PathBuf,
    pub model_params: ModelParams,
    /// `n_ctx` is the total over all slots (0 = the model's training context, per slot as
    /// llama-server does); `n_seq_max` is ignored: `n_parallel` sets it.
    pub ctx: ContextParams,
    pub n_parallel: usize,
    pub cont_batching: bool,
    pub host: String,
    pub port: u16,
    /// Accepted API keys (`--api-key`, comma-separated; `--api-key-file`); empty = no check.
    pub api_keys: Vec<String>,
    /// `--metrics`: serve /metrics (llama-server's default is off).
    pub metrics: bool,
    /// `--slots` / `--no-slots`: serve /slots (default on).
    pub slots: bool,
    /// Adapters and their initial scales (`--lora`, `--lora-scaled`).
    pub loras: Vec<(PathBuf, f32)>,
    pub lora_init_without_apply: bool,
    pub chat_template: Option<String>,
    pub aliases: Vec<String>,
    pub timeout: Duration,
    pub sampling: SamplerParams,
    pub n_predict: i32,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Config {
    pub fn new(model: PathBuf) -> Self {
        Self {
            model,
            model_params: ModelParams::default(),
            ctx: ContextParams { n_ctx: 0, ..Default::default() },
            n_parallel: 4,
            cont_batching: true,
            host: "127.0.0.1".into(),
            port: 8080,
            api_keys: Vec::new(),
            metrics: false,
            slots: true,
            loras: Vec::new(),
            lora_init_without_apply: false,
            chat_template: None,
            aliases: Vec::new(),
            timeout: Duration::from_secs(3600),
            sampling: SamplerParams::default(),
            n_predict: -1,
            body_limit: 4 << 20,
        }
    }
}

/// A bound, ready server: the model is loaded and the engine thread runs.
pub struct Server {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    router: Router,
    pub state: Arc<AppState>,
}

/// Load the model, start the engine and bind the listener (port 0 picks a free port).
pub async fn bind(cfg: Config) -> Result<Server> {
    let model = Arc::new(Model::load(&cfg.model, &cfg.model_params)?);
    let n_parallel = cfg.n_parallel.max(1);
    let mut ctx_params = cfg.ctx.clone();
    if ctx_params.n_ctx == 0 {
        ctx_params.n_ctx = model.n_ctx_train();
    }
    ctx_params.n_seq_max = n_parallel as u32;

    let (req_tx, req_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(usize, usize)>>();
    let metrics = Arc::new(Metrics::new(n_parallel));
    {
        let model = model.clone();
        let metrics = metrics.clone();
        let loras = cfg.loras.clone();
        let cont_batching = cfg.cont_batching;
        std::thread::Builder::new().name("trit-engine".into()).spawn(move || {
            match setup(&model, &ctx_params, &loras) {
                Ok((mut ctx, adapters)) => {
                    let _ = ready_tx.send(Ok((ctx.n_ctx_seq() as usize, ctx.n_seq_max() as usize)));
                    let run = std::panic::AssertUnwindSafe(|| {
                        engine::run(&mut ctx, &adapters, req_rx, metrics, cont_batching)
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("the engine thread panicked; requests will fail");
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    }
    let (n_ctx_slot, n_slots) = ready_rx.recv().map_err(|_| anyhow!("the engine thread died at start"))??;

    let scales = cfg.loras.iter().map(|(_, s)| if cfg.lora_init_without_apply { 0.0 } else { *s }).collect();
    let model_id = cfg.aliases.first().cloned().unwrap_or_else(|| cfg.model.display().to_string());
    let chat_template = match &cfg.chat_template {
        Some(t) => t.clone(),
        None => model.chat_template().unwrap_or_else(|| "chatml".into()),
    };
    let state = Arc::new(AppState {
        model,
        tx: Mutex::new(req_tx),
        metrics,
        api_keys: cfg.api_keys.clone(),
        metrics_enabled: cfg.metrics,
        slots_enabled: cfg.slots,
        model_id,
        aliases: cfg.aliases.clone(),
        chat_template,
        n_ctx_slot,
        n_slots,
        defaults: cfg.sampling.clone(),
        n_predict: cfg.n_predict,
        timeout: cfg.timeout,
        lora_paths: cfg.loras.iter().map(|(p, _)| p.display().to_string()).collect(),
        lora_scales: Mutex::new(scales),
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        next_id: AtomicU64::new(0),
    });
    let router = router(state.clone(), cfg.body_limit);
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("could not bind {}:{}", cfg.host, cfg.port))?;
    let addr = listener.local_addr()?;
    Ok(Server { addr, listener, router, state })
}

fn setup<'m>(
    model: &'m Model,
    params: &ContextParams,
    loras: &[(PathBuf, f32)],
) -> Result<(Context<'m>, Vec<LoraAdapter<'m>>)> {
    let ctx = Context::new(model, params)?;
    let adapters = loras.iter().map(|(p, _)| LoraAdapter::load(model, p)).collect::<Result<Vec<_>, _>>()?;
    Ok((ctx, adapters))
}

pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(api::health))
        .route("/v1/health", get(api::health))
        .route("/v1/models", get(api::models))
        .route("/models", get(api::models))
        .route("/props", get(api::props))
        .route("/slots", get(api::slots))
        .route("/metrics", get(api::metrics))
        .route("/tokenize", post(api::tokenize))
        .route("/detokenize", post(api::detokenize))
        .route("/apply-template", post(api::apply_template))
        .route("/lora-adapters", get(api::lora_get).post(api::lora_post))
        .route("/completion", post(api::completion))
        .route("/completions", post(api::completion))
        .route("/v1/completions", post(api::v1_completions))
        .route("/chat/completions", post(api::chat_completions))
        .route("/v1/chat/completions", post(api::chat_completions))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), api::auth))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

impl Server {
    /// Serve until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }
}

/// Run a server until Ctrl-C (the `llama-server` command).
pub fn serve(cfg: Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let server = bind(cfg).await?;
        let st = &server.state;
        eprintln!(
            "main: model loaded: {} slots, n_ctx_slot = {}, chat template: {}",
            st.n_slots,
            st.n_ctx_slot,
            st.chat_template.lines().next().unwrap_or("")
        );
        eprintln!("main: server is listening on http://{}", server.addr);
        server
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
}
