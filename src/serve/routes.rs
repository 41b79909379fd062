//! The HTTP routes: request handlers that read and check a body, decode it off the async
//! runtime, queue it for the network thread and answer with JSON (or a PNG for maps).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use image::{DynamicImage, ImageFormat};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::engine::{Answer, Engine, Job, Refused, Served};
use super::error::ApiError;
use super::AppState;
use crate::pipeline::inspector::PreparedInputs;

/// What a request decided, for its log line and the verdict counter.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub images: usize,
    pub anomalous: usize,
    /// The score of a single-image request.
    pub score: Option<f64>,
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// `GET /readyz`: a run is loaded and warmed up, and the server is not draining.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return ApiError::unavailable("draining: shutting down", 1).into_response();
    }
    match state.engine.get() {
        Some(engine) => Json(serde_json::json!({
            "status": "ready",
            "model": engine.served().card.identity,
        }))
        .into_response(),
        None => ApiError::unavailable("loading the model", 1).into_response(),
    }
}

/// `GET /v1/model`: the model card of the run being served.
pub async fn model(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let served = engine(&state)?.served();
    Ok(Json(card_json(&served)).into_response())
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))],
        state.metrics.render(),
    )
        .into_response()
}

/// `POST /v1/reload`: load the run again, check it, and swap it in; a broken run is refused
/// and the old one keeps serving.
pub async fn reload(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let served = super::reload(&state).await.map_err(|message| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("reload refused, the previous run keeps serving: {message}"),
        )
    })?;
    Ok(Json(serde_json::json!({ "reloaded": true, "model": card_json(&served) })).into_response())
}

/// `POST /v1/score`: one image in the body → its score and verdict.
pub async fn score(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let engine = engine(&state)?;
    let _permit = admit(&state, 1)?;
    let bytes = image_body(&state, request).await?;
    let served = engine.served();
    let (job, receiver, _) = prepare(&served, bytes, false).await?;
    let answer = queue(engine, job, receiver).await?;
    state.metrics.verdict(answer.score > answer.threshold);
    let anomalous = answer.score > answer.threshold;
    let mut response = Json(serde_json::json!({
        "score": answer.score,
        "threshold": answer.threshold,
        "anomalous": anomalous,
        "model": answer.card.identity,
        "latency_ms": millis(started),
    }))
    .into_response();
    response.extensions_mut().insert(Outcome {
        images: 1,
        anomalous: anomalous as usize,
        score: Some(answer.score),
    });
    Ok(response)
}

/// `POST /v1/heatmap`: one image in the body → its anomaly map as a PNG overlay (the run's map
/// method and fixed colour scale); score and verdict in `X-Anodet-*` headers.
pub async fn heatmap(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let engine = engine(&state)?;
    if let Some(reason) = engine.served().maps_unavailable {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("no maps for this run: {reason}")));
    }
    let _permit = admit(&state, 1)?;
    let bytes = image_body(&state, request).await?;
    let served = engine.served();
    let (job, receiver, image) = prepare(&served, bytes, true).await?;
    let image = image.ok_or_else(|| ApiError::internal("the image was not kept for its map"))?;
    let answer = queue(engine, job, receiver).await?;
    let anomalous = answer.score > answer.threshold;
    state.metrics.verdict(anomalous);
    let Some(map) = answer.map else {
        return Err(ApiError::internal("the network returned no map"));
    };
    let caption = format!(
        "{} — score {:.2} ({}, threshold {:.2})",
        map.method.name(),
        answer.score,
        if anomalous { "anomalous" } else { "good" },
        answer.threshold
    );
    let png = tokio::task::spawn_blocking(move || map.overlay_png(&image, &caption))
        .await
        .map_err(|_| ApiError::internal("drawing the map failed"))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            ("x-anodet-score".parse().expect("static name"), number(answer.score)),
            ("x-anodet-threshold".parse().expect("static name"), number(answer.threshold)),
            (
                "x-anodet-anomalous".parse().expect("static name"),
                HeaderValue::from_static(if anomalous { "true" } else { "false" }),
            ),
            (
                "x-anodet-model".parse().expect("static name"),
                HeaderValue::from_str(&answer.card.identity)
                    .unwrap_or(HeaderValue::from_static("")),
            ),
        ],
        png,
    )
        .into_response();
    response.extensions_mut().insert(Outcome {
        images: 1,
        anomalous: anomalous as usize,
        score: Some(answer.score),
    });
    Ok(response)
}

