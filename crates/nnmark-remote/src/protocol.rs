//! The wire formats nnmark speaks, both as server and as client:
//!
//! - **Open Inference Protocol v2** (KServe v2; Triton, MLServer, OpenVINO Model Server):
//!   `POST /v2/models/{name}/infer` with an FP32 tensor; the answer is a probability tensor,
//!   Triton's `classification` extension strings (`"score:index:label"`, top-k), or an INT64
//!   label tensor.
//! - **TF Serving REST**: `POST /v1/models/{name}:predict` with `{"instances": [...]}`; the
//!   answer is `{"predictions": [...]}`, one probability row, top-k object or label per image.
//! - **Label/score JSON** (Hugging Face inference API, TorchServe): `POST /predictions/{name}`
//!   with the image file as body; the answer is `[{"label": "...", "score": ...}, ...]`.
//!
//! Parsing is shared so that the server rejects exactly what the client would never send, and
//! the client accepts every answer shape the server (or Triton / TF Serving) produces.

use std::fmt;
use std::path::Path;

use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Reveal};
use nnmark::{Error, Result};
use serde_json::{Value, json};

/// An inference protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Open Inference Protocol v2 / KServe v2.
    V2,
    /// TensorFlow Serving's REST predict API.
    TfServing,
    /// Image in, `[{"label", "score"}]` out (Hugging Face, TorchServe).
    Labels,
}

impl Protocol {
    /// Every protocol, in the order `auto` probes them.
    pub const ALL: [Protocol; 3] = [Protocol::V2, Protocol::TfServing, Protocol::Labels];

    /// Parses a protocol name (`v2`/`kserve`/`oip`, `tf-serving`/`tf`, `labels`/`hf`/`torchserve`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "v2" | "kserve" | "oip" | "open-inference" => Ok(Protocol::V2),
            "tf-serving" | "tfserving" | "tf" => Ok(Protocol::TfServing),
            "labels" | "hf" | "torchserve" | "label-score" => Ok(Protocol::Labels),
            other => Err(Error::invalid(
                "protocol",
                other,
                "expected v2 (KServe / Open Inference Protocol), tf-serving or labels (HF / TorchServe)",
            )),
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V2 => "v2",
            Protocol::TfServing => "tf-serving",
            Protocol::Labels => "labels",
        }
    }

    /// The inference path for model `name`.
    pub fn infer_path(self, name: &str) -> String {
        match self {
            Protocol::V2 => format!("/v2/models/{name}/infer"),
            Protocol::TfServing => format!("/v1/models/{name}:predict"),
            Protocol::Labels => format!("/predictions/{name}"),
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Protocol::parse(s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Class names as a service reports them, so label answers map back to class indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassNames(pub Vec<String>);

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl ClassNames {
    /// "0", "1", ...: what a service without a label map answers.
    pub fn indices(classes: usize) -> Self {
        Self((0..classes).map(|i| i.to_string()).collect())
    }

    /// `indices`, `fashion`, `digits`, or a file with one class name per line.
    pub fn parse(spec: &str, classes: usize) -> Result<Self> {
        let names = match spec {
            "indices" | "digits" | "mnist" => return Ok(Self::indices(classes)),
            "fashion" | "fashion-mnist" => {
                Self(FASHION_CLASSES.iter().map(|s| s.to_string()).collect())
            }
            path => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                Self(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
        };
        if names.0.len() != classes {
            return Err(Error::invalid(
                "labels",
                spec,
                format!(
                    "lists {} class names but the model has {classes} classes",
                    names.0.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = names.0.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(Error::invalid(
                "labels",
                spec,
                format!("class name '{dup}' appears twice"),
            ));
        }
        Ok(names)
    }

    /// The name of class `i`.
    pub fn name(&self, i: usize) -> &str {
        self.0.get(i).map_or("?", String::as_str)
    }

    /// The class index of a label as a service wrote it: a listed name, else a class number.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.0.iter().position(|n| n == label).or_else(|| {
            label
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&i| i < self.0.len())
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no classes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a request body was refused, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400 (malformed), 413 (too large), 415, 422 (well-formed but unusable).
    pub status: u16,
    /// What is wrong, naming the field and value.
    pub message: String,
}

impl Rejection {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Self {
            status: 422,
            message: message.into(),
        }
    }
}

/// A parsed inference request: `count` whole images, CHW, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    /// Concatenated pixels.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub count: usize,
    /// Top-k asked for through v2's classification extension.
    pub classification: Option<usize>,
}

/// Pixel values the served models take; anything outside (with a little slack for rounding)
/// is refused rather than silently fed to the model.
const PIXEL_RANGE: (f64, f64) = (-1e-3, 1.0 + 1e-3);

/// Parses JSON, telling a non-finite literal (Python's `json.dumps` writes `NaN`) from broken
/// syntax: the first is a value problem (422), the second a malformed body (400).
fn parse_json(body: &[u8]) -> std::result::Result<Value, Rejection> {
    serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        let non_finite = ["NaN", "Infinity", "-Infinity"]
            .iter()
            .any(|t| text.contains(t));
        if non_finite {
            Rejection::unprocessable(format!(
                "input holds a non-finite number (NaN or Infinity), which JSON cannot carry: {e}"
            ))
        } else if e.is_eof() || e.is_syntax() {
            Rejection::malformed(format!("body is not valid JSON: {e}"))
        } else {
            Rejection::unprocessable(format!("body is not usable JSON: {e}"))
        }
    })
}

/// Flattens nested arrays of numbers into `out`, checking every value.
fn flatten(v: &Value, field: &str, out: &mut Vec<f32>) -> std::result::Result<(), Rejection> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| flatten(x, field, out)),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !x.is_finite() || x < PIXEL_RANGE.0 || x > PIXEL_RANGE.1 {
                return Err(Rejection::unprocessable(format!(
                    "{field}[{}] = {n} is outside the pixel range [0, 1]",
                    out.len()
                )));
            }
            out.push(x.clamp(0.0, 1.0) as f32);
            Ok(())
        }
        other => Err(Rejection::unprocessable(format!(
            "{field}[{}] is {other}, not a number",
            out.len()
        ))),
    }
}

