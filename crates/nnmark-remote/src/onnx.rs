//! ONNX suspects: an [`Oracle`] over an ONNX file run by tract (pure Rust, inference only), so
//! a suspect handed over as ONNX is verified, attacked or served like any other model.

use std::path::{Path, PathBuf};

use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Oracle, Reveal};
use nnmark::{Error, Result};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// An ONNX classifier taking one image per run: `[1, C, H, W]` (or flattened `[1, C·H·W]`) in,
/// `[1, classes]` logits or probabilities out.
pub struct OnnxOracle {
    plan: TypedRunnableModel<TypedModel>,
    path: PathBuf,
    input_dims: Vec<usize>,
    shape: ImageShape,
    classes: usize,
    reveal: Reveal,
    queries: u64,
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("ONNX: {e}"))
}

/// Most elements a tensor the graph builds from a constant shape may hold (ConstantOfShape,
/// Expand): 2^28, 1 GiB of f32, far above any classifier's activations.
pub(crate) const MAX_CONSTANT_ELEMENTS: u64 = 1 << 28;

/// Refuses a graph whose ConstantOfShape or Expand asks for more than
/// [`MAX_CONSTANT_ELEMENTS`] elements through a constant shape: tract would fold it into a
/// constant while preparing the model, allocating it whole (a 300-byte file can ask for
/// petabytes and abort the process).
fn check_constant_shapes(path: &Path, model: &InferenceModel) -> Result<()> {
    for node in model.nodes() {
        let shape_input = match node.op.name().as_ref() {
            "ConstantOfShape" => 0,
            "Expand" => 1,
            _ => continue,
        };
        let Some(outlet) = node.inputs.get(shape_input) else {
            continue;
        };
        // Only a shape known now can be folded now; one computed from the input is checked
        // against the input's (fixed) size when it runs.
        let konst = model
            .outlet_fact(*outlet)
            .ok()
            .and_then(|f| f.value.concretize());
        let Some(konst) = konst else { continue };
        let dims = konst.cast_to::<i64>().map_err(|e| {
            err(
                path,
                format!("node '{}': shape is not integer: {e}", node.name),
            )
        })?;
        let dims = dims
            .as_slice::<i64>()
            .map_err(|e| err(path, format!("node '{}': {e}", node.name)))?;
        let elements = dims.iter().try_fold(1u64, |acc, &d| {
            u64::try_from(d.max(1))
                .ok()
                .and_then(|d| acc.checked_mul(d))
        });
        if elements.is_none_or(|n| n > MAX_CONSTANT_ELEMENTS) {
            return Err(err(
                path,
                format!(
                    "node '{}' ({}) builds a tensor of shape {dims:?}, over the limit of {MAX_CONSTANT_ELEMENTS} elements",
                    node.name,
                    node.op.name()
                ),
            ));
        }
    }
    Ok(())
}

impl OnnxOracle {
    /// Loads `path`. The input shape is read from the file where it is fixed; `shape` (the
    /// key's) fills in or must agree with it.
    pub fn load(path: &Path, shape: Option<ImageShape>, reveal: Reveal) -> Result<Self> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| err(path, format!("cannot read the model: {e}")))?;
        let fact = model
            .input_fact(0)
            .map_err(|e| err(path, format!("no input: {e}")))?;
        let declared: Vec<Option<usize>> = fact
            .shape
            .dims()
            .map(|d| {
                d.concretize()
                    .and_then(|t| t.to_i64().ok())
                    .and_then(|v| usize::try_from(v).ok())
            })
            .collect();
        let shape = match (declared.as_slice(), shape) {
            ([_, Some(c), Some(h), Some(w)], given) => {
                let s = ImageShape {
                    channels: *c,
                    height: *h,
                    width: *w,
                };
                if let Some(g) = given
                    && g != s
                {
                    return Err(err(path, format!("takes {s} images but {g} were expected")));
                }
                s
            }
            (_, Some(g)) => g,
            (d, None) => {
                return Err(err(
                    path,
                    format!(
                        "input shape {d:?} does not fix the image size; give the shape (the key's model) explicitly"
                    ),
                ));
            }
        };
        let input_dims = if declared.len() == 2 {
            vec![1, shape.numel()]
        } else {
            vec![1, shape.channels, shape.height, shape.width]
        };
        check_constant_shapes(path, &model)?;
        let plan = model
            .with_input_fact(0, f32::fact(input_dims.clone()).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                err(
                    path,
                    format!("cannot prepare the model for {shape} inputs: {e}"),
                )
            })?;
        let mut o = Self {
            plan,
            path: path.to_path_buf(),
            input_dims,
            shape,
            classes: 0,
            reveal,
            queries: 0,
        };
        o.classes = o.run(&vec![0.0; shape.numel()])?.len();
        if o.classes < 2 {
            return Err(err(
                path,
                format!(
                    "answers {} scores; a classifier needs at least 2",
                    o.classes
                ),
            ));
        }
        Ok(o)
    }

    fn run(&self, image: &[f32]) -> Result<Vec<f32>> {
        let input = Tensor::from_shape(&self.input_dims, image).map_err(|e| err(&self.path, e))?;
        let out = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| err(&self.path, format!("inference failed: {e}")))?;
        let view = out[0]
            .to_array_view::<f32>()
            .map_err(|e| err(&self.path, e))?;
        Ok(view.iter().copied().collect())
    }

    /// Probabilities from whatever the graph outputs: softmax unless it already gives a
    /// distribution.
    fn probabilities(scores: Vec<f32>) -> Vec<f32> {
        let sum: f32 = scores.iter().sum();
        if scores.iter().all(|&s| (0.0..=1.0).contains(&s)) && (sum - 1.0).abs() < 1e-3 {
            return scores;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
        let z: f32 = e.iter().sum();
        e.into_iter().map(|v| v / z).collect()
    }
}