/// `POST /v1/score/batch`: `multipart/form-data`, one image per part (up to `--max-batch`) →
/// one result per part, in order; an unreadable part gets an error and the others are scored.
pub async fn score_batch(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let engine = engine(&state)?;
    let first_permit = admit(&state, 1)?;
    if content_type(request.headers()).as_deref() != Some("multipart/form-data") {
        return Err(ApiError::unsupported(
            "the batch form takes multipart/form-data, one image per part",
        ));
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart body: {}", e.body_text())))?;
    let mut parts: Vec<(String, Bytes)> = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field
            .file_name()
            .or(field.name())
            .map(str::to_string)
            .unwrap_or_else(|| format!("part{}", parts.len()));
        let bytes = field.bytes().await.map_err(multipart_error)?;
        parts.push((name, bytes));
        if parts.len() > state.settings.max_batch {
            return Err(ApiError::bad_request(format!(
                "more than {} images in one batch (--max-batch)",
                state.settings.max_batch
            )));
        }
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request("no images in the multipart body"));
    }
    let _more_permits = admit(&state, parts.len() - 1)?;
    let served = engine.served();
    let preparation = served.preparation.clone();
    let decoded: Vec<Result<(Bytes, PreparedInputs), ApiError>> = {
        let parts = parts.clone();
        tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            parts
                .into_par_iter()
                .map(|(name, bytes)| {
                    check_format(&bytes)?;
                    preparation
                        .prepare_bytes(&PathBuf::from(&name), &bytes)
                        .map(|prepared| (bytes, prepared))
                        .map_err(|e| ApiError::bad_request(e.to_string()))
                })
                .collect()
        })
        .await
        .map_err(|_| ApiError::internal("decoding failed"))?
    };
    let mut pending = Vec::new();
    for ((name, _), item) in parts.iter().zip(decoded) {
        let waiting = match item {
            Ok((bytes, prepared)) => {
                let (reply, receiver) = oneshot::channel();
                let job = Job {
                    bytes,
                    prepared,
                    prepared_with: served.preparation.clone(),
                    map_of: None,
                    reply,
                };
                submit(engine, job).map(|()| receiver)
            }
            Err(error) => Err(error),
        };
        pending.push((name.clone(), waiting));
    }
    let mut results = Vec::new();
    let mut outcome = Outcome::default();
    for (index, (name, waiting)) in pending.into_iter().enumerate() {
        let answer = match waiting {
            Ok(receiver) => receive(receiver).await,
            Err(error) => Err(error),
        };
        results.push(match answer {
            Ok(answer) => {
                let anomalous = answer.score > answer.threshold;
                state.metrics.verdict(anomalous);
                outcome.images += 1;
                outcome.anomalous += anomalous as usize;
                serde_json::json!({
                    "index": index,
                    "name": name,
                    "score": answer.score,
                    "threshold": answer.threshold,
                    "anomalous": anomalous,
                    "model": answer.card.identity,
                })
            }
            Err(error) => serde_json::json!({
                "index": index,
                "name": name,
                "error": error.message,
                "status": error.status.as_u16(),
            }),
        });
    }
    drop(first_permit);
    let mut response =
        Json(serde_json::json!({ "results": results, "latency_ms": millis(started) }))
            .into_response();
    response.extensions_mut().insert(outcome);
    Ok(response)
}

fn engine(state: &AppState) -> Result<&Engine, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("draining: shutting down", 1));
    }
    state.engine.get().ok_or_else(|| ApiError::unavailable("loading the model", 1))
}

