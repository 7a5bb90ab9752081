//! TF Serving REST: `POST /v1/models/{name}:predict` with `{"instances": [...]}`; the answer is
//! `{"predictions": [...]}`, one probability row, top-k object or label per image.

use nnmark::Result;
use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Reveal};
use serde_json::{Value, json};

use super::*;

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
    check_count(pixels, list.len(), shape, max_batch)
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

/// TF Serving's REST predict API on the wire.
pub struct TfServing;

impl WireFormat for TfServing {
    fn request_body(
        &self,
        pixels: &[f32],
        count: usize,
        shape: ImageShape,
        _top_k: Option<usize>,
        plan: &TensorPlan,
    ) -> Result<(Vec<u8>, &'static str)> {
        // One instance per image, nested as the signature declares it.
        let (pixels, shape) = plan.prepare(pixels, shape);
        let dims = plan.layout.dims(count, shape);
        let values = plan.layout.arrange(&pixels, shape);
        let instances: Vec<Value> = values
            .chunks(shape.numel())
            .map(|image| nest(image, &dims[1..]))
            .collect();
        Ok(json_body(&json!({ "instances": instances })))
    }

    fn parse_response(
        &self,
        v: &Value,
        expected: usize,
        names: &ClassNames,
        _plan: &TensorPlan,
    ) -> std::result::Result<Vec<Answer>, String> {
        parse_tf_response(v, expected, names)
    }
}