/// Rejects a declared batch size over the limit before anything is allocated for it.
fn check_batch(count: usize, max_batch: usize) -> std::result::Result<(), Rejection> {
    if count > max_batch {
        return Err(Rejection::unprocessable(format!(
            "batch of {count} images exceeds this server's limit of {max_batch}"
        )));
    }
    Ok(())
}

fn check_count(
    pixels: Vec<f32>,
    count: usize,
    shape: ImageShape,
    max_batch: usize,
    classification: Option<usize>,
) -> std::result::Result<Images, Rejection> {
    if count == 0 {
        return Err(Rejection::unprocessable("the request holds no image"));
    }
    if count > max_batch {
        return Err(Rejection::unprocessable(format!(
            "batch of {count} images exceeds this server's limit of {max_batch}"
        )));
    }
    if pixels.len() != count * shape.numel() {
        return Err(Rejection::unprocessable(format!(
            "{} values do not make {count} images of {shape} ({} values each)",
            pixels.len(),
            shape.numel()
        )));
    }
    Ok(Images {
        pixels,
        count,
        classification,
    })
}

/// Parses a v2 `infer` request body.
pub fn parse_v2_request(
    body: &[u8],
    shape: ImageShape,
    max_batch: usize,
) -> std::result::Result<Images, Rejection> {
    let v = parse_json(body)?;
    let inputs = v
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| Rejection::malformed("field 'inputs' (an array of tensors) is missing"))?;
    if inputs.len() != 1 {
        return Err(Rejection::unprocessable(format!(
            "'inputs' holds {} tensors; this model takes exactly one",
            inputs.len()
        )));
    }
    let t = &inputs[0];
    let datatype = t.get("datatype").and_then(Value::as_str).unwrap_or("");
    if datatype != "FP32" {
        return Err(Rejection::unprocessable(format!(
            "inputs[0].datatype '{datatype}' is not supported; this model takes FP32"
        )));
    }
    let dims: Vec<u64> = t
        .get("shape")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
        .unwrap_or(None)
        .ok_or_else(|| {
            Rejection::malformed("inputs[0].shape must be an array of non-negative integers")
        })?;
    let count = usize::try_from(
        *dims
            .first()
            .ok_or_else(|| Rejection::unprocessable("inputs[0].shape is empty"))?,
    )
    .unwrap_or(usize::MAX);
    // Checked: a peer's dimensions can multiply past any integer.
    let per_image = dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if dims.len() < 2 || per_image != Some(shape.numel() as u64) {
        return Err(Rejection::unprocessable(format!(
            "inputs[0].shape {dims:?} does not fit this model's input [-1, {}, {}, {}]",
            shape.channels, shape.height, shape.width
        )));
    }
    let data = t
        .get("data")
        .ok_or_else(|| Rejection::malformed("inputs[0].data is missing"))?;
    check_batch(count, max_batch)?;
    let mut pixels = Vec::with_capacity(count * shape.numel());
    flatten(data, "inputs[0].data", &mut pixels)?;
    let classification = v
        .get("outputs")
        .and_then(Value::as_array)
        .and_then(|o| o.first())
        .and_then(|o| o.pointer("/parameters/classification"))
        .and_then(Value::as_u64)
        .map(|k| k as usize);
    check_count(pixels, count, shape, max_batch, classification)
}

