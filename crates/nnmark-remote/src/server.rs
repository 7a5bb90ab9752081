//! `nnmark serve`: a model behind one of the [`Protocol`]s, hardened as a real service would be:
//! optional bearer-token auth, a body limit (413), a per-client token-bucket rate limit (429 with
//! Retry-After), an inference timeout, batch inference with a size cap, structured JSON errors,
//! request logging and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Oracle, Reveal};
use nnmark::{Error, Result};
use serde_json::json;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::protocol::{self, ClassNames, Images, Protocol, Rejection};

/// A model ready to serve: anything that answers queries with full probabilities.
pub struct ServedModel {
    oracle: Mutex<Box<dyn Oracle + Send>>,
    shape: ImageShape,
    classes: usize,
    /// What runs it (`nnmark-burn`, `onnx-tract`), reported in the model metadata.
    pub platform: String,
}

impl ServedModel {
    /// Number of classes it answers with.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Wraps an oracle; it must reveal full probabilities (the server narrows them per policy).
    pub fn new(oracle: Box<dyn Oracle + Send>, platform: impl Into<String>) -> Self {
        Self {
            shape: oracle.input_shape(),
            classes: oracle.num_classes(),
            oracle: Mutex::new(oracle),
            platform: platform.into(),
        }
    }
}

/// Loads a model file to serve: nnmark safetensors (a foreign state_dict with `spec`), or ONNX
/// (input shape from the file, else `shape`). Returns it with the data set it was trained on
/// (empty when unknown), which picks default class names.
pub fn load_model(
    path: &std::path::Path,
    spec: Option<&nnmark::model::ModelSpec>,
    shape: Option<ImageShape>,
    device: &nnmark::Device,
) -> Result<(ServedModel, String)> {
    if crate::onnx::is_onnx(path) {
        let o = crate::onnx::OnnxOracle::load(path, shape, Reveal::Probabilities)?;
        return Ok((ServedModel::new(Box::new(o), "onnx-tract"), String::new()));
    }
    let loaded = nnmark::weights::load(path, spec, device)?;
    let oracle = nnmark::oracle::LocalOracle::new(loaded.model, Reveal::Probabilities);
    Ok((
        ServedModel::new(Box::new(oracle), "nnmark-burn"),
        loaded.meta.dataset,
    ))
}

/// Parses what answers reveal: `label`, `top-k:K` (or `topK`), `probabilities`.
pub fn parse_reveal(s: &str) -> Result<Reveal> {
    let lower = s.to_ascii_lowercase();
    let k = lower
        .strip_prefix("top-k:")
        .or_else(|| lower.strip_prefix("topk:"))
        .or_else(|| lower.strip_prefix("top"));
    match (lower.as_str(), k) {
        ("label" | "labels", _) => Ok(Reveal::Label),
        ("probabilities" | "probs" | "full", _) => Ok(Reveal::Probabilities),
        (_, Some(k)) => match k.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(Reveal::TopK(k)),
            _ => Err(Error::invalid(
                "reveal",
                s,
                "top-k needs a count of at least 1 (top-k:3)",
            )),
        },
        _ => Err(Error::invalid(
            "reveal",
            s,
            "expected label, top-k:K or probabilities",
        )),
    }
}

/// A per-client request rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second per client address.
    pub per_second: u32,
    /// Requests a client may send at once before the rate applies.
    pub burst: u32,
}

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Wire protocol.
    pub protocol: Protocol,
    /// The model's name in URLs.
    pub model_name: String,
    /// What each answer reveals.
    pub reveal: Reveal,
    /// Class names used in label answers.
    pub class_names: ClassNames,
    /// Bearer token required on inference and metadata routes (health stays open).
    pub token: Option<String>,
    /// Largest request body in bytes (413 beyond).
    pub body_limit: usize,
    /// Per-client rate limit (429 beyond), none when unset.
    pub rate_limit: Option<RateLimit>,
    /// Longest an inference may take (503 beyond).
    pub timeout: Duration,
    /// Longest a whole request may take, upload included (408 beyond): a client that sends
    /// its body slowly cannot hold a connection open.
    pub request_timeout: Duration,
    /// Most images in one request (422 beyond).
    pub max_batch: usize,
}

