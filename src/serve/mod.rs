//! `anodet serve`: an HTTP inspection service. A run is loaded once; requests that arrive
//! together share one forward pass on a dedicated network thread ([`engine`]); decoding runs
//! on blocking threads in parallel with the network; a bounded queue gives back-pressure
//! (503 + `Retry-After`); a reload (POST /v1/reload or SIGHUP) swaps a checked run in between
//! two batches; SIGTERM/SIGINT drain the requests in flight and return.

pub mod auth;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod routes;
pub mod size;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use auth::Token;
pub use size::ByteSize;

use crate::error::{Error, Result};
use crate::pipeline::inspector::Inspector;
use crate::pipeline::Runtime;
use engine::{Batching, Engine, Served};
use metrics::Metrics;

/// Where the run to serve is found, now and at each reload.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// This run folder.
    Dir(PathBuf),
    /// The run recorded in `<runs root>/latest`, looked up again at each reload.
    Latest(PathBuf),
}

impl ModelSource {
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            ModelSource::Dir(dir) => Ok(dir.clone()),
            ModelSource::Latest(root) => crate::model::latest(root),
        }
    }
}

/// Everything `serve` needs; [`ServeParams::check`] validates it.
#[derive(Debug, Clone)]
pub struct ServeParams {
    pub model: ModelSource,
    pub listen: SocketAddr,
    pub token: Option<Arc<Token>>,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Images that may wait for the network besides the batch being computed.
    pub queue: usize,
    pub max_body: usize,
    /// The longest a request may take, body upload included (slow clients get 408).
    pub request_timeout: Duration,
    /// The longest a client may take to send its request headers (then the connection closes).
    pub header_timeout: Duration,
    /// The longest SIGTERM waits for requests in flight.
    pub drain_timeout: Duration,
    /// Open the run's anomaly maps (POST /v1/heatmap).
    pub maps: bool,
    pub runtime: Runtime,
}

impl ServeParams {
    pub fn check(&self) -> Result<()> {
        if !(1..=256).contains(&self.max_batch) {
            return Err(Error::param(
                "--max-batch",
                format!("{} is outside 1..=256", self.max_batch),
            ));
        }
        if self.max_wait > Duration::from_secs(1) {
            return Err(Error::param("--max-wait-ms", "at most 1000 ms"));
        }
        if !(1..=100_000).contains(&self.queue) {
            return Err(Error::param("--queue", format!("{} is outside 1..=100000", self.queue)));
        }
        if self.max_body < 64 {
            return Err(Error::param("--max-body", "must be at least 64 bytes"));
        }
        for (name, value) in
            [("--request-timeout", self.request_timeout), ("--header-timeout", self.header_timeout)]
        {
            if value.is_zero() {
                return Err(Error::param(name, "must be more than 0 s"));
            }
        }
        Ok(())
    }
}

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_body: usize,
    pub max_batch: usize,
}

/// State shared by every request.
pub struct AppState {
    /// Set once the first run is loaded and warmed up.
    pub engine: OnceLock<Engine>,
    pub admission: Arc<Semaphore>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub draining: AtomicBool,
    reloading: Mutex<()>,
    model: ModelSource,
    maps: bool,
    runtime: Runtime,
}

/// Serves until SIGTERM or SIGINT, then drains and returns. `on_listening` is called with the
/// bound address (port 0 picks a free one) before the run is loaded.
pub fn run(params: ServeParams, on_listening: impl FnOnce(SocketAddr)) -> Result<()> {
    params.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("anodet-http")
        .build()
        .map_err(|e| Error::param("serve", format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(params, on_listening))
}

async fn serve(params: ServeParams, on_listening: impl FnOnce(SocketAddr)) -> Result<()> {
    let listener = TcpListener::bind(params.listen).await.map_err(|e| {
        Error::param("--listen", format!("cannot listen on {}: {e}", params.listen))
    })?;
    let address = listener.local_addr().map_err(|e| Error::param("--listen", e.to_string()))?;
    if !address.ip().is_loopback() && params.token.is_none() {
        tracing::warn!(%address, "listening beyond loopback without --token-file: anyone who reaches this address can use the service");
    }
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState {
        engine: OnceLock::new(),
        admission: Arc::new(Semaphore::new(params.queue + params.max_batch)),
        settings: Settings { max_body: params.max_body, max_batch: params.max_batch },
        metrics: Arc::clone(&metrics),
        draining: AtomicBool::new(false),
        reloading: Mutex::new(()),
        model: params.model.clone(),
        maps: params.maps,
        runtime: params.runtime.clone(),
    });
    let app = router(&state, &params);
    on_listening(address);
    tracing::info!(%address, "listening");

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let server =
        tokio::spawn(accept(listener, app, params.header_timeout, params.drain_timeout, stop));
    let signals = tokio::spawn(signals(Arc::clone(&state), stop_sender.clone()));

    // Load the first run while /healthz already answers and /readyz says "loading".
    let loaded = load(&state).await;
    let thread = match loaded {
        Ok((inspector, maps_unavailable)) => {
            let batching = Batching {
                max_batch: params.max_batch,
                max_wait: params.max_wait,
                capacity: params.queue + params.max_batch,
            };
            match Engine::start(inspector, maps_unavailable, batching, metrics) {
                Ok((engine, thread)) => {
                    let card = engine.served().card;
                    tracing::info!(identity = %card.identity, run = %card.run_dir.display(), precision = %card.precision, "ready");
                    let _ = state.engine.set(engine);
                    Some(thread)
                }
                Err(e) => {
                    let _ = stop_sender.send(true);
                    let _ = server.await;
                    return Err(Error::param(
                        "serve",
                        format!("cannot start the network thread: {e}"),
                    ));
                }
            }
        }
        Err(message) => {
            let _ = stop_sender.send(true);
            let _ = server.await;
            signals.abort();
            return Err(message);
        }
    };
    let drained = server.await.unwrap_or(false);
    signals.abort();
    if let Some(engine) = state.engine.get() {
        engine.stop();
    }
    if let Some(thread) = thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    if drained {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain timed out; connections still open were closed");
    }
    Ok(())
}