/// Parses a TF Serving `predict` request body (`instances` or columnar `inputs`).
pub fn parse_tf_request(
    body: &[u8],
    shape: ImageShape,
    max_batch: usize,
) -> std::result::Result<Images, Rejection> {
    let v = parse_json(body)?;
    let list = v
        .get("instances")
        .or_else(|| v.get("inputs"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Rejection::malformed("field 'instances' (one entry per image) is missing")
        })?;
    check_batch(list.len(), max_batch)?;
    let mut pixels = Vec::with_capacity(list.len() * shape.numel());
    for (i, inst) in list.iter().enumerate() {
        let before = pixels.len();
        flatten(inst, &format!("instances[{i}]"), &mut pixels)?;
        if pixels.len() - before != shape.numel() {
            return Err(Rejection::unprocessable(format!(
                "instances[{i}] holds {} values; this model takes {} ({shape})",
                pixels.len() - before,
                shape.numel()
            )));
        }
    }
    check_count(pixels, list.len(), shape, max_batch, None)
}

/// Parses a label-protocol body: an image file (PNG, JPEG), or JSON `{"inputs": [...]}`.
pub fn parse_labels_request(
    body: &[u8],
    content_type: &str,
    shape: ImageShape,
    max_batch: usize,
) -> std::result::Result<Images, Rejection> {
    if content_type.starts_with("application/json") || body.first() == Some(&b'{') {
        let v = parse_json(body)?;
        let list = v.get("inputs").and_then(Value::as_array).ok_or_else(|| {
            Rejection::malformed("field 'inputs' (one entry per image) is missing")
        })?;
        check_batch(list.len(), max_batch)?;
        let mut pixels = Vec::new();
        for (i, inst) in list.iter().enumerate() {
            flatten(inst, &format!("inputs[{i}]"), &mut pixels)?;
        }
        return check_count(pixels, list.len(), shape, max_batch, None);
    }
    let img = image::load_from_memory(body)
        .map_err(|e| Rejection::unprocessable(format!("body is not a readable image: {e}")))?;
    if (img.width() as usize, img.height() as usize) != (shape.width, shape.height) {
        return Err(Rejection::unprocessable(format!(
            "image is {}x{}; this model takes {}x{}",
            img.width(),
            img.height(),
            shape.width,
            shape.height
        )));
    }
    let pixels: Vec<f32> = match shape.channels {
        1 => img
            .to_luma8()
            .into_raw()
            .into_iter()
            .map(|p| p as f32 / 255.0)
            .collect(),
        3 => {
            // Interleaved RGB to CHW.
            let rgb = img.to_rgb8().into_raw();
            let hw = shape.height * shape.width;
            (0..3 * hw)
                .map(|i| rgb[(i % hw) * 3 + i / hw] as f32 / 255.0)
                .collect()
        }
        c => {
            return Err(Rejection::unprocessable(format!(
                "image bodies need 1 or 3 channels; this model takes {c}"
            )));
        }
    };
    check_count(pixels, 1, shape, max_batch, None)
}