impl ServeConfig {
    /// Defaults: no token, 8 MiB bodies, no rate limit, 30 s timeout, batches of 256.
    pub fn new(
        protocol: Protocol,
        model_name: &str,
        reveal: Reveal,
        class_names: ClassNames,
    ) -> Self {
        Self {
            protocol,
            model_name: model_name.into(),
            reveal,
            class_names,
            token: None,
            body_limit: 8 << 20,
            rate_limit: None,
            timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_batch: 256,
        }
    }
}

struct AppState {
    model: Arc<ServedModel>,
    cfg: ServeConfig,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    stats: Stats,
}

/// An HTTP error with a JSON body `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            r.message,
        )
    }
}

/// Checks `Authorization: Bearer <token>` (the scheme in any case, RFC 7235). The digests of
/// both tokens are compared, in constant time, so neither the token's bytes nor its length
/// leak through timing.
fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return false;
    };
    let (a, b) = (
        nnmark::io::sha256_hex(given.as_bytes()),
        nnmark::io::sha256_hex(token.as_bytes()),
    );
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Clients the rate limiter remembers before it forgets those whose state is back to a fresh
/// one (every client that has not spent part of its burst recently).
pub(crate) const LIMITER_PRUNE_AT: usize = 4096;

/// Keeps the per-client state bounded: one entry per address is unbounded with IPv6, where a
/// client can use a new address for every request.
fn prune_limiter(limiter: &DefaultKeyedRateLimiter<IpAddr>) {
    if limiter.len() >= LIMITER_PRUNE_AT {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Gives an error answer the JSON body every other error has, when the layer that made it
/// (method routing's 405, the request timeout's 408) left it without one.
async fn json_error_body(res: Response) -> Response {
    let status = res.status();
    if (status.is_client_error() || status.is_server_error())
        && !res.headers().contains_key(header::CONTENT_TYPE)
    {
        let mut out = ApiError(
            status,
            status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase(),
        )
        .into_response();
        for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = res.headers().get(&name) {
                out.headers_mut().insert(name, v.clone());
            }
        }
        return out;
    }
    res
}

/// Most bytes of header names and values a request may carry: real inference clients send a
/// few hundred. Larger headers get a 431 with the usual JSON body; beyond hyper's own parse
/// buffer (about 400 KiB) hyper answers 431 itself, before any handler runs, without a body.
pub(crate) const MAX_HEADER_BYTES: usize = 32 << 10;

async fn guard(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers hold {header_bytes} bytes; at most {MAX_HEADER_BYTES} are read"
            ),
        )
        .into_response();
    }
    let path = req.uri().path();
    let open = path.starts_with("/v2/health") || path == "/ping";
    if let Some(limiter) = &state.limiter
        && !open
    {
        prune_limiter(limiter);
    }
    if let Some(limiter) = &state.limiter
        && !open
        && let Err(not_until) = limiter.check_key(&peer.ip())
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limit exceeded for {}; retry in {secs} s", peer.ip()),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    if let Some(token) = &state.cfg.token
        && !open
        && !authorised(req.headers(), token)
    {
        let mut r = ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (send 'Authorization: Bearer <token>')".into(),
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

fn check_model(state: &AppState, name: &str) -> std::result::Result<(), ApiError> {
    if name == state.cfg.model_name {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "model '{name}' is not served here (serving '{}')",
                state.cfg.model_name
            ),
        ))
    }
}

