//! Models trained outside nnmark, as key generation sees them: a model-dependent scheme
//! (frontier stitching) needs the clean model's predictions and the gradient of its loss with
//! respect to the input. Both come from the caller: a PyTorch model's autograd, say, or, when
//! only scores are available (an ONNX file, a served model's probabilities), central finite
//! differences of those scores ([`ScoresModel`]).

use crate::data::ImageShape;
use crate::error::{Error, Result};

/// A trained classifier nnmark does not build, queried while a key is generated. Pixels are
/// `n` images flattened in (C, H, W) order with values in [0, 1].
pub trait ExternalModel: Sync {
    /// The predicted class of each image.
    fn predict(&self, pixels: &[f32]) -> Result<Vec<usize>>;
    /// The gradient of the cross-entropy loss at `labels` with respect to every pixel (only
    /// its sign matters to FGSM; any positive scale per image is fine).
    fn loss_input_gradient(&self, pixels: &[f32], labels: &[u8]) -> Result<Vec<f32>>;
}

/// Scores of `n` images, `n × classes` row-major: logits or probabilities.
pub type ScoresFn<'a> = dyn Fn(&[f32]) -> Result<Vec<f32>> + Sync + 'a;

/// An outside model known only by its scores: predictions are the largest score, gradients
/// are central finite differences of the loss over every pixel (2 · C·H·W images per image
/// asked, sent in one batch per image).
pub struct ScoresModel<'a> {
    scores: &'a ScoresFn<'a>,
    shape: ImageShape,
    classes: usize,
    step: f32,
}

/// The finite-difference step: one 8-bit intensity level, large enough to rise above f32
/// rounding in the loss, small enough to stay within one linear piece of most ReLU networks.
pub const DEFAULT_STEP: f32 = 1.0 / 255.0;

impl<'a> ScoresModel<'a> {
    /// A model of `shape` images and `classes` classes answering with `scores`.
    pub fn new(scores: &'a ScoresFn<'a>, shape: ImageShape, classes: usize) -> Self {
        ScoresModel {
            scores,
            shape,
            classes,
            step: DEFAULT_STEP,
        }
    }

    fn checked_scores(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let n = pixels.len() / self.shape.numel().max(1);
        let s = (self.scores)(pixels)?;
        if s.len() != n * self.classes {
            return Err(Error::invalid(
                "external model",
                format!("{} scores", s.len()),
                format!(
                    "expected {n} × {} (images × classes); a model that answers only classes needs a gradient function",
                    self.classes
                ),
            ));
        }
        if let Some(v) = s.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "external model",
                v,
                "returned a score that is not finite",
            ));
        }
        Ok(s)
    }
}

/// Natural log-probabilities of one row of scores: the row itself normalised when it already
/// is a probability vector (non-negative, summing to 1), else its log-softmax.
pub fn log_probabilities(row: &[f32]) -> Vec<f64> {
    let sum: f64 = row.iter().map(|&v| v as f64).sum();
    let is_probability = row.iter().all(|&v| (0.0..=1.0).contains(&v)) && (sum - 1.0).abs() < 1e-3;
    if is_probability {
        row.iter()
            .map(|&v| (v as f64 / sum).max(1e-30).ln())
            .collect()
    } else {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        row.iter().map(|&v| v as f64 - lse).collect()
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

impl ExternalModel for ScoresModel<'_> {
    fn predict(&self, pixels: &[f32]) -> Result<Vec<usize>> {
        let s = self.checked_scores(pixels)?;
        Ok(s.chunks(self.classes).map(argmax).collect())
    }

    fn loss_input_gradient(&self, pixels: &[f32], labels: &[u8]) -> Result<Vec<f32>> {
        let n = self.shape.numel();
        if pixels.len() != labels.len() * n {
            return Err(Error::invalid(
                "images",
                pixels.len(),
                format!("expected {} labels × {n} pixels", labels.len()),
            ));
        }
        let mut grad = Vec::with_capacity(pixels.len());
        let mut batch = vec![0f32; 2 * n * n];
        for (image, &label) in pixels.chunks(n).zip(labels) {
            if label as usize >= self.classes {
                return Err(Error::invalid(
                    "label",
                    label,
                    format!("not a class (0..{})", self.classes),
                ));
            }
            // Rows 2j and 2j+1: the image with pixel j raised and lowered by the step.
            for j in 0..n {
                for (k, sign) in [(2 * j, 1.0f32), (2 * j + 1, -1.0)] {
                    let row = &mut batch[k * n..(k + 1) * n];
                    row.copy_from_slice(image);
                    row[j] += sign * self.step;
                }
            }
            let s = self.checked_scores(&batch)?;
            let loss = |k: usize| {
                -log_probabilities(&s[k * self.classes..(k + 1) * self.classes])[label as usize]
            };
            for j in 0..n {
                grad.push(((loss(2 * j) - loss(2 * j + 1)) / (2.0 * self.step as f64)) as f32);
            }
        }
        Ok(grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_of_probabilities_and_logits() {
        let p = log_probabilities(&[0.25, 0.75]);
        assert!((p[0] - 0.25f64.ln()).abs() < 1e-6 && (p[1] - 0.75f64.ln()).abs() < 1e-6);
        let l = log_probabilities(&[0.0, 2.0f32.ln()]);
        assert!((l[0] - (1.0f64 / 3.0).ln()).abs() < 1e-6, "{l:?}");
    }

    #[test]
    fn finite_differences_of_a_linear_model_give_its_gradient() {
        // Logits z_c = w_c · x on 1×2×2 images, 3 classes: the loss gradient is
        // Σ_c (softmax_c − [c = y]) w_c.
        let shape = ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let w = [
            [1.0f32, -2.0, 0.5, 0.0],
            [0.0, 1.0, -1.0, 3.0],
            [-1.0, 0.0, 2.0, 1.0],
        ];
        let scores = |px: &[f32]| -> Result<Vec<f32>> {
            Ok(px
                .chunks(4)
                .flat_map(|x| {
                    w.iter()
                        .map(move |wc| wc.iter().zip(x).map(|(a, b)| a * b).sum::<f32>())
                })
                .collect())
        };
        let m = ScoresModel::new(&scores, shape, 3);
        let x = [0.2f32, 0.7, 0.1, 0.9];
        let g = m.loss_input_gradient(&x, &[1]).unwrap();
        let z: Vec<f32> = scores(&x).unwrap();
        let lp = log_probabilities(&z);
        let expected: Vec<f64> = (0..4)
            .map(|j| {
                (0..3)
                    .map(|c| (lp[c].exp() - if c == 1 { 1.0 } else { 0.0 }) * w[c][j] as f64)
                    .sum()
            })
            .collect();
        for (a, b) in g.iter().zip(&expected) {
            assert!((*a as f64 - b).abs() < 1e-3, "{g:?} vs {expected:?}");
        }
        assert_eq!(m.predict(&x).unwrap(), vec![1]);
        // A model answering the wrong number of scores is refused with a message.
        let short = |_: &[f32]| -> Result<Vec<f32>> { Ok(vec![0.0]) };
        let bad = ScoresModel::new(&short, shape, 3);
        assert!(
            bad.predict(&x)
                .unwrap_err()
                .to_string()
                .contains("gradient function")
        );
    }
}