/// Encodes one CHW image with values in [0, 1] as PNG (lossless for 8-bit sources).
pub fn encode_png(pixels: &[f32], shape: ImageShape) -> Result<Vec<u8>> {
    let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let hw = shape.height * shape.width;
    let (raw, color) = match shape.channels {
        1 => (
            pixels.iter().map(|&v| to_u8(v)).collect::<Vec<u8>>(),
            image::ExtendedColorType::L8,
        ),
        3 => (
            (0..3 * hw)
                .map(|i| to_u8(pixels[(i % 3) * hw + i / 3]))
                .collect(),
            image::ExtendedColorType::Rgb8,
        ),
        c => {
            return Err(Error::invalid(
                "protocol",
                "labels",
                format!("sends image files, which need 1 or 3 channels, not {c}"),
            ));
        }
    };
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &raw,
        shape.width as u32,
        shape.height as u32,
        color,
    )
    .map_err(|e| Error::invalid("image", "png", e.to_string()))?;
    Ok(out)
}

/// What the server reveals for one answer, given its policy and the request's top-k wish.
fn top(answer: &Answer, k: usize) -> impl Iterator<Item = &(usize, f32)> {
    answer.scores.iter().take(k)
}

/// Full probability row (class order) of an answer that holds every class.
fn row(answer: &Answer, classes: usize) -> Vec<f32> {
    let mut p = vec![0.0f32; classes];
    for &(c, s) in &answer.scores {
        if c < classes {
            p[c] = s;
        }
    }
    p
}

/// The effective reveal: the server's policy, narrowed by a v2 classification request.
pub fn effective_reveal(policy: Reveal, requested_k: Option<usize>) -> Reveal {
    match (policy, requested_k) {
        (Reveal::Label, _) => Reveal::Label,
        (Reveal::TopK(k), Some(r)) => Reveal::TopK(k.min(r.max(1))),
        (Reveal::Probabilities, Some(r)) => Reveal::TopK(r.max(1)),
        (p, None) => p,
    }
}