/// Reads the body, mapping an oversize body to 413.
fn body_bytes(
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Bytes, ApiError> {
    body.map_err(|e| ApiError(e.status(), e.body_text()))
}

async fn infer(state: &AppState, images: Images) -> std::result::Result<Vec<Answer>, ApiError> {
    let model = state.model.clone();
    let count = images.count;
    let job = tokio::task::spawn_blocking(move || {
        let mut oracle = model.oracle.lock().unwrap_or_else(|p| p.into_inner());
        oracle.query(&images.pixels)
    });
    match tokio::time::timeout(state.cfg.timeout, job).await {
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("inference took longer than {:?}", state.cfg.timeout),
        )),
        Ok(Err(e)) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("inference failed: {e}"),
        )),
        Ok(Ok(Err(e))) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        Ok(Ok(Ok(a))) if a.len() == count => Ok(a),
        Ok(Ok(Ok(a))) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model answered {} of {count} images", a.len()),
        )),
    }
}

fn model_metadata(state: &AppState) -> serde_json::Value {
    let s = state.model.shape;
    json!({
        "name": state.cfg.model_name,
        "versions": [MODEL_VERSION],
        "platform": state.model.platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, s.channels, s.height, s.width]}],
        "outputs": protocol::v2_output_metadata(state.cfg.reveal, state.model.classes),
        "parameters": {"classes": state.cfg.class_names.0, "pixel_range": [0.0, 1.0]},
    })
}

/// The one version a served model has.
const MODEL_VERSION: &str = "1";
/// The input's name in the v2 metadata (requests naming another input are refused).
const INPUT_NAME: &str = "input";

/// Checks a versioned route's version: only [`MODEL_VERSION`] exists.
fn check_version(state: &AppState, version: &str) -> std::result::Result<(), ApiError> {
    if version == MODEL_VERSION {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "model '{}' has no version '{version}' (its only version is '{MODEL_VERSION}')",
                state.cfg.model_name
            ),
        ))
    }
}

/// The model configuration Triton reports for a simple batching model
/// (`GET /v2/models/{name}/config`): dimensions without the batch axis.
fn model_config(state: &AppState) -> serde_json::Value {
    let s = state.model.shape;
    let data_type = |dt: &str| format!("TYPE_{}", if dt == "BYTES" { "STRING" } else { dt });
    let outputs: Vec<serde_json::Value> =
        protocol::v2_output_metadata(state.cfg.reveal, state.model.classes)
            .iter()
            .map(|o| {
                let dims: Vec<i64> = o["shape"]
                    .as_array()
                    .map(|d| d.iter().skip(1).filter_map(|x| x.as_i64()).collect())
                    .unwrap_or_default();
                json!({
                    "name": o["name"],
                    "data_type": data_type(o["datatype"].as_str().unwrap_or("")),
                    "dims": if dims.is_empty() { vec![1] } else { dims },
                })
            })
            .collect();
    json!({
        "name": state.cfg.model_name,
        "platform": state.model.platform,
        "backend": "nnmark",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": state.cfg.max_batch,
        "input": [{
            "name": INPUT_NAME, "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
            "dims": [s.channels, s.height, s.width],
        }],
        "output": outputs,
    })
}

/// Counters behind Triton's statistics extension.
#[derive(Default)]
struct Stats {
    /// Images answered.
    inferences: AtomicU64,
    /// Requests answered.
    executions: AtomicU64,
    /// Requests that failed in inference.
    failures: AtomicU64,
    /// Time spent answering, in nanoseconds.
    success_ns: AtomicU64,
    failure_ns: AtomicU64,
    /// When the last inference ended, in milliseconds since the Unix epoch.
    last_ms: AtomicU64,
}

