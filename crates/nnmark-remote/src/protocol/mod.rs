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
//! Each protocol is a module (`v2`, `tf`, `labels`) implementing [`WireFormat`] for the client
//! and holding its server side. Parsing is shared so that the server rejects exactly what the client would never send, and
//! the client accepts every answer shape the server (or Triton / TF Serving) produces.

mod binary;
mod classes;
mod labels;
mod layout;
mod tf;
mod v2;

use std::fmt;

pub use binary::HEADER_LENGTH as BINARY_HEADER_LENGTH;
pub use classes::{ClassNames, FASHION_CLASSES, class_names_for};
pub use labels::{Labels, labels_response, parse_labels_request, parse_labels_response};
pub use layout::{InputLayout, TensorPlan, declared_image, nest, resize_images};
pub use tf::{TfServing, parse_tf_request, parse_tf_response, tf_response};
pub use v2::{
    LABEL_OUTPUT, OutputRequest, PlannedOutput, SCORES_OUTPUT, V2, V2Infer, parse_v2_infer,
    parse_v2_request, parse_v2_response, parse_v2_response_from, plan_v2_outputs, v2_answer,
    v2_output_metadata, v2_response,
};

use nnmark::data::ImageShape;
use nnmark::oracle::Answer;
use nnmark::{Error, Result};
use serde_json::Value;

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

    /// The inference path for model `name` (for labels: `/predictions/{name}` as TorchServe,
    /// `/models/{owner/name}` as Hugging Face's API, the service's own URL when `name` is empty).
    pub fn infer_path(self, name: &str) -> String {
        match self {
            Protocol::V2 => format!("/v2/models/{name}/infer"),
            Protocol::TfServing => format!("/v1/models/{name}:predict"),
            // Hugging Face's inference API names models `owner/model` under /models; a
            // dedicated endpoint (no model name) answers at its own URL; TorchServe under
            // /predictions.
            Protocol::Labels if name.is_empty() => String::new(),
            Protocol::Labels if name.contains('/') => format!("/models/{name}"),
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
    Ok(Images { pixels, count })
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

/// One wire protocol, client side: how a batch of images is sent and how the answers are read.
/// Its server side (`parse_*_request`, `*_response`) lives in the same module.
pub trait WireFormat: Sync {
    /// The request body (and its content type) for `count` images.
    fn request_body(
        &self,
        pixels: &[f32],
        count: usize,
        shape: ImageShape,
        top_k: Option<usize>,
        plan: &TensorPlan,
    ) -> Result<(Vec<u8>, &'static str)>;
    /// The answers in a response body, exactly `expected` of them.
    fn parse_response(
        &self,
        v: &Value,
        expected: usize,
        names: &ClassNames,
        plan: &TensorPlan,
    ) -> std::result::Result<Vec<Answer>, String>;
}

impl Protocol {
    /// This protocol's wire format.
    pub fn wire(self) -> &'static dyn WireFormat {
        match self {
            Protocol::V2 => &v2::V2,
            Protocol::TfServing => &tf::TfServing,
            Protocol::Labels => &labels::Labels,
        }
    }
}

/// A JSON request body and its content type.
fn json_body(v: &Value) -> (Vec<u8>, &'static str) {
    (
        serde_json::to_vec(v).expect("a JSON value of numbers and strings serialises"),
        "application/json",
    )
}

/// Parses any protocol's answer.
pub(crate) fn parse_response(
    protocol: Protocol,
    body: &[u8],
    header_length: Option<&str>,
    expected: usize,
    names: &ClassNames,
    plan: &TensorPlan,
) -> std::result::Result<Vec<Answer>, String> {
    // A v2 service may answer in Triton's binary form even unasked (KServe does for binary
    // requests); its tensors are read into the JSON form first.
    let (head, binary) = binary::split(body, header_length)?;
    let mut v: Value =
        serde_json::from_slice(head).map_err(|e| format!("answer is not JSON: {e}"))?;
    if !binary.is_empty() {
        binary::inline(&mut v, "outputs", binary)?;
    }
    protocol.wire().parse_response(&v, expected, names, plan)
}

/// Builds a request body (and its content type) for `count` images.
pub(crate) fn request_body(
    protocol: Protocol,
    pixels: &[f32],
    count: usize,
    shape: ImageShape,
    top_k: Option<usize>,
    plan: &TensorPlan,
) -> Result<(Vec<u8>, &'static str)> {
    protocol
        .wire()
        .request_body(pixels, count, shape, top_k, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnmark::oracle::Reveal;

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
                let got = parse_response(protocol, &body, None, 2, &names, &TensorPlan::default())
                    .unwrap();
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
                assert!(
                    parse_response(protocol, &body, None, 3, &names, &TensorPlan::default())
                        .is_err()
                );
            }
        }
    }

    #[test]
    fn requests_parse_back_to_the_same_pixels() {
        let px = vec![0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.2, 0.4];
        for protocol in Protocol::ALL {
            let (body, ct) =
                request_body(protocol, &px, 2, shape(), Some(2), &TensorPlan::default()).unwrap();
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
        let (png, ct) = request_body(
            Protocol::Labels,
            &one,
            1,
            shape(),
            None,
            &TensorPlan::default(),
        )
        .unwrap();
        assert_eq!(ct, "image/png");
        assert_eq!(
            parse_labels_request(&png, ct, shape(), 8).unwrap().pixels,
            one
        );
    }

    #[test]
    fn a_huge_image_is_refused_from_its_header_before_decoding() {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = 0xffff_ffffu32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 == 1 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        let mnist = ImageShape::MNIST;
        let mut png = labels::encode_png(&vec![0.5; mnist.numel()], mnist).unwrap();
        // Claim 16000x16000 in the IHDR chunk (the pixel data stays 28x28).
        png[16..20].copy_from_slice(&16_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&16_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let r = parse_labels_request(&png, "image/png", mnist, 8).unwrap_err();
        assert_eq!(r.status, 422);
        assert!(r.message.contains("16000x16000"), "{}", r.message);
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
    fn torchserve_answer_shapes_are_read() {
        let names = ClassNames::indices(10);
        let one = |v: Value, n| parse_labels_response(&v, n, &names);
        // The image classifier handler: class -> probability, most probable anywhere.
        let a = one(serde_json::json!({"3": 0.05, "7": 0.93, "1": 0.02}), 1).unwrap();
        assert_eq!(a[0].label, 7);
        assert_eq!(a[0].scores[0], (7, 0.93));
        assert_eq!(a[0].scores.len(), 3);
        // The MNIST example: a bare class, alone or one per image.
        assert_eq!(one(serde_json::json!(7), 1).unwrap()[0].label, 7);
        assert_eq!(one(serde_json::json!("7"), 1).unwrap()[0].label, 7);
        let b = one(serde_json::json!([7, 2]), 2).unwrap();
        assert_eq!((b[0].label, b[1].label), (7, 2));
        let b = one(serde_json::json!([{"4": 0.6, "5": 0.4}, {"9": 1.0}]), 2).unwrap();
        assert_eq!((b[0].label, b[1].label), (4, 9));
        // Hugging Face's list of {label, score} is still one image.
        let h = one(
            serde_json::json!([{"label": "2", "score": 0.7}, {"label": "8", "score": 0.3}]),
            1,
        );
        assert_eq!(h.unwrap()[0].label, 2);
        // Wrong shapes are named.
        assert!(one(serde_json::json!({"11": 0.5}), 1).is_err());
        assert!(
            one(serde_json::json!({"3": "high"}), 1)
                .unwrap_err()
                .contains("not a finite number")
        );
        assert!(
            one(serde_json::json!(true), 1)
                .unwrap_err()
                .contains("expected")
        );
        assert!(
            one(serde_json::json!([7, 2]), 3)
                .unwrap_err()
                .contains("2 predictions for 3")
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
