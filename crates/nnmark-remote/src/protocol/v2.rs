//! Open Inference Protocol v2 (KServe v2; Triton, MLServer, OpenVINO Model Server):
//! `POST /v2/models/{name}/infer` with an FP32 tensor; answers are probabilities, Triton's
//! `classification` strings (`"score:index:label"`, top-k), or INT64 labels.

use nnmark::Result;
use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Reveal};
use serde_json::{Value, json};

use super::*;

/// One output a v2 request names, with what it asks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    /// The output's name.
    pub name: String,
    /// `parameters.binary_data`: answer it in the binary part (None: the request's default).
    pub binary: Option<bool>,
    /// `parameters.classification`: answer the top k as `"score:index:label"` strings.
    pub classification: Option<usize>,
}

/// A parsed v2 infer request.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Infer {
    /// The images.
    pub images: Images,
    /// The request's `id`, echoed in the answer.
    pub id: Option<String>,
    /// The outputs asked for (empty: all of them).
    pub outputs: Vec<OutputRequest>,
    /// `parameters.binary_data_output`: every output not asked otherwise goes binary.
    pub binary_output: bool,
}

/// Parses a v2 `infer` request body (JSON only, any input name).
pub fn parse_v2_request(
    body: &[u8],
    shape: ImageShape,
    max_batch: usize,
) -> std::result::Result<Images, Rejection> {
    parse_v2_infer(body, None, None, shape, max_batch).map(|r| r.images)
}

/// Parses a v2 `infer` request: `header_length` is the `Inference-Header-Content-Length`
/// header when the body carries binary tensors; `input_name`, when given, is the only input
/// accepted (Triton refuses others).
pub fn parse_v2_infer(
    body: &[u8],
    header_length: Option<&str>,
    input_name: Option<&str>,
    shape: ImageShape,
    max_batch: usize,
) -> std::result::Result<V2Infer, Rejection> {
    let (head, binary) = super::binary::split(body, header_length).map_err(Rejection::malformed)?;
    let mut v = parse_json(head)?;
    if v.get("inputs").and_then(Value::as_array).is_some() {
        super::binary::inline(&mut v, "inputs", binary).map_err(Rejection::malformed)?;
    }
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
    if let Some(expected) = input_name {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        if name != expected {
            return Err(Rejection::malformed(format!(
                "unexpected inference input '{name}' (this model's input is '{expected}')"
            )));
        }
    }
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
    let outputs = match v.get("outputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, o)| output_request(o, i))
            .collect::<std::result::Result<_, _>>()?,
        Some(other) => {
            return Err(Rejection::malformed(format!(
                "'outputs' is {other}, not an array of requested outputs"
            )));
        }
    };
    let images = check_count(pixels, count, shape, max_batch)?;
    let id = match v.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(Rejection::malformed(format!(
                "'id' is {other}; the protocol's request id is a string"
            )));
        }
    };
    let binary_output = v
        .pointer("/parameters/binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(V2Infer {
        images,
        id,
        outputs,
        binary_output,
    })
}

fn output_request(o: &Value, i: usize) -> std::result::Result<OutputRequest, Rejection> {
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Rejection::malformed(format!("outputs[{i}] has no 'name'")))?;
    let classification = match o.pointer("/parameters/classification") {
        None | Some(Value::Null) => None,
        Some(k) => match k.as_u64() {
            Some(0) => None,
            Some(k) => Some(usize::try_from(k).unwrap_or(usize::MAX)),
            None => {
                return Err(Rejection::malformed(format!(
                    "outputs[{i}].parameters.classification = {k} is not a class count"
                )));
            }
        },
    };
    Ok(OutputRequest {
        name: name.to_string(),
        binary: o
            .pointer("/parameters/binary_data")
            .and_then(Value::as_bool),
        classification,
    })
}

/// The score output's name, as the metadata declares it.
pub const SCORES_OUTPUT: &str = "probabilities";
/// The label output's name.
pub const LABEL_OUTPUT: &str = "label";

/// What one output of an answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputForm {
    /// FP32 [N, classes].
    Scores,
    /// BYTES [N, k] `"score:index:label"` strings, most probable first.
    TopK(usize),
    /// INT64 [N].
    Label,
}

/// One output to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOutput {
    name: &'static str,
    form: OutputForm,
    binary: bool,
}

/// The outputs a server with reveal `policy` offers, as its metadata declares them: the score
/// output (full rows, or only top-k strings under a top-k policy) and the label output; a
/// label-only server offers labels alone.
pub fn v2_output_metadata(policy: Reveal, classes: usize) -> Vec<Value> {
    let mut out = Vec::new();
    match policy {
        Reveal::Probabilities => {
            out.push(json!({"name": SCORES_OUTPUT, "datatype": "FP32", "shape": [-1, classes]}))
        }
        Reveal::TopK(k) => out.push(
            json!({"name": SCORES_OUTPUT, "datatype": "BYTES", "shape": [-1, k.clamp(1, classes)]}),
        ),
        Reveal::Label => {}
    }
    out.push(json!({"name": LABEL_OUTPUT, "datatype": "INT64", "shape": [-1]}));
    out
}