impl Stats {
    fn record(&self, images: usize, ok: bool, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        if ok {
            self.inferences.fetch_add(images as u64, Ordering::Relaxed);
            self.executions.fetch_add(1, Ordering::Relaxed);
            self.success_ns.fetch_add(ns, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.failure_ns.fetch_add(ns, Ordering::Relaxed);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// The model's entry of `GET /v2/models/stats`, in Triton's shape.
    fn json(&self, name: &str) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (ok, ok_ns) = (load(&self.executions), load(&self.success_ns));
        let (fail, fail_ns) = (load(&self.failures), load(&self.failure_ns));
        json!({
            "name": name,
            "version": MODEL_VERSION,
            "last_inference": load(&self.last_ms),
            "inference_count": load(&self.inferences),
            "execution_count": ok,
            "inference_stats": {
                "success": {"count": ok, "ns": ok_ns},
                "fail": {"count": fail, "ns": fail_ns},
                "queue": {"count": ok, "ns": 0},
                "compute_input": {"count": ok, "ns": 0},
                "compute_infer": {"count": ok, "ns": ok_ns},
                "compute_output": {"count": ok, "ns": 0},
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [],
        })
    }
}

async fn v2_server_meta() -> Json<serde_json::Value> {
    Json(json!({
        "name": "nnmark",
        "version": nnmark::VERSION,
        "extensions": ["classification", "binary_tensor_data", "model_repository", "statistics"],
    }))
}

async fn v2_model_meta(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    Ok(Json(model_metadata(&state)))
}

async fn v2_model_version_meta(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    check_version(&state, &version)?;
    Ok(Json(model_metadata(&state)))
}

async fn v2_model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    Ok(Json(json!({"name": name, "ready": true})))
}

async fn v2_model_version_ready(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    check_version(&state, &version)?;
    Ok(Json(json!({"name": name, "ready": true})))
}

async fn v2_model_config(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    Ok(Json(model_config(&state)))
}

async fn v2_model_version_config(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    check_version(&state, &version)?;
    Ok(Json(model_config(&state)))
}

/// `POST /v2/repository/index`: the one model, ready.
async fn v2_repository_index(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!([{"name": state.cfg.model_name, "version": MODEL_VERSION, "state": "READY"}]))
}

/// `POST /v2/repository/models/{name}/load|unload`: the served model is fixed, as in Triton's
/// default model control mode.
async fn v2_repository_control(
    State(state): State<Arc<AppState>>,
    Path((name, _verb)): Path<(String, String)>,
) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        format!(
            "explicit model load / unload is not allowed: this server serves '{}' only (asked for '{name}')",
            state.cfg.model_name
        ),
    )
}

async fn v2_all_stats(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"model_stats": [state.stats.json(&state.cfg.model_name)]}))
}

async fn v2_model_stats(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    Ok(Json(
        json!({"model_stats": [state.stats.json(&state.cfg.model_name)]}),
    ))
}

async fn v2_model_version_stats(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    check_version(&state, &version)?;
    Ok(Json(
        json!({"model_stats": [state.stats.json(&state.cfg.model_name)]}),
    ))
}

/// `GET /v2/systemsharedmemory/status` (and CUDA's): no region is registered, and none can be:
/// shared memory needs a client on the server's host, which a verification service is not.
async fn v2_shm_status() -> Json<serde_json::Value> {
    Json(json!([]))
}

async fn v2_shm_refused() -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        "shared-memory regions are not supported by this server; send tensors in the request body (JSON or binary)".into(),
    )
}

/// `GET /v2/trace/setting` (and per model): tracing is off, as in Triton's default.
async fn v2_trace_settings() -> Json<serde_json::Value> {
    Json(json!({
        "trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
        "log_frequency": "0", "trace_file": "", "trace_mode": "triton",
    }))
}

/// `GET /v2/logging`: the request log this server writes (one line per request, at INFO).
async fn v2_log_settings() -> Json<serde_json::Value> {
    Json(json!({
        "log_file": "", "log_info": true, "log_warning": true, "log_error": true,
        "log_verbose_level": 0, "log_format": "default",
    }))
}

/// Updates of trace and log settings: this server's are fixed at start (`RUST_LOG`).
async fn v2_settings_refused() -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        "trace and log settings are fixed when the server starts (set RUST_LOG); they cannot be updated over HTTP".into(),
    )
}

async fn v2_infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    check_model(&state, &name)?;
    v2_infer_body(&state, &name, &headers, body).await
}

