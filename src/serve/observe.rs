//! One structured log line per request (method, route, status, latency, verdict) on stderr,
//! and the request metrics. The level comes from the `ANODET_LOG` environment variable.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::routes::Outcome;
use super::AppState;

/// Middleware: logs and counts every request once it is answered.
pub async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status();
    state.metrics.requests.with_label_values(&[&route, status.as_str()]).inc();
    state.metrics.latency.with_label_values(&[&route]).observe(seconds);
    let outcome = response.extensions().get::<Outcome>().cloned().unwrap_or_default();
    let verdict = match (outcome.images, outcome.anomalous) {
        (0, _) => "-",
        (_, 0) => "good",
        (1, _) => "anomalous",
        _ => "some_anomalous",
    };
    let latency_ms = (seconds * 1e6).round() / 1e3;
    let score = outcome.score.map(|s| format!("{s:.4}")).unwrap_or_else(|| "-".into());
    // 503 (queue full, loading, draining) is back-pressure working, not a failure.
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(%method, %route, status = status.as_u16(), latency_ms, %verdict, %score, images = outcome.images, "request");
    } else {
        tracing::info!(%method, %route, status = status.as_u16(), latency_ms, %verdict, %score, images = outcome.images, "request");
    }
    response
}