/// Decides what each output of the answer holds, before the model runs: unknown outputs are
/// refused as Triton refuses them (400), and so is a classification of the label output, which
/// holds no scores to rank.
pub fn plan_v2_outputs(
    req: &V2Infer,
    policy: Reveal,
    classes: usize,
) -> std::result::Result<Vec<PlannedOutput>, Rejection> {
    let scores = |asked: Option<usize>| match (policy, asked) {
        (Reveal::TopK(k), a) => Some(OutputForm::TopK(k.min(a.unwrap_or(k)).clamp(1, classes))),
        (Reveal::Probabilities, Some(a)) => Some(OutputForm::TopK(a.clamp(1, classes))),
        (Reveal::Probabilities, None) => Some(OutputForm::Scores),
        (Reveal::Label, _) => None,
    };
    if req.outputs.is_empty() {
        let mut all = Vec::new();
        if let Some(form) = scores(None) {
            all.push(PlannedOutput {
                name: SCORES_OUTPUT,
                form,
                binary: req.binary_output,
            });
        }
        all.push(PlannedOutput {
            name: LABEL_OUTPUT,
            form: OutputForm::Label,
            binary: req.binary_output,
        });
        return Ok(all);
    }
    req.outputs
        .iter()
        .map(|o| {
            let binary = o.binary.unwrap_or(req.binary_output);
            match o.name.as_str() {
                SCORES_OUTPUT => scores(o.classification)
                    .map(|form| PlannedOutput {
                        name: SCORES_OUTPUT,
                        form,
                        binary,
                    })
                    .ok_or_else(|| {
                        Rejection::malformed(format!(
                            "unexpected inference output '{}': this server reveals labels only (output '{LABEL_OUTPUT}')",
                            o.name
                        ))
                    }),
                LABEL_OUTPUT if o.classification.is_some() => Err(Rejection::malformed(format!(
                    "output '{LABEL_OUTPUT}' holds class indices; the classification extension needs a score output"
                ))),
                LABEL_OUTPUT => Ok(PlannedOutput {
                    name: LABEL_OUTPUT,
                    form: OutputForm::Label,
                    binary,
                }),
                other => Err(Rejection::malformed(format!(
                    "unexpected inference output '{other}' (this model's outputs: {})",
                    v2_output_metadata(policy, classes)
                        .iter()
                        .filter_map(|o| o["name"].as_str().map(|n| format!("'{n}'")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        })
        .collect()
}

/// Builds a v2 infer answer for `plan`: the JSON part and the binary part (empty when no output
/// is binary).
pub fn v2_answer(
    model: &str,
    id: Option<&str>,
    plan: &[PlannedOutput],
    answers: &[Answer],
    classes: usize,
    names: &ClassNames,
) -> (Value, Vec<u8>) {
    let n = answers.len();
    let outputs: Vec<Value> = plan
        .iter()
        .map(|o| match o.form {
            OutputForm::Label => json!({
                "name": o.name, "datatype": "INT64", "shape": [n],
                "data": answers.iter().map(|a| a.label).collect::<Vec<_>>(),
            }),
            OutputForm::TopK(k) => {
                let data: Vec<String> = answers
                    .iter()
                    .flat_map(|a| top(a, k).map(|&(c, s)| format!("{s}:{c}:{}", names.name(c))))
                    .collect();
                json!({"name": o.name, "datatype": "BYTES", "shape": [n, k], "data": data})
            }
            OutputForm::Scores => json!({
                "name": o.name, "datatype": "FP32", "shape": [n, classes],
                "data": answers.iter().flat_map(|a| row(a, classes)).collect::<Vec<_>>(),
            }),
        })
        .collect();
    let mut v = json!({"model_name": model, "model_version": "1", "outputs": outputs});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    let binary: Vec<bool> = plan.iter().map(|o| o.binary).collect();
    let raw = super::binary::extract_outputs(&mut v, &binary);
    (v, raw)
}

/// Builds the JSON v2 answer to a request that names no output (every output the `reveal`
/// policy offers, scores first).
pub fn v2_response(
    model: &str,
    id: Option<&str>,
    answers: &[Answer],
    reveal: Reveal,
    classes: usize,
    names: &ClassNames,
) -> Value {
    let req = V2Infer {
        images: Images {
            pixels: Vec::new(),
            count: answers.len(),
        },
        id: None,
        outputs: Vec::new(),
        binary_output: false,
    };
    let plan = plan_v2_outputs(&req, reveal, classes).expect("no outputs named: nothing to refuse");
    v2_answer(model, id, &plan, answers, classes, names).0
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

/// Parses a v2 infer response into `expected` answers, from the first output that holds
/// them (scores before classification strings before labels).
pub fn parse_v2_response(
    v: &Value,
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    parse_v2_response_from(v, expected, names, None)
}

/// Parses a v2 infer response from output `wanted` (when the answer has it), else from the
/// first output that holds answers.
pub fn parse_v2_response_from(
    v: &Value,
    expected: usize,
    names: &ClassNames,
    wanted: Option<&str>,
) -> std::result::Result<Vec<Answer>, String> {
    let outputs = v
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("answer has no 'outputs' array"))?;
    if outputs.is_empty() {
        return Err(bad("answer's 'outputs' is empty"));
    }
    if let Some(name) = wanted
        && let Some(i) = outputs
            .iter()
            .position(|o| o.get("name").and_then(Value::as_str) == Some(name))
    {
        return parse_v2_output(&outputs[i], i, expected, names);
    }
    let rank = |o: &Value| match o.get("datatype").and_then(Value::as_str).unwrap_or("") {
        dt if dt.starts_with("FP") => 0,
        "BYTES" => 1,
        _ => 2,
    };
    let mut order: Vec<usize> = (0..outputs.len()).collect();
    order.sort_by_key(|&i| rank(&outputs[i]));
    let mut errors = Vec::new();
    for i in order {
        match parse_v2_output(&outputs[i], i, expected, names) {
            Ok(answers) => return Ok(answers),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// Flattens nested `data` arrays (the protocol allows them) into one list of values.
fn flat_values<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flat_values(x, out)),
        other => out.push(other),
    }
}

/// Reads the answers from one output tensor.
fn parse_v2_output(
    out: &Value,
    i: usize,
    expected: usize,
    names: &ClassNames,
) -> std::result::Result<Vec<Answer>, String> {
    let classes = names.len();
    let at = format!("outputs[{i}]");
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
        .ok_or_else(|| format!("{at}.shape must be an array of non-negative integers"))?;
    let nested = out
        .get("data")
        .filter(|d| d.is_array())
        .ok_or_else(|| format!("{at}.data is missing"))?;
    let mut flat = Vec::new();
    flat_values(nested, &mut flat);
    let data: Vec<Value> = flat.into_iter().cloned().collect();
    if shape.first() != Some(&expected) {
        return Err(format!(
            "{at}.shape {shape:?} does not start with the {expected} images sent"
        ));
    }
    let per = shape[1..]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{at}.shape {shape:?} claims more values than exist"))?;
    let claimed = expected.checked_mul(per.max(1));
    if claimed != Some(data.len()) {
        return Err(format!(
            "{at} holds {} values, its shape {shape:?} says {}",
            data.len(),
            claimed.map_or("more than exist".to_string(), |c| c.to_string())
        ));
    }
    match datatype {
        "BYTES" => data
            .chunks(per.max(1))
            .enumerate()
            .map(|(r, chunk)| {
                let scores = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let at = format!("{at}.data[{}]", r * per + j);
                        classification_entry(s.as_str().unwrap_or(""), names, &at)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                answer_from_scores(scores).ok_or_else(|| bad("empty classification"))
            })
            .collect(),
        "FP32" | "FP64" | "FP16" | "BF16" if per == classes => data
            .chunks(classes)
            .enumerate()
            .map(|(r, row)| probability_row(row, classes, &format!("{at} row {r}")))
            .collect(),
        "INT64" | "INT32" | "UINT8" | "INT8" | "INT16" | "UINT16" | "UINT32" | "UINT64"
            if per <= 1 =>
        {
            data.iter()
                .enumerate()
                .map(|(r, c)| {
                    Ok(Answer {
                        label: class_of(c, names, &format!("{at}.data[{r}]"))?,
                        scores: Vec::new(),
                    })
                })
                .collect()
        }
        other => Err(format!(
            "{at} is {other} of shape {shape:?}: expected FP32 [N, {classes}] scores, INT64 [N] labels or BYTES classification"
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
        plan: &TensorPlan,
    ) -> Result<(Vec<u8>, &'static str)> {
        let (pixels, shape) = plan.prepare(pixels, shape);
        let data = plan.layout.arrange(&pixels, shape);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        // The request id names the images (and nothing secret): a service's logs can be
        // matched to the evidence's request hashes.
        let id = format!("nnmark-{}", &nnmark::io::sha256_hex(&raw)[..16]);
        let mut req = json!({"id": id, "inputs": [{
            "name": plan.input_name.as_deref().unwrap_or("input"),
            "shape": plan.layout.dims(count, shape),
            "datatype": "FP32", "data": &*data,
        }]});
        if let Some(k) = top_k {
            req["outputs"] = json!([{
                "name": plan.output.as_deref().unwrap_or(SCORES_OUTPUT),
                "parameters": {"classification": k},
            }]);
        }
        Ok(json_body(&req))
    }

    fn parse_response(
        &self,
        v: &Value,
        expected: usize,
        names: &ClassNames,
        plan: &TensorPlan,
    ) -> std::result::Result<Vec<Answer>, String> {
        parse_v2_response_from(v, expected, names, plan.output.as_deref())
    }
}