/// Admission: `n` places in the queue, or 503 at once.
fn admit(state: &AppState, n: usize) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if n == 0 {
        return Ok(None);
    }
    Arc::clone(&state.admission)
        .try_acquire_many_owned(n as u32)
        .map(Some)
        .map_err(|_| ApiError::unavailable("queue full (--queue); retry later", 1))
}

/// The media type of a request, lower-case, without parameters.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Reads a single-image body: `image/*` or `application/octet-stream` (or no type), non-empty,
/// at most `--max-body` bytes (a larger `Content-Length` is refused before any of it is read).
async fn image_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    match content_type(request.headers()) {
        None => {}
        Some(t) if t.starts_with("image/") || t == "application/octet-stream" => {}
        Some(t) => {
            return Err(ApiError::unsupported(format!(
                "content type {t} is not an image; send image/* or application/octet-stream"
            )))
        }
    }
    let limit = state.settings.max_body;
    let bytes = axum::body::to_bytes(request.into_body(), limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("the body could not be read: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty body: send the image's bytes"));
    }
    check_format(&bytes)?;
    Ok(bytes)
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// 415 unless the bytes start like a PNG, JPEG, BMP or TIFF file.
fn check_format(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty image"));
    }
    match image::guess_format(bytes) {
        Ok(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Tiff) => Ok(()),
        Ok(other) => Err(ApiError::unsupported(format!(
            "{other:?} images are not supported; send PNG, JPEG, BMP or TIFF"
        ))),
        Err(_) => Err(ApiError::unsupported("not an image: send PNG, JPEG, BMP or TIFF bytes")),
    }
}

/// Prepares the body for the network on a blocking thread (in parallel with the network); with
/// `keep_image` also decodes it in full for the map's picture.
async fn prepare(
    served: &Served,
    bytes: Bytes,
    keep_image: bool,
) -> Result<(Job, oneshot::Receiver<Result<Answer, String>>, Option<Arc<DynamicImage>>), ApiError> {
    let preparation = served.preparation.clone();
    let body = bytes.clone();
    let (image, prepared) = tokio::task::spawn_blocking(move || {
        let name = PathBuf::from("body");
        if keep_image {
            preparation.decode_and_prepare(&name, &body).map(|(i, p)| (Some(Arc::new(i)), p))
        } else {
            preparation.prepare_bytes(&name, &body).map(|prepared| (None, prepared))
        }
    })
    .await
    .map_err(|_| ApiError::internal("decoding failed"))?
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (reply, receiver) = oneshot::channel();
    let job = Job {
        bytes,
        prepared,
        prepared_with: served.preparation.clone(),
        map_of: image.clone(),
        reply,
    };
    Ok((job, receiver, image))
}

fn submit(engine: &Engine, job: Job) -> Result<(), ApiError> {
    engine.submit(job).map_err(|refused| match refused {
        Refused::Full => ApiError::unavailable("queue full (--queue); retry later", 1),
        Refused::Stopped => ApiError::unavailable("draining: shutting down", 1),
    })
}

async fn receive(receiver: oneshot::Receiver<Result<Answer, String>>) -> Result<Answer, ApiError> {
    match receiver.await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(message)) => Err(ApiError::internal(message)),
        Err(_) => Err(ApiError::unavailable("the network stopped; retry", 1)),
    }
}

async fn queue(
    engine: &Engine,
    job: Job,
    receiver: oneshot::Receiver<Result<Answer, String>>,
) -> Result<Answer, ApiError> {
    submit(engine, job)?;
    receive(receiver).await
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(error.status(), format!("bad multipart body: {}", error.body_text()))
}

fn number(value: f64) -> HeaderValue {
    HeaderValue::from_str(&value.to_string()).unwrap_or(HeaderValue::from_static("nan"))
}

fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn card_json(served: &Served) -> serde_json::Value {
    let mut value = serde_json::to_value(served.card.as_ref()).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "maps_unavailable".into(),
            serde_json::to_value(&served.maps_unavailable).unwrap_or_default(),
        );
    }
    value
}