async fn v2_version_infer(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    check_model(&state, &name)?;
    check_version(&state, &version)?;
    v2_infer_body(&state, &name, &headers, body).await
}

/// Answers a v2 infer request, JSON or with Triton's binary tensor extension in either
/// direction.
async fn v2_infer_body(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let header_length = match headers.get(protocol::BINARY_HEADER_LENGTH) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{} is not text", protocol::BINARY_HEADER_LENGTH),
            )
        })?),
    };
    let req = protocol::parse_v2_infer(
        &body,
        header_length,
        Some(INPUT_NAME),
        state.model.shape,
        state.cfg.max_batch,
    )?;
    let plan = protocol::plan_v2_outputs(&req, state.cfg.reveal, state.model.classes)?;
    let started = std::time::Instant::now();
    let count = req.images.count;
    let answers = infer(state, req.images).await;
    state
        .stats
        .record(count, answers.is_ok(), started.elapsed());
    let (json_part, binary) = protocol::v2_answer(
        name,
        req.id.as_deref(),
        &plan,
        &answers?,
        state.model.classes,
        &state.cfg.class_names,
    );
    if binary.is_empty() {
        return Ok(Json(json_part).into_response());
    }
    let mut out = serde_json::to_vec(&json_part).expect("a JSON value serialises");
    let json_len = out.len();
    out.extend_from_slice(&binary);
    let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response();
    r.headers_mut()
        .insert(protocol::BINARY_HEADER_LENGTH, HeaderValue::from(json_len));
    Ok(r)
}

/// TF Serving puts the verb after a colon in the last segment: `/v1/models/{name}:predict`.
async fn tf_predict(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    let Some(name) = segment.strip_suffix(":predict") else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown verb in '{segment}' (only ':predict' is served)"),
        ));
    };
    check_model(&state, name)?;
    let body = body_bytes(body)?;
    let images = protocol::parse_tf_request(&body, state.model.shape, state.cfg.max_batch)?;
    let answers = infer(&state, images).await?;
    Ok(Json(protocol::tf_response(
        &answers,
        state.cfg.reveal,
        state.model.classes,
        &state.cfg.class_names,
    )))
}

async fn tf_status(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    Ok(Json(json!({"model_version_status": [{
        "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}
    }]})))
}

async fn tf_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    let s = state.model.shape;
    let dims = |d: &[i64]| {
        d.iter()
            .map(|&x| json!({"size": x.to_string()}))
            .collect::<Vec<_>>()
    };
    Ok(Json(json!({
        "model_spec": {"name": name, "version": "1"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": {"input": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": dims(&[-1, s.channels as i64, s.height as i64, s.width as i64])}}},
            "outputs": {"output": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": dims(&[-1, state.model.classes as i64])}}},
            "method_name": "tensorflow/serving/predict",
        }}}},
        "nnmark": model_metadata(&state),
    })))
}

async fn labels_predict(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    check_model(&state, &name)?;
    let body = body_bytes(body)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let images = protocol::parse_labels_request(&body, ct, state.model.shape, state.cfg.max_batch)?;
    let batch = body.first() == Some(&b'{');
    let answers = infer(&state, images).await?;
    Ok(Json(protocol::labels_response(
        &answers,
        state.cfg.reveal,
        &state.cfg.class_names,
        batch,
    )))
}

