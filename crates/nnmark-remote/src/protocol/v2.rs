//! Open Inference Protocol v2 (KServe v2; Triton, MLServer, OpenVINO Model Server):
//! `POST /v2/models/{name}/infer` with an FP32 tensor; answers are probabilities, Triton's
//! `classification` strings (`"score:index:label"`, top-k), or INT64 labels.

use nnmark::Result;
use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Reveal};
use serde_json::{Value, json};

use super::*;

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
    // Every dimension a non-negative integer that fits, and their product checked: a peer's
    // shape can claim more values than exist or overflow to anything.
    let shape: Vec<usize> = out
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad("outputs[0].shape must be an array of non-negative integers"))?;
    let data = out
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("outputs[0].data is missing"))?;
    if shape.first() != Some(&expected) {
        return Err(format!(
            "outputs[0].shape {shape:?} does not start with the {expected} images sent"
        ));
    }
    let per = shape[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("outputs[0].shape {shape:?} claims more values than exist"))?;
    let claimed = expected.checked_mul(per.max(1));
    if claimed != Some(data.len()) {
        return Err(format!(
            "outputs[0] holds {} values, its shape {shape:?} says {}",
            data.len(),
            claimed.map_or("more than exist".to_string(), |c| c.to_string())
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

/// The Open Inference Protocol v2 on the wire.
pub struct V2;

impl WireFormat for V2 {
    fn request_body(
        &self,
        pixels: &[f32],
        count: usize,
        shape: ImageShape,
        top_k: Option<usize>,
    ) -> Result<(Vec<u8>, &'static str)> {
        let mut req = json!({"inputs": [{
            "name": "input", "shape": [count, shape.channels, shape.height, shape.width],
            "datatype": "FP32", "data": pixels,
        }]});
        if let Some(k) = top_k {
            req["outputs"] =
                json!([{"name": "classification", "parameters": {"classification": k}}]);
        }
        Ok(json_body(&req))
    }

    fn parse_response(
        &self,
        v: &Value,
        expected: usize,
        names: &ClassNames,
    ) -> std::result::Result<Vec<Answer>, String> {
        parse_v2_response(v, expected, names)
    }
}