/// Builds a v2 infer response.
pub fn v2_response(
    model: &str,
    id: Option<&str>,
    answers: &[Answer],
    reveal: Reveal,
    classes: usize,
    names: &ClassNames,
) -> Value {
    let n = answers.len();
    let output = match reveal {
        Reveal::Label => json!({
            "name": "label", "datatype": "INT64", "shape": [n],
            "data": answers.iter().map(|a| a.label).collect::<Vec<_>>(),
        }),
        Reveal::TopK(k) => {
            let k = k.min(classes);
            let data: Vec<String> = answers
                .iter()
                .flat_map(|a| top(a, k).map(|&(c, s)| format!("{s}:{c}:{}", names.name(c))))
                .collect();
            json!({"name": "classification", "datatype": "BYTES", "shape": [n, k], "data": data})
        }
        Reveal::Probabilities => json!({
            "name": "probabilities", "datatype": "FP32", "shape": [n, classes],
            "data": answers.iter().flat_map(|a| row(a, classes)).collect::<Vec<_>>(),
        }),
    };
    let mut v = json!({"model_name": model, "model_version": "1", "outputs": [output]});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

/// Builds a TF Serving predict response.
pub fn tf_response(
    answers: &[Answer],
    reveal: Reveal,
    classes: usize,
    names: &ClassNames,
) -> Value {
    let predictions: Vec<Value> = answers
        .iter()
        .map(|a| match reveal {
            Reveal::Label => json!(a.label),
            Reveal::TopK(k) => {
                let t: Vec<&(usize, f32)> = top(a, k).collect();
                json!({
                    "classes": t.iter().map(|x| x.0).collect::<Vec<_>>(),
                    "scores": t.iter().map(|x| x.1).collect::<Vec<_>>(),
                    "labels": t.iter().map(|x| names.name(x.0)).collect::<Vec<_>>(),
                })
            }
            Reveal::Probabilities => json!(row(a, classes)),
        })
        .collect();
    json!({ "predictions": predictions })
}

/// Builds a label/score response: a list for one image, a list of lists for a JSON batch.
pub fn labels_response(
    answers: &[Answer],
    reveal: Reveal,
    names: &ClassNames,
    batch: bool,
) -> Value {
    let one = |a: &Answer| -> Value {
        match reveal {
            Reveal::Label => json!([{ "label": names.name(a.label) }]),
            Reveal::TopK(k) => Value::Array(
                top(a, k)
                    .map(|&(c, s)| json!({"label": names.name(c), "score": s}))
                    .collect(),
            ),
            Reveal::Probabilities => Value::Array(
                a.scores
                    .iter()
                    .map(|&(c, s)| json!({"label": names.name(c), "score": s}))
                    .collect(),
            ),
        }
    };
    if batch {
        Value::Array(answers.iter().map(one).collect())
    } else {
        one(&answers[0])
    }
}

/// Builds an answer from (class, score) pairs, most probable first.
fn answer_from_scores(mut scores: Vec<(usize, f32)>) -> Option<Answer> {
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Some(Answer {
        label: scores.first()?.0,
        scores,
    })
}

fn bad(what: impl Into<String>) -> String {
    what.into()
}

/// Reads one probability row; rejects wrong lengths and values that are not probabilities.
fn probability_row(
    values: &[Value],
    classes: usize,
    at: &str,
) -> std::result::Result<Answer, String> {
    if values.len() != classes {
        return Err(format!(
            "{at} holds {} scores; the model has {classes} classes",
            values.len()
        ));
    }
    let mut scores = Vec::with_capacity(classes);
    for (c, v) in values.iter().enumerate() {
        let s = v
            .as_f64()
            .filter(|s| s.is_finite())
            .ok_or_else(|| format!("{at}[{c}] = {v} is not a finite number"))?;
        scores.push((c, s as f32));
    }
    answer_from_scores(scores).ok_or_else(|| bad(format!("{at} is empty")))
}

fn class_of(v: &Value, names: &ClassNames, at: &str) -> std::result::Result<usize, String> {
    let c = match v {
        Value::Number(n) => n.as_u64().map(|c| c as usize).filter(|&c| c < names.len()),
        Value::String(s) => names.index_of(s),
        _ => None,
    };
    c.ok_or_else(|| {
        format!(
            "{at} = {v} is not one of the {} classes (set the service's class names with --labels)",
            names.len()
        )
    })
}

/// Parses the "score:index[:label]" strings of v2's classification extension.
fn classification_entry(
    s: &str,
    names: &ClassNames,
    at: &str,
) -> std::result::Result<(usize, f32), String> {
    let mut parts = s.splitn(3, ':');
    let score = parts.next().and_then(|p| p.parse::<f32>().ok());
    let index = parts.next().and_then(|p| p.parse::<usize>().ok());
    let label = parts.next();
    let class = match (index, label) {
        (Some(i), _) if i < names.len() => Some(i),
        (_, Some(l)) => names.index_of(l),
        _ => None,
    };
    match (score, class) {
        (Some(s), Some(c)) if s.is_finite() => Ok((c, s)),
        _ => Err(format!(
            "{at} = '{s}' is not a 'score:index:label' entry for {} classes",
            names.len()
        )),
    }
}

/// Parses a v2 infer response into `expected` answers.
pub fn parse_v2_response(
    v: &Value,
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    let classes = names.len();
    let outputs = v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("answer has no 'outputs' array"))?;
    let out = outputs
        .first()
        .ok_or_else(|| bad("answer's 'outputs' is empty"))?;
    let datatype = out.get("datatype").and_then(Value::as_str).unwrap_or("");
    let shape: Vec<usize> = out
        .get("shape")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_default();
    let data = out
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("outputs[0].data is missing"))?;
    if shape.first() != Some(&expected) {
        return Err(format!(
            "outputs[0].shape {shape:?} does not start with the {expected} images sent"
        ));
    }
    let per: usize = shape[1..].iter().product();
    if data.len() != expected * per.max(1) {
        return Err(format!(
            "outputs[0] holds {} values, its shape {shape:?} says {}",
            data.len(),
            expected * per.max(1)
        ));
    }
    match datatype {
        "BYTES" => data
            .chunks(per.max(1))
            .enumerate()
            .map(|(i, chunk)| {
                let scores = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let at = format!("outputs[0].data[{}]", i * per + j);
                        classification_entry(s.as_str().unwrap_or(""), names, &at)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                answer_from_scores(scores).ok_or_else(|| bad("empty classification"))
            })
            .collect(),
        "FP32" | "FP64" | "FP16" if per == classes => data
            .chunks(classes)
            .enumerate()
            .map(|(i, row)| probability_row(row, classes, &format!("outputs[0] row {i}")))
            .collect(),
        "INT64" | "INT32" | "UINT8" | "INT8" | "INT16" | "UINT16" | "UINT32" | "UINT64"
            if per <= 1 =>
        {
            data.iter()
                .enumerate()
                .map(|(i, c)| {
                    Ok(Answer {
                        label: class_of(c, names, &format!("outputs[0].data[{i}]"))?,
                        scores: Vec::new(),
                    })
                })
                .collect()
        }
        other => Err(format!(
            "outputs[0] is {other} of shape {shape:?}: expected FP32 [N, {classes}] scores, INT64 [N] labels or BYTES classification"
        )),
    }
}

