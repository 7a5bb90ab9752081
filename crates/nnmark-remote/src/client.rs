//! The client side: a suspect reached over HTTP ([`HttpEndpoint`]) or held as a file and run
//! locally ([`OracleEndpoint`]), both answering batches through the [`Endpoint`] trait with
//! what the evidence needs: hashes of the exact bytes exchanged, latency and retries.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Oracle};
use nnmark::{Error, Result};
use reqwest::StatusCode;
use serde_json::Value;

use crate::protocol::{self, ClassNames, Protocol, TensorPlan};

/// One answered request.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// One answer per image, in request order.
    pub answers: Vec<Answer>,
    /// SHA-256 (hex) of the request body as sent.
    pub request_sha256: String,
    /// SHA-256 (hex) of the response body as received.
    pub response_sha256: String,
    /// HTTP status of the answer that was used (200 for local oracles).
    pub status: u16,
    /// Wall time of the successful attempt, in milliseconds.
    pub latency_ms: f64,
    /// Failed attempts before it.
    pub retries: u32,
}

/// What a suspect says about itself, for the evidence.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SuspectInfo {
    /// `http`, `onnx` or `model`.
    pub kind: String,
    /// URL or file path.
    pub location: String,
    /// Protocol spoken, for HTTP suspects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Model name in URLs, for HTTP suspects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Server and model metadata exactly as the suspect reported them (or the file's hash).
    pub metadata: Value,
    /// How requests were built from that metadata (input name, layout, output read, resizing),
    /// for HTTP suspects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<TensorPlan>,
}

/// A suspect as the verifier queries it: the one async batch interface for local models and
/// ONNX files (through [`OracleEndpoint`]) and HTTP services ([`HttpEndpoint`]), each answer
/// returned with what the evidence records about its exchange.
pub trait Endpoint: Sync {
    /// What to record about the suspect.
    fn info(&self) -> SuspectInfo;
    /// Most images one request may carry.
    fn max_batch(&self) -> usize;
    /// Classifies `count` images.
    fn query(
        &self,
        pixels: Vec<f32>,
        count: usize,
    ) -> impl Future<Output = Result<Exchange>> + Send;
}

/// How to reach and treat an HTTP suspect.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Base URL (`http://host:port`), without the protocol's path.
    pub url: String,
    /// Protocol, or None to probe (`GET /v2`, then `/v1/models/{name}`, then `/ping`).
    pub protocol: Option<Protocol>,
    /// Model name in URLs; None: discover it (v2: the repository index, the first ready model
    /// whose input fits the key; labels: `GET /models`, the only model; TF Serving: `model`).
    pub model_name: Option<String>,
    /// Bearer token, if the service wants one.
    pub token: Option<String>,
    /// Per-attempt timeout (connect, send, answer).
    pub timeout: Duration,
    /// Retries of a failed attempt (5xx, 429, timeouts, dropped connections, bad answers).
    pub retries: u32,
    /// First back-off; doubles per retry, with jitter.
    pub backoff: Duration,
    /// Longest single wait, Retry-After included; a longer Retry-After fails the query.
    pub max_wait: Duration,
    /// How the service names classes.
    pub class_names: ClassNames,
    /// Ask v2 services for top-k through the classification extension.
    pub top_k: Option<usize>,
    /// Resize the key's images (and the decoys) to the size the service's metadata declares
    /// when it is not the key's; off by default, when such a service is refused.
    pub resize: bool,
    /// Largest answer read, in bytes ([`DEFAULT_MAX_RESPONSE_BYTES`]); a longer one is a
    /// failed attempt, read no further.
    pub max_response_bytes: usize,
}

/// Default cap on an answer's size: 16 MiB, far above a batch of labels or probability rows.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 << 20;