fn router(state: &Arc<AppState>, params: &ServeParams) -> Router {
    let protected = Router::new()
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/v1/model", get(routes::model))
        .route("/v1/reload", post(routes::reload))
        .route("/v1/score", post(routes::score))
        .route("/v1/score/batch", post(routes::score_batch))
        .route("/v1/heatmap", post(routes::heatmap))
        .route_layer(axum::middleware::from_fn_with_state(params.token.clone(), auth::require));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .merge(protected)
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(params.max_body))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            params.request_timeout,
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            error::ApiError::internal("internal error").into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(state), observe::observe))
        .with_state(Arc::clone(state))
}

use axum::response::IntoResponse;

/// Accepts connections until `stop` turns true, then waits (at most `drain_timeout`) for the
/// requests in flight. Returns whether every connection finished in time.
async fn accept(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    drain_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(connection) => connection,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::time::timeout(drain_timeout, graceful.shutdown()).await.is_ok()
}

/// SIGTERM/SIGINT: stop accepting and drain. SIGHUP: reload.
async fn signals(state: Arc<AppState>, stop: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut interrupt), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                match reload(&state).await {
                    Ok(_) => {}
                    Err(message) => tracing::warn!(%message, "SIGHUP reload refused; the previous run keeps serving"),
                }
            }
        }
    }
    tracing::info!("shutting down: finishing the requests in flight");
    state.draining.store(true, Ordering::SeqCst);
    let _ = stop.send(true);
}

/// Loads, checks and warms up the run (off the async runtime); opens its maps when asked.
/// Returns the inspector and, when maps were asked for but cannot be had, why.
async fn load(state: &AppState) -> Result<(Inspector, Option<String>)> {
    let (source, runtime, maps) = (state.model.clone(), state.runtime.clone(), state.maps);
    tokio::task::spawn_blocking(move || -> Result<(Inspector, Option<String>)> {
        let dir = source.resolve()?;
        let mut inspector = Inspector::load(&dir, &runtime)?;
        inspector.warm_up()?;
        let maps_unavailable = if maps {
            match inspector.open_maps(&runtime, &crate::progress::Silent) {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "maps unavailable for this run; scoring is not affected");
                    Some(e.to_string())
                }
            }
        } else {
            Some("the server was started with --no-maps".to_string())
        };
        Ok((inspector, maps_unavailable))
    })
    .await
    .map_err(|_| Error::param("serve", "loading the run panicked"))?
}

/// Loads the run again and swaps it in; on failure the old run keeps serving. One at a time.
pub(crate) async fn reload(state: &AppState) -> std::result::Result<Served, String> {
    let _one_at_a_time = state.reloading.lock().await;
    let engine = state.engine.get().ok_or("the first run is still loading")?;
    let outcome = match load(state).await {
        Ok((inspector, maps_unavailable)) => engine
            .swap(inspector, maps_unavailable)
            .await
            .ok_or_else(|| "the network thread has stopped".to_string()),
        Err(e) => Err(e.to_string()),
    };
    match &outcome {
        Ok(served) => {
            state.metrics.reloads.with_label_values(&["ok"]).inc();
            tracing::info!(identity = %served.card.identity, run = %served.card.run_dir.display(), "reloaded");
        }
        Err(message) => {
            state.metrics.reloads.with_label_values(&["refused"]).inc();
            tracing::warn!(%message, "reload refused");
        }
    }
    outcome
}