/// Parses a TF Serving predict response.
pub fn parse_tf_response(
    v: &Value,
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    let preds = v
        .get("predictions")
        .or_else(|| v.get("outputs"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("answer has no 'predictions' array"))?;
    if preds.len() != expected {
        return Err(format!(
            "answer holds {} predictions for {expected} images",
            preds.len()
        ));
    }
    preds
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("predictions[{i}]");
            match p {
                Value::Array(row) => probability_row(row, names.len(), &at),
                Value::Object(o) => {
                    let classes = o.get("classes").and_then(Value::as_array);
                    let scores = o.get("scores").and_then(Value::as_array);
                    match (classes, scores) {
                        (Some(cs), Some(ss)) if cs.len() == ss.len() && !cs.is_empty() => {
                            let mut pairs = Vec::new();
                            for (j, (c, s)) in cs.iter().zip(ss).enumerate() {
                                let s = s.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
                                    format!("{at}.scores[{j}] = {s} is not a finite number")
                                })?;
                                pairs.push((
                                    class_of(c, names, &format!("{at}.classes[{j}]"))?,
                                    s as f32,
                                ));
                            }
                            answer_from_scores(pairs).ok_or_else(|| bad("empty"))
                        }
                        _ => {
                            let c = o
                                .get("label")
                                .or_else(|| o.get("class"))
                                .or_else(|| o.get("classes"))
                                .ok_or_else(|| {
                                    format!("{at} has neither classes/scores nor a label")
                                })?;
                            let c = c.as_array().and_then(|a| a.first()).unwrap_or(c);
                            Ok(Answer {
                                label: class_of(c, names, &at)?,
                                scores: Vec::new(),
                            })
                        }
                    }
                }
                c => Ok(Answer {
                    label: class_of(c, names, &at)?,
                    scores: Vec::new(),
                }),
            }
        })
        .collect()
}