impl EndpointConfig {
    /// Defaults: protocol probed, model `model`, 10 s timeout, 4 retries from 100 ms, 30 s cap.
    pub fn new(url: &str, classes: usize) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            protocol: None,
            model_name: None,
            token: None,
            timeout: Duration::from_secs(10),
            retries: 4,
            backoff: Duration::from_millis(100),
            max_wait: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            class_names: ClassNames::indices(classes),
            top_k: None,
            resize: false,
        }
    }
}

/// An inference service over HTTP.
pub struct HttpEndpoint {
    cfg: EndpointConfig,
    client: reqwest::Client,
    protocol: Protocol,
    shape: ImageShape,
    metadata: Value,
    /// The model's name in URLs (given, or discovered).
    model: String,
    /// The input name, layout and output read from the metadata.
    plan: TensorPlan,
    max_batch: usize,
    jitter: Mutex<rand_chacha::ChaCha8Rng>,
}

/// Why one attempt failed, and whether another might succeed.
struct Failure {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl HttpEndpoint {
    /// Connects: picks the protocol (probing when not given), reads the model metadata, and
    /// checks the declared input shape against `shape` where the protocol declares one.
    pub async fn connect(cfg: EndpointConfig, shape: ImageShape, max_batch: usize) -> Result<Self> {
        if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
            return Err(Error::invalid(
                "endpoint",
                &cfg.url,
                "must start with http:// or https://",
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(format!("nnmark/{}", nnmark::VERSION))
            // Never follow a redirect: the suspect's server could send the queries to another
            // service while the evidence names this one. A 3xx is an answer like any other
            // failure, reported with its status.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::remote(&cfg.url, format!("cannot build HTTP client: {e}")))?;
        let mut ep = Self {
            protocol: cfg.protocol.unwrap_or(Protocol::V2),
            cfg,
            client,
            shape,
            metadata: Value::Null,
            model: String::new(),
            plan: TensorPlan::default(),
            max_batch: max_batch.max(1),
            jitter: Mutex::new(rand::SeedableRng::seed_from_u64(0x5EED_B0FF)),
        };
        let probes: Vec<Protocol> = match ep.cfg.protocol {
            Some(p) => vec![p],
            None => Protocol::ALL.to_vec(),
        };
        let mut tried = Vec::new();
        for p in probes {
            match ep.probe(p).await {
                Ok((meta, model, plan)) => {
                    ep.protocol = p;
                    ep.metadata = meta;
                    ep.model = model;
                    ep.plan = plan;
                    if let Some(cap) = ep.plan.batch_cap {
                        ep.max_batch = ep.max_batch.min(cap);
                    }
                    if p == Protocol::Labels {
                        // One image per request: the service takes an image file as body.
                        ep.max_batch = 1;
                    }
                    tracing::info!(protocol = %p, endpoint = %ep.cfg.url, "connected");
                    return Ok(ep);
                }
                Err(e) => tried.push(format!("{p}: {e}")),
            }
        }
        Err(Error::remote(
            &ep.cfg.url,
            format!("no supported protocol answered ({})", tried.join("; ")),
        ))
    }

    /// The protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    async fn get_json(&self, path: &str) -> std::result::Result<Value, String> {
        self.json_call(
            "GET",
            self.client.get(format!("{}{path}", self.cfg.url)),
            path,
        )
        .await
    }

    /// `POST path` with an empty JSON object (the v2 repository index takes one).
    async fn post_json(&self, path: &str) -> std::result::Result<Value, String> {
        let req = self
            .client
            .post(format!("{}{path}", self.cfg.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}");
        self.json_call("POST", req, path).await
    }

    /// Sends a metadata request (with the token), reads at most the answer cap and parses it.
    async fn json_call(
        &self,
        method: &str,
        mut req: reqwest::RequestBuilder,
        path: &str,
    ) -> std::result::Result<Value, String> {
        if let Some(t) = &self.cfg.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let bytes = read_capped(resp, self.cfg.max_response_bytes)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            return Err(format!("{method} {path}: {status} {}", snippet(&text)));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: answer is not JSON: {e}"))
    }

    /// Speaks protocol `p` to the service: its metadata, the model's name, and how to send it
    /// tensors. An error is a reason to try the next protocol; a service that answers but whose
    /// model cannot take the key's images is a final error (see [`Self::connect`]).
    async fn probe(&self, p: Protocol) -> std::result::Result<(Value, String, TensorPlan), String> {
        let classes = self.cfg.class_names.len();
        match p {
            Protocol::V2 => {
                let server = self.get_json("/v2").await?;
                let (name, model, plan) = match &self.cfg.model_name {
                    Some(name) => {
                        let model = self.get_json(&format!("/v2/models/{name}")).await?;
                        let plan = TensorPlan::from_v2_metadata(
                            &model,
                            self.shape,
                            classes,
                            self.cfg.resize,
                        )
                        .map_err(|e| format!("model '{name}' {e}"))?;
                        (name.clone(), model, plan)
                    }
                    None => self.discover_v2(classes).await?,
                };
                Ok((
                    serde_json::json!({"server": server, "model": model}),
                    name,
                    plan,
                ))
            }
            Protocol::TfServing => {
                let name = self
                    .cfg
                    .model_name
                    .clone()
                    .unwrap_or_else(|| "model".into());
                let status = self.get_json(&format!("/v1/models/{name}")).await?;
                let meta = self
                    .get_json(&format!("/v1/models/{name}/metadata"))
                    .await
                    .ok();
                let plan = TensorPlan::from_tf_metadata(
                    meta.as_ref()
                        .and_then(|m| m.get("metadata"))
                        .unwrap_or(&Value::Null),
                    self.shape,
                    self.cfg.resize,
                )
                .map_err(|e| format!("model '{name}' {e}"))?;
                Ok((
                    serde_json::json!({"status": status, "metadata": meta}),
                    name,
                    plan,
                ))
            }
            Protocol::Labels => {
                // TorchServe answers /ping; a Hugging Face endpoint has no health route, so
                // when the protocol was named the service is taken at its word.
                let ping = match self.get_json("/ping").await {
                    Ok(ping) => ping,
                    Err(_) if self.cfg.protocol == Some(Protocol::Labels) => Value::Null,
                    Err(e) => return Err(e),
                };
                let name = match &self.cfg.model_name {
                    Some(name) => name.clone(),
                    None if ping.is_null() => String::new(),
                    None => self.discover_labels().await?,
                };
                Ok((
                    serde_json::json!({"ping": ping}),
                    name,
                    TensorPlan::default(),
                ))
            }
        }
    }

    /// Finds the model through the v2 repository index (or KServe's model list): the first
    /// ready one whose input can take the key's images; when none can, says which exist and why
    /// each does not fit.
    async fn discover_v2(
        &self,
        classes: usize,
    ) -> std::result::Result<(String, Value, TensorPlan), String> {
        // Triton and MLServer list models in the repository index; KServe's model server
        // answers `GET /v2/models` with their names.
        let entries = match self.post_json("/v2/repository/index").await {
            Ok(index) => index.as_array().cloned().unwrap_or_default(),
            Err(index_error) => match self.get_json("/v2/models").await {
                Ok(list) => list
                    .get("models")
                    .and_then(Value::as_array)
                    .map(|m| {
                        m.iter()
                            .filter_map(Value::as_str)
                            .map(|n| serde_json::json!({ "name": n }))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(list_error) => {
                    return Err(format!(
                        "the service does not list its models ({index_error}; {list_error}); name one with --model-name"
                    ));
                }
            },
        };
        let mut tried = Vec::new();
        for entry in &entries {
            let Some(name) = entry.get("name").and_then(Value::as_str) else {
                continue;
            };
            let state = entry
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("READY");
            if !state.eq_ignore_ascii_case("READY") {
                tried.push(format!("'{name}' ({state})"));
                continue;
            }
            match self.get_json(&format!("/v2/models/{name}")).await {
                Ok(model) => {
                    match TensorPlan::from_v2_metadata(&model, self.shape, classes, self.cfg.resize)
                    {
                        Ok(plan) => {
                            tracing::info!(model = name, "model found in the repository index");
                            return Ok((name.to_string(), model, plan));
                        }
                        Err(e) => tried.push(format!("'{name}' {e}")),
                    }
                }
                Err(e) => tried.push(format!("'{name}': {e}")),
            }
        }
        Err(if tried.is_empty() {
            "the repository index lists no model; name one with --model-name".into()
        } else {
            format!(
                "no model listed in the repository index takes {} images: {}",
                self.shape,
                tried.join("; ")
            )
        })
    }

    /// Finds the model of a label/score service (`GET /models`, as TorchServe's management API
    /// and `nnmark serve` answer it): the only one listed.
    async fn discover_labels(&self) -> std::result::Result<String, String> {
        let list = self.get_json("/models").await.map_err(|e| {
            format!("the service does not list its models ({e}); name one with --model-name")
        })?;
        let names: Vec<String> = list
            .get("models")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|x| x.get("modelName").and_then(Value::as_str))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        match names.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("the service lists no model; name one with --model-name".into()),
            many => Err(format!(
                "the service serves {} models ({}); name one with --model-name",
                many.len(),
                many.join(", ")
            )),
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(r) = retry_after {
            return r;
        }
        let base = self.cfg.backoff.as_secs_f64() * 2f64.powi(attempt as i32);
        let jitter: f64 = rand::Rng::random_range(
            &mut *self.jitter.lock().unwrap_or_else(|p| p.into_inner()),
            0.5..1.0,
        );
        Duration::from_secs_f64((base * jitter).min(self.cfg.max_wait.as_secs_f64()))
    }

    async fn attempt(
        &self,
        body: &[u8],
        content_type: &str,
        count: usize,
    ) -> std::result::Result<(Vec<Answer>, String, u16), Failure> {
        let url = format!("{}{}", self.cfg.url, self.protocol.infer_path(&self.model));
        let url = url.trim_end_matches('/').to_string();
        let mut req = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_vec());
        if let Some(t) = &self.cfg.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| Failure {
            message: if e.is_timeout() {
                format!("no answer within {:?}", self.cfg.timeout)
            } else {
                format!("request failed: {}", error_chain(&e))
            },
            retryable: true,
            retry_after: None,
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            // A wait too long for a Duration is longer than any cap: it fails the query.
            .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
        let header_length = resp
            .headers()
            .get(protocol::BINARY_HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = read_capped(resp, self.cfg.max_response_bytes)
            .await
            .map_err(|message| Failure {
                message,
                retryable: true,
                retry_after: None,
            })?;
        if !status.is_success() {
            let retryable = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            return Err(Failure {
                message: format!("{status}: {}", snippet(&String::from_utf8_lossy(&bytes))),
                retryable,
                retry_after,
            });
        }
        // A well-delivered answer in a form nnmark cannot read will not read better when asked
        // again: it fails the query at once.
        let answers = protocol::parse_response(
            self.protocol,
            &bytes,
            header_length.as_deref(),
            count,
            &self.cfg.class_names,
            &self.plan,
        )
        .map_err(|m| Failure {
            message: format!("unusable answer: {m}"),
            retryable: false,
            retry_after: None,
        })?;
        if answers.len() != count {
            return Err(Failure {
                message: format!(
                    "unusable answer: {} answers for {count} images",
                    answers.len()
                ),
                retryable: false,
                retry_after: None,
            });
        }
        Ok((answers, nnmark::io::sha256_hex(&bytes), status.as_u16()))
    }
}

/// The first 200 characters of a body, for error messages, with control characters escaped:
/// a hostile server's text must not move the cursor, clear the screen or print a fake verdict.
fn snippet(text: &str) -> String {
    let mut t = String::new();
    for c in text.chars().take(200) {
        if c.is_control() {
            t.extend(c.escape_default());
        } else {
            t.push(c);
        }
    }
    if text.chars().nth(200).is_some() {
        t.push('…');
    }
    t
}

/// Reads a response body chunk by chunk, refusing it as soon as it passes `limit` bytes (and
/// before reading when its declared length already does): a suspect's server decides how much
/// it sends.
async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(format!(
            "answer of {len} bytes exceeds the limit of {limit} bytes"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("answer broke off: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer exceeds the limit of {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Endpoint for HttpEndpoint {
    fn info(&self) -> SuspectInfo {
        SuspectInfo {
            kind: "http".into(),
            location: self.cfg.url.clone(),
            protocol: Some(self.protocol),
            model_name: Some(self.model.clone()),
            metadata: self.metadata.clone(),
            request: Some(self.plan.clone()),
        }
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn query(&self, pixels: Vec<f32>, count: usize) -> Result<Exchange> {
        let (body, content_type) = protocol::request_body(
            self.protocol,
            &pixels,
            count,
            self.shape,
            self.cfg.top_k,
            &self.plan,
        )?;
        let request_sha256 = nnmark::io::sha256_hex(&body);
        let mut retries = 0u32;
        loop {
            let started = Instant::now();
            match self.attempt(&body, content_type, count).await {
                Ok((answers, response_sha256, status)) => {
                    return Ok(Exchange {
                        answers,
                        request_sha256,
                        response_sha256,
                        status,
                        latency_ms: started.elapsed().as_secs_f64() * 1e3,
                        retries,
                    });
                }
                Err(f) => {
                    let wait = self.backoff(retries, f.retry_after);
                    if !f.retryable || retries >= self.cfg.retries || wait > self.cfg.max_wait {
                        let why = if !f.retryable {
                            String::new()
                        } else if wait > self.cfg.max_wait {
                            format!(
                                " (the service asks to wait {wait:?}, over the {:?} limit)",
                                self.cfg.max_wait
                            )
                        } else {
                            format!(" (after {} attempts)", retries + 1)
                        };
                        return Err(Error::remote(
                            &self.cfg.url,
                            format!("query of {count} images failed: {}{why}", f.message),
                        ));
                    }
                    tracing::warn!(
                        attempt = retries + 1,
                        wait_ms = wait.as_millis() as u64,
                        "query failed, retrying: {}",
                        f.message
                    );
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A suspect held as a file (ONNX, or weights) and run locally through its [`Oracle`].
pub struct OracleEndpoint {
    oracle: Arc<Mutex<Box<dyn Oracle + Send>>>,
    info: SuspectInfo,
}

impl OracleEndpoint {
    /// Wraps an oracle; `kind` and `location` name it in the evidence, `metadata` describes it.
    pub fn new(
        oracle: Box<dyn Oracle + Send>,
        kind: &str,
        location: &str,
        metadata: Value,
    ) -> Self {
        Self {
            oracle: Arc::new(Mutex::new(oracle)),
            info: SuspectInfo {
                kind: kind.into(),
                location: location.into(),
                protocol: None,
                model_name: None,
                metadata,
                request: None,
            },
        }
    }
}

impl Endpoint for OracleEndpoint {
    fn info(&self) -> SuspectInfo {
        self.info.clone()
    }

    fn max_batch(&self) -> usize {
        256
    }

    async fn query(&self, pixels: Vec<f32>, count: usize) -> Result<Exchange> {
        let request: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let oracle = self.oracle.clone();
        let started = Instant::now();
        let answers = tokio::task::spawn_blocking(move || {
            oracle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .query(&pixels)
        })
        .await
        .map_err(|e| Error::remote(&self.info.location, format!("inference failed: {e}")))??;
        if answers.len() != count {
            return Err(Error::remote(
                &self.info.location,
                format!("answered {} of {count} images", answers.len()),
            ));
        }
        let response = serde_json::to_vec(&answers).expect("answers serialise");
        Ok(Exchange {
            answers,
            request_sha256: nnmark::io::sha256_hex(&request),
            response_sha256: nnmark::io::sha256_hex(&response),
            status: 200,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            retries: 0,
        })
    }
}