async fn labels_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(
        json!({"models": [{"modelName": state.cfg.model_name, "metadata": model_metadata(&state)}]}),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// The service's routes and layers.
pub fn router(model: ServedModel, cfg: ServeConfig) -> Result<Router> {
    if cfg.class_names.len() != model.classes {
        return Err(Error::invalid(
            "labels",
            cfg.class_names.len(),
            format!(
                "class names must number the model's {} classes",
                model.classes
            ),
        ));
    }
    if cfg.max_batch == 0 || cfg.body_limit == 0 {
        return Err(Error::invalid(
            "limits",
            "0",
            "batch and body limits must be positive",
        ));
    }
    let limiter = match cfg.rate_limit {
        None => None,
        Some(r) => {
            let per = NonZeroU32::new(r.per_second).ok_or_else(|| {
                Error::invalid("rate limit", 0, "must be at least 1 request per second")
            })?;
            let burst = NonZeroU32::new(r.burst.max(1)).expect("max(1)");
            Some(RateLimiter::keyed(
                Quota::per_second(per).allow_burst(burst),
            ))
        }
    };
    let protocol = cfg.protocol;
    let body_limit = cfg.body_limit;
    let request_timeout = cfg.request_timeout;
    let state = Arc::new(AppState {
        model: Arc::new(model),
        cfg,
        limiter,
        stats: Stats::default(),
    });
    let routes = match protocol {
        Protocol::V2 => Router::new()
            .route("/v2", get(v2_server_meta))
            .route(
                "/v2/health/live",
                get(|| async { Json(json!({"live": true})) }),
            )
            .route(
                "/v2/health/ready",
                get(|| async { Json(json!({"ready": true})) }),
            )
            .route("/v2/models/{name}", get(v2_model_meta))
            .route("/v2/models/{name}/ready", get(v2_model_ready))
            .route("/v2/models/{name}/config", get(v2_model_config))
            .route("/v2/models/{name}/stats", get(v2_model_stats))
            .route("/v2/models/{name}/infer", post(v2_infer))
            .route(
                "/v2/models/{name}/versions/{version}",
                get(v2_model_version_meta),
            )
            .route(
                "/v2/models/{name}/versions/{version}/ready",
                get(v2_model_version_ready),
            )
            .route(
                "/v2/models/{name}/versions/{version}/config",
                get(v2_model_version_config),
            )
            .route(
                "/v2/models/{name}/versions/{version}/stats",
                get(v2_model_version_stats),
            )
            .route(
                "/v2/models/{name}/versions/{version}/infer",
                post(v2_version_infer),
            )
            .route("/v2/models/stats", get(v2_all_stats))
            .route(
                "/v2/trace/setting",
                get(v2_trace_settings).post(v2_settings_refused),
            )
            .route(
                "/v2/models/{name}/trace/setting",
                get(v2_trace_settings).post(v2_settings_refused),
            )
            .route(
                "/v2/logging",
                get(v2_log_settings).post(v2_settings_refused),
            )
            .route("/v2/repository/index", post(v2_repository_index))
            .route(
                "/v2/repository/models/{name}/{verb}",
                post(v2_repository_control),
            )
            .route("/v2/systemsharedmemory/status", get(v2_shm_status))
            .route("/v2/cudasharedmemory/status", get(v2_shm_status))
            .route(
                "/v2/systemsharedmemory/region/{name}/{verb}",
                post(v2_shm_refused),
            )
            .route(
                "/v2/cudasharedmemory/region/{name}/{verb}",
                post(v2_shm_refused),
            ),
        Protocol::TfServing => Router::new()
            .route("/v1/models/{name}", get(tf_status).post(tf_predict))
            .route("/v1/models/{name}/metadata", get(tf_metadata)),
        Protocol::Labels => Router::new()
            .route(
                "/ping",
                get(|| async { Json(json!({"status": "Healthy"})) }),
            )
            .route("/models", get(labels_models))
            .route("/predictions/{name}", post(labels_predict)),
    };
    Ok(routes
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        // gzip / deflate bodies (Triton's and KServe's clients compress on request); the body
        // limit applies to the decompressed bytes, so a small bomb is a 413.
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::map_response(json_error_body))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state))
}