/// Parses a label/score response (`[{label, score}]`, or a list of them for a batch).
pub fn parse_labels_response(
    v: &Value,
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    let one = |list: &Value, at: &str| -> std::result::Result<Answer, String> {
        let items = list
            .as_array()
            .ok_or_else(|| format!("{at} is not a list of {{label, score}}"))?;
        let mut pairs = Vec::new();
        for (j, item) in items.iter().enumerate() {
            let label = item
                .get("label")
                .ok_or_else(|| format!("{at}[{j}] has no 'label'"))?;
            let c = class_of(label, names, &format!("{at}[{j}].label"))?;
            let s = match item.get("score") {
                None => f32::NAN,
                Some(s) => s
                    .as_f64()
                    .filter(|s| s.is_finite())
                    .ok_or_else(|| format!("{at}[{j}].score = {s} is not a finite number"))?
                    as f32,
            };
            pairs.push((c, s));
        }
        if pairs.iter().any(|p| p.1.is_nan()) {
            // Labels without scores: the first is the prediction.
            let label = pairs.first().ok_or_else(|| format!("{at} is empty"))?.0;
            return Ok(Answer {
                label,
                scores: Vec::new(),
            });
        }
        answer_from_scores(pairs).ok_or_else(|| format!("{at} is empty"))
    };
    let arr = v
        .as_array()
        .ok_or_else(|| bad("answer is not a JSON list"))?;
    let batch = arr.first().is_some_and(Value::is_array);
    if !batch {
        if expected != 1 {
            return Err(format!("answer holds one prediction for {expected} images"));
        }
        return Ok(vec![one(v, "answer")?]);
    }
    if arr.len() != expected {
        return Err(format!(
            "answer holds {} predictions for {expected} images",
            arr.len()
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, l)| one(l, &format!("answer[{i}]")))
        .collect()
}

/// Parses any protocol's answer.
pub fn parse_response(
    protocol: Protocol,
    body: &[u8],
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    match protocol {
        Protocol::V2 => parse_v2_response(&v, expected, names),
        Protocol::TfServing => parse_tf_response(&v, expected, names),
        Protocol::Labels => parse_labels_response(&v, expected, names),
    }
}

/// Builds a request body (and its content type) for `count` images.
pub fn request_body(
    protocol: Protocol,
    pixels: &[f32],
    count: usize,
    shape: ImageShape,
    top_k: Option<usize>,
) -> Result<(Vec<u8>, &'static str)> {
    let per = shape.numel();
    let body = match protocol {
        Protocol::V2 => {
            let mut req = json!({"inputs": [{
                "name": "input", "shape": [count, shape.channels, shape.height, shape.width],
                "datatype": "FP32", "data": pixels,
            }]});
            if let Some(k) = top_k {
                req["outputs"] =
                    json!([{"name": "classification", "parameters": {"classification": k}}]);
            }
            req
        }
        Protocol::TfServing => json!({
            "instances": pixels.chunks(per).collect::<Vec<_>>(),
        }),
        Protocol::Labels if count == 1 => return Ok((encode_png(pixels, shape)?, "image/png")),
        Protocol::Labels => json!({"inputs": pixels.chunks(per).collect::<Vec<_>>()}),
    };
    Ok((
        serde_json::to_vec(&body).expect("JSON of numbers"),
        "application/json",
    ))
}

/// Reads class names for a served model from `spec` (see [`ClassNames::parse`]).
pub fn class_names_for(spec: Option<&str>, dataset: &str, classes: usize) -> Result<ClassNames> {
    match spec {
        Some(s) => ClassNames::parse(s, classes),
        None if nnmark::data::canonical_name(dataset) == Some("fashion") && classes == 10 => {
            ClassNames::parse("fashion", classes)
        }
        None => Ok(ClassNames::indices(classes)),
    }
}

/// True when `path` looks like an ONNX file.
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ImageShape {
        ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        }
    }

    fn answers() -> Vec<Answer> {
        vec![
            Answer {
                label: 2,
                scores: vec![(2, 0.7), (0, 0.2), (1, 0.1)],
            },
            Answer {
                label: 0,
                scores: vec![(0, 0.5), (1, 0.3), (2, 0.2)],
            },
        ]
    }

    /// A few hundred bytes that declare billions of images or an overflowing shape are refused
    /// before anything is allocated for them (one such request used to abort the server).
    #[test]
    fn declared_sizes_are_checked_before_allocation() {
        let mnist = ImageShape::MNIST;
        for (body, needle) in [
            (
                r#"{"inputs":[{"name":"input","shape":[1000000000,1,28,28],"datatype":"FP32","data":[0]}]}"#,
                "exceeds this server's limit of 256",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4294967296,4294967296,784],"datatype":"FP32","data":[0]}]}"#,
                "does not fit this model's input",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[18446744073709551615,784],"datatype":"FP32","data":[0]}]}"#,
                "exceeds this server's limit",
            ),
        ] {
            let e = parse_v2_request(body.as_bytes(), mnist, 256).unwrap_err();
            assert!(e.message.contains(needle), "{}", e.message);
        }
        let many = format!(r#"{{"instances":[{}]}}"#, vec!["[0]"; 300].join(","));
        let e = parse_tf_request(many.as_bytes(), mnist, 256).unwrap_err();
        assert!(
            e.message.contains("exceeds this server's limit"),
            "{}",
            e.message
        );
        let e = parse_labels_request(
            format!(r#"{{"inputs":[{}]}}"#, vec!["[0]"; 300].join(",")).as_bytes(),
            "application/json",
            mnist,
            256,
        )
        .unwrap_err();
        assert!(
            e.message.contains("exceeds this server's limit"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_protocol_and_reveal_round_trips() {
        let names = ClassNames(vec!["a".into(), "b".into(), "c".into()]);
        for reveal in [Reveal::Label, Reveal::TopK(2), Reveal::Probabilities] {
            for (protocol, v) in [
                (
                    Protocol::V2,
                    v2_response("m", None, &answers(), reveal, 3, &names),
                ),
                (
                    Protocol::TfServing,
                    tf_response(&answers(), reveal, 3, &names),
                ),
                (
                    Protocol::Labels,
                    labels_response(&answers(), reveal, &names, true),
                ),
            ] {
                let body = serde_json::to_vec(&v).unwrap();
                let got = parse_response(protocol, &body, 2, &names).unwrap();
                assert_eq!(
                    got.iter().map(|a| a.label).collect::<Vec<_>>(),
                    vec![2, 0],
                    "{protocol} {reveal:?}"
                );
                let expect_scores = match reveal {
                    Reveal::Label => 0,
                    Reveal::TopK(k) => k,
                    Reveal::Probabilities => 3,
                };
                assert_eq!(got[0].scores.len(), expect_scores, "{protocol} {reveal:?}");
                // Wrong counts are refused, never padded.
                assert!(parse_response(protocol, &body, 3, &names).is_err());
            }
        }
    }

    #[test]
    fn requests_parse_back_to_the_same_pixels() {
        let px = vec![0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.2, 0.4];
        for protocol in Protocol::ALL {
            let (body, ct) = request_body(protocol, &px, 2, shape(), Some(2)).unwrap();
            let got = match protocol {
                Protocol::V2 => parse_v2_request(&body, shape(), 8),
                Protocol::TfServing => parse_tf_request(&body, shape(), 8),
                Protocol::Labels => parse_labels_request(&body, ct, shape(), 8),
            }
            .unwrap();
            assert_eq!(got.count, 2);
            assert_eq!(got.pixels, px, "{protocol}");
        }
        // One image goes as PNG, lossless for 8-bit values.
        let one = [0.0, 128.0 / 255.0, 1.0, 3.0 / 255.0];
        let (png, ct) = request_body(Protocol::Labels, &one, 1, shape(), None).unwrap();
        assert_eq!(ct, "image/png");
        assert_eq!(
            parse_labels_request(&png, ct, shape(), 8).unwrap().pixels,
            one
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let s = shape();
        let r = parse_v2_request(
            br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,1,NaN,0]}]}"#,
            s,
            8,
        );
        assert_eq!(r.unwrap_err().status, 422);
        let r = parse_v2_request(
            br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,1,1e30,0]}]}"#,
            s,
            8,
        );
        let e = r.unwrap_err();
        assert_eq!(e.status, 422);
        assert!(
            e.message.contains("1e+30") && e.message.contains("[2]"),
            "{}",
            e.message
        );
        let r = parse_v2_request(
            br#"{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[0,1,1,0,0]}]}"#,
            s,
            8,
        );
        assert!(r.unwrap_err().message.contains("does not fit"));
        assert_eq!(
            parse_v2_request(b"{not json", s, 8).unwrap_err().status,
            400
        );
        assert_eq!(
            parse_tf_request(br#"{"instances":[[0,0,0]]}"#, s, 8)
                .unwrap_err()
                .status,
            422
        );
        let r = parse_tf_request(br#"{"instances":[[0,0,0,0],[0,0,0,0]]}"#, s, 1);
        assert!(r.unwrap_err().message.contains("limit of 1"));
        assert_eq!(
            parse_labels_request(b"\x89PNGgarbage", "image/png", s, 8)
                .unwrap_err()
                .status,
            422
        );
    }

    #[test]
    fn class_names_map_labels_back() {
        let names = ClassNames::parse("fashion", 10).unwrap();
        assert_eq!(names.index_of("Dress"), Some(3));
        assert_eq!(names.index_of("7"), Some(7));
        assert_eq!(names.index_of("Cat"), None);
        assert!(ClassNames::parse("fashion", 3).is_err());
        let bad = serde_json::json!([{"label": "Cat", "score": 0.9}]);
        let e = parse_labels_response(&bad, 1, &names).unwrap_err();
        assert!(e.contains("Cat") && e.contains("--labels"), "{e}");
    }
}
