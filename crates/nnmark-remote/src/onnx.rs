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