/// How long requests in flight may run on after a shutdown signal before they are cut off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What one peer's sockets can hold of a server: a peer that opens connections and sends
/// nothing, or trickles its headers, is cut off after `header_read_timeout`; at most
/// `max_connections` are served at once (further ones wait in the kernel's backlog).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a connection may take to send a request's headers, waiting included (an idle
    /// keep-alive connection is closed after it too).
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 512 connections, 10 s for headers.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` with the default [`ConnectionLimits`]; see [`serve_with`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<()> {
    serve_with(
        listener,
        router,
        shutdown,
        grace,
        ConnectionLimits::default(),
    )
    .await
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in flight finish for at most `grace` (a hung client or handler cannot hold the
/// process past it). Each connection is HTTP/1.1 with hyper's header-read timeout; a
/// semaphore caps how many are served at once.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ConnectionLimits,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    if limits.max_connections == 0 || limits.header_read_timeout.is_zero() {
        return Err(Error::invalid(
            "connection limits",
            format!("{limits:?}"),
            "need at least one connection and a positive header timeout",
        ));
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer} ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => Ok(()),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("requests still open {grace:?} after the shutdown signal: cutting them off");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// A server running on a background runtime (tests, the demo): stops when dropped.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// Binds `addr` (port 0 for any free one) and serves on its own thread.
    pub fn start(model: ServedModel, cfg: ServeConfig, addr: SocketAddr) -> Result<Self> {
        Self::start_router(router(model, cfg)?, addr)
    }

    /// Serves any router (a [`router`] wrapped in extra layers, a test double).
    pub fn start_router(router: Router, addr: SocketAddr) -> Result<Self> {
        Self::start_router_with(router, addr, ConnectionLimits::default())
    }

    /// [`RunningServer::start_router`] with other connection limits.
    pub fn start_router_with(
        router: Router,
        addr: SocketAddr,
        limits: ConnectionLimits,
    ) -> Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| Error::remote(addr.to_string(), format!("cannot listen: {e}")))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| Error::remote(addr.to_string(), e.to_string()))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| Error::remote(addr.to_string(), e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Error::remote("runtime", e.to_string()))?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .map_err(|e| Error::remote(addr.to_string(), e.to_string()))?;
                serve_with(
                    listener,
                    router,
                    async {
                        let _ = rx.await;
                    },
                    Duration::from_secs(1),
                    limits,
                )
                .await
            })
        });
        Ok(Self {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes requests in flight, and returns the server's outcome.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::remote(self.addr.to_string(), "server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_rate_limiter_forgets_idle_clients_once_it_holds_many() {
        let limiter: DefaultKeyedRateLimiter<IpAddr> =
            RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1000).expect("non-zero")));
        // One request from each of 5,000 IPv6 addresses, as a client rotating addresses would.
        for i in 0..5000u128 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i));
            assert!(limiter.check_key(&ip).is_ok());
        }
        assert_eq!(limiter.len(), 5000);
        // Below the threshold nothing is pruned.
        let small: DefaultKeyedRateLimiter<IpAddr> =
            RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1000).expect("non-zero")));
        small.check_key(&IpAddr::from([127, 0, 0, 1])).ok();
        std::thread::sleep(Duration::from_millis(20));
        prune_limiter(&small);
        assert_eq!(small.len(), 1);
        // Above it, clients whose burst has refilled (1 ms at 1,000/s) are forgotten.
        prune_limiter(&limiter);
        assert_eq!(limiter.len(), 0);
        // A client that just spent its burst is kept: forgetting it would reset its limit.
        let busy = IpAddr::from([10, 0, 0, 1]);
        for i in 0..5000u128 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i));
            limiter.check_key(&ip).ok();
        }
        std::thread::sleep(Duration::from_millis(20));
        while limiter.check_key(&busy).is_ok() {}
        prune_limiter(&limiter);
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tokens_must_match_exactly() {
        let token = "s3cret-token";
        for ok in [
            "Bearer s3cret-token",
            "bearer s3cret-token",
            "BEARER s3cret-token",
        ] {
            assert!(authorised(&with_auth(ok), token), "{ok}");
        }
        for bad in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Bearer ",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert!(!authorised(&with_auth(bad), token), "{bad}");
        }
        assert!(!authorised(&HeaderMap::new(), token));
    }
}