impl Oracle for OnnxOracle {
    fn input_shape(&self) -> ImageShape {
        self.shape
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn describe(&self) -> String {
        format!(
            "ONNX model {} ({} classes)",
            self.path.display(),
            self.classes
        )
    }

    fn query(&mut self, pixels: &[f32]) -> Result<Vec<Answer>> {
        let n = self.shape.numel();
        nnmark::oracle::check_batch(pixels, self.shape)?;
        let mut out = Vec::with_capacity(pixels.len() / n);
        for image in pixels.chunks(n) {
            let p = Self::probabilities(self.run(image)?);
            if p.len() != self.classes || p.iter().any(|v| !v.is_finite()) {
                return Err(err(&self.path, "output is not a finite score per class"));
            }
            let mut scores: Vec<(usize, f32)> = p.into_iter().enumerate().collect();
            scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let label = scores[0].0;
            match self.reveal {
                Reveal::Label => scores.clear(),
                Reveal::TopK(k) => scores.truncate(k.max(1)),
                Reveal::Probabilities => {}
            }
            out.push(Answer { label, scores });
            self.queries += 1;
        }
        Ok(out)
    }

    fn queries_made(&self) -> u64 {
        self.queries
    }
}

/// True when `path` looks like an ONNX file.
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

#[cfg(test)]
mod bomb_tests {
    use super::*;
    use prost::Message;
    use tract_onnx::pb::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
        tensor_proto::DataType,
    };

    fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dims: Vec<Option<i64>> = dims.iter().copied().map(Some).collect();
        crate::export::value_info(name, &dims)
    }

    /// input [1,1,28,28] + ConstantOfShape(shape) -> output: the constant is broadcast into
    /// the answer, so tract folds it while preparing the model.
    fn model_with_constant(shape: &[i64]) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: vec![
                    NodeProto {
                        op_type: "ConstantOfShape".into(),
                        input: vec!["shape".into()],
                        output: vec!["big".into()],
                        name: "bomb".into(),
                        ..Default::default()
                    },
                    NodeProto {
                        op_type: "Add".into(),
                        input: vec!["input".into(), "big".into()],
                        output: vec!["out".into()],
                        name: "add".into(),
                        ..Default::default()
                    },
                ],
                initializer: vec![TensorProto {
                    dims: vec![shape.len() as i64],
                    data_type: DataType::Int64 as i32,
                    int64_data: shape.to_vec(),
                    name: "shape".into(),
                    ..Default::default()
                }],
                input: vec![value_info("input", &[1, 1, 28, 28])],
                output: vec![value_info("out", &[1, 1, 28, 28])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_constant_of_shape_bomb_is_refused_before_it_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.onnx");
        // 1e5^3 floats: 4e15 bytes; preparing it used to abort the process.
        std::fs::write(&bomb, model_with_constant(&[100_000, 100_000, 100_000])).unwrap();
        let e = OnnxOracle::load(&bomb, None, Reveal::Label)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb.onnx")
                && e.contains("ConstantOfShape")
                && e.contains("over the limit"),
            "{e}"
        );
        // A small constant of the same graph passes the check (and is refused later only for
        // not being a classifier).
        let small = dir.path().join("small.onnx");
        std::fs::write(&small, model_with_constant(&[1, 1, 28, 28])).unwrap();
        let e = OnnxOracle::load(&small, None, Reveal::Label)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("over the limit"), "{e}");
    }
}
