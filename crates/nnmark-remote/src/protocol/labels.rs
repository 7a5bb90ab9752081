//! Label/score JSON (Hugging Face inference API, TorchServe): `POST /predictions/{name}` with
//! the image file as body; the answer is `[{"label": "...", "score": ...}, ...]`.

use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Reveal};
use nnmark::{Error, Result};
use serde_json::{Value, json};

use super::*;

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
        return check_count(pixels, list.len(), shape, max_batch);
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        Rejection::unprocessable(format!("body is not a readable image: {e}"))
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(body))
            .with_guessed_format()
            .map_err(|e| unreadable(&e))
    };
    // The size from the header first: a 16000x16000 PNG is refused before it is decoded.
    let (width, height) = reader()?.into_dimensions().map_err(|e| unreadable(&e))?;
    if (width as usize, height as usize) != (shape.width, shape.height) {
        return Err(Rejection::unprocessable(format!(
            "image is {width}x{height}; this model takes {}x{}",
            shape.width, shape.height
        )));
    }
    let img = reader()?.decode().map_err(|e| unreadable(&e))?;
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
    check_count(pixels, 1, shape, max_batch)
}

/// Encodes one CHW image with values in [0, 1] as PNG (lossless for 8-bit sources).
pub(crate) fn encode_png(pixels: &[f32], shape: ImageShape) -> Result<Vec<u8>> {
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

/// Parses a label/score response (`[{label, score}]`, or a list of them for a batch).
pub fn parse_labels_response(
    v: &Value,
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    let one = |answer: &Value, at: &str| -> std::result::Result<Answer, String> {
        match answer {
            Value::Array(items) => label_score_list(items, names, at),
            // TorchServe's image classifier: {"7": 0.93, "3": 0.05, ...}.
            Value::Object(map) if !map.contains_key("label") => {
                let mut pairs = Vec::with_capacity(map.len());
                for (k, s) in map {
                    let c = class_of(&Value::String(k.clone()), names, &format!("{at} key"))
                        .or_else(|e| {
                            k.parse::<u64>()
                                .ok()
                                .and_then(|i| class_of(&Value::from(i), names, at).ok())
                                .ok_or(e)
                        })?;
                    let s = s
                        .as_f64()
                        .filter(|s| s.is_finite())
                        .ok_or_else(|| format!("{at}[\"{k}\"] = {s} is not a finite number"))?;
                    pairs.push((c, s as f32));
                }
                answer_from_scores(pairs).ok_or_else(|| format!("{at} is empty"))
            }
            Value::Object(_) => label_score_list(std::slice::from_ref(answer), names, at),
            // A bare class (TorchServe's MNIST example answers `7`).
            Value::Number(_) | Value::String(_) => Ok(Answer {
                label: class_of(answer, names, at)?,
                scores: Vec::new(),
            }),
            other => Err(format!(
                "{at} is {other}: expected [{{label, score}}], {{class: score}} or a class"
            )),
        }
    };
    // One image: a list of {label, score}, a {class: score} object or a bare class. A batch: a
    // list of those, one per image.
    let batch = match v.as_array().and_then(|a| a.first()) {
        Some(Value::Array(_)) => true,
        Some(first @ Value::Object(_)) => first.get("label").is_none(),
        Some(Value::Number(_) | Value::String(_)) => true,
        _ => false,
    };
    if !batch {
        if expected != 1 {
            return Err(format!("answer holds one prediction for {expected} images"));
        }
        return Ok(vec![one(v, "answer")?]);
    }
    let arr = v.as_array().expect("a batch is a list");
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

/// Reads `[{label, score}, ...]`, most probable first when scores are given.
fn label_score_list(
    items: &[Value],
    names: &ClassNames,
    at: &str,
) -> std::result::Result<Answer, String> {
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
}

/// The label/score protocol (Hugging Face, TorchServe) on the wire: one image file per
/// request, or a JSON batch.
pub struct Labels;

impl WireFormat for Labels {
    fn request_body(
        &self,
        pixels: &[f32],
        count: usize,
        shape: ImageShape,
        _top_k: Option<usize>,
        _plan: &TensorPlan,
    ) -> Result<(Vec<u8>, &'static str)> {
        if count == 1 {
            return Ok((encode_png(pixels, shape)?, "image/png"));
        }
        let body = json!({"inputs": pixels.chunks(shape.numel()).collect::<Vec<_>>()});
        Ok(json_body(&body))
    }

    fn parse_response(
        &self,
        v: &Value,
        expected: usize,
        names: &ClassNames,
        _plan: &TensorPlan,
    ) -> std::result::Result<Vec<Answer>, String> {
        parse_labels_response(v, expected, names)
    }
}
