//! Neural cleanse (Wang et al., S&P 2019) as a watermark-removal attack: for every class, find
//! the smallest mask and pattern that send the attacker's images to that class; a class whose
//! mask is far smaller than the others' (anomaly index over 2 by the median absolute
//! deviation) has a shortcut, such as a backdoor-style watermark's trigger. The model then
//! unlearns it: fine-tuning on the attacker's data with the reversed trigger stamped on a share
//! of the images, each keeping its true label.
//!
//! The reverse engineering optimises `mask = σ(a)` (one value per pixel) and `pattern = σ(b)`
//! (one per pixel and channel) by gradient descent on `CE(f((1 − mask)·x + mask·pattern), t) +
//! λ·‖mask‖₁` over batches of the attacker's images, with the stolen weights fixed. When no
//! class stands out, the attack unlearns the class with the smallest mask anyway (an attacker
//! who suspects a trigger-set mark loses little by it) and says so in the log.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;
use crate::train::{self, Silent, images_tensor};

/// The neural-cleanse attack.
#[derive(Debug, Clone, Copy)]
pub struct NeuralCleanse {
    /// Gradient steps of the reverse engineering, per class.
    pub steps: usize,
    /// Weight of the mask's L1 norm.
    pub lambda: f64,
    /// Share of the unlearning images that carry the reversed trigger.
    pub fraction: f64,
    /// Epochs of unlearning.
    pub epochs: usize,
    /// Learning rate of the unlearning.
    pub lr: f64,
}

pub(super) const NEURAL_CLEANSE: AttackInfo = AttackInfo {
    name: "neural-cleanse",
    summary: "reverse-engineer a trigger per class, unlearn the outlier (neural-cleanse:steps=100,lambda=0.01,fraction=0.2,epochs=2,lr=0.01)",
    build: |a: &mut AttackArgs| {
        let (steps, lambda, fraction) = reversal_args(a)?;
        Ok(Box::new(NeuralCleanse {
            steps,
            lambda,
            fraction,
            epochs: a.usize("epochs", false, 2, 1)?,
            lr: a.lr(0.01)?,
        }))
    },
};

/// The reverse engineering's and unlearning's parameters, shared with laundering: `steps`
/// (100), `lambda` (0.01) and `fraction` (0.2).
pub(super) fn reversal_args(a: &mut AttackArgs) -> Result<(usize, f64, f64)> {
    Ok((
        a.usize("steps", false, 100, 1)?,
        a.f64(
            "lambda",
            false,
            Some(0.01),
            (|v| (0.0..=10.0).contains(&v), "must be in [0, 10]"),
        )?,
        a.f64(
            "fraction",
            false,
            Some(0.2),
            (|v| v > 0.0 && v <= 1.0, "must be in (0, 1]"),
        )?,
    ))
}

/// One class's reversed trigger.
#[derive(Debug, Clone)]
pub struct ReversedTrigger {
    /// The class the trigger sends images to.
    pub class: usize,
    /// Mask, one value in [0, 1] per pixel (height × width).
    pub mask: Vec<f32>,
    /// Pattern, channels first, values in [0, 1].
    pub pattern: Vec<f32>,
    /// Share of the probe images the trigger sends to `class`.
    pub success: f64,
}

impl ReversedTrigger {
    /// The mask's L1 norm (Wang et al.'s trigger size).
    pub fn size(&self) -> f64 {
        self.mask.iter().map(|&m| m as f64).sum()
    }

    /// Stamps the trigger onto images in place.
    pub fn stamp(&self, pixels: &mut [f32], channels: usize) {
        let plane = self.mask.len();
        for img in pixels.chunks_mut(plane * channels) {
            for c in 0..channels {
                for p in 0..plane {
                    let i = c * plane + p;
                    let m = self.mask[p];
                    img[i] = (1.0 - m) * img[i] + m * self.pattern[i];
                }
            }
        }
    }
}

/// Neural cleanse's anomaly index of each trigger size: how many (consistency-scaled) median
/// absolute deviations it lies below the median (0 for sizes at or above it).
pub fn anomaly_indices(sizes: &[f64]) -> Vec<f64> {
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            0.0
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let m = median(&mut sizes.to_vec());
    let mad = median(&mut sizes.iter().map(|s| (s - m).abs()).collect()) * 1.4826;
    sizes
        .iter()
        .map(|s| {
            if *s >= m {
                0.0
            } else {
                (m - s) / mad.max(f64::MIN_POSITIVE)
            }
        })
        .collect()
}

/// Finds the smallest trigger sending `probe`'s images to each class (see the module docs).
pub fn reverse_engineer(
    model: &Model,
    probe: &Dataset,
    steps: usize,
    lambda: f64,
    seed: u64,
) -> Result<Vec<ReversedTrigger>> {
    model.check_data(probe)?;
    if probe.is_empty() {
        return Err(crate::error::Error::invalid(
            "attack neural-cleanse",
            &probe.name,
            "needs at least one of the attacker's images to reverse-engineer triggers with",
        ));
    }
    let shape = model.spec.input;
    let plane = shape.height * shape.width;
    let device = crate::train::model_device(model);
    let ad = device.clone().autodiff();
    let frozen = Model {
        spec: model.spec.clone(),
        // Frozen: no weight gradients and no dropout (the trigger search sees the model as
        // it answers queries, and draws nothing from burn's global generator).
        net: model.net.clone().to_device(&ad).freeze(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC1EA_4E5E);
    let n = probe.len();
    let batch = n.min(128);
    let mut out = Vec::with_capacity(model.spec.num_classes);
    for class in 0..model.spec.num_classes {
        // Logits of the mask and pattern; a small mask and a mid-grey pattern to start.
        let mut a = vec![-3.0f32; plane];
        let mut b: Vec<f32> = (0..shape.numel())
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        // Adam (β 0.9 / 0.999) on both, as the original implementation does.
        let (mut ma, mut va) = (vec![0f32; plane], vec![0f32; plane]);
        let (mut mb, mut vb) = (vec![0f32; b.len()], vec![0f32; b.len()]);
        let step_size = 0.1f32;
        let mut order: Vec<usize> = (0..n).collect();
        for step in 0..steps {
            if step * batch % n < batch {
                order.shuffle(&mut rng);
            }
            let start = step * batch % n;
            let idx: Vec<usize> = (0..batch).map(|k| order[(start + k) % n]).collect();
            let pixels: Vec<f32> = idx.iter().flat_map(|&i| probe.image(i).to_vec()).collect();
            let x = images_tensor(pixels, shape, &ad);
            let at =
                Tensor::<2>::from_data(TensorData::new(a.clone(), [1, plane]), &ad).require_grad();
            let bt = Tensor::<2>::from_data(TensorData::new(b.clone(), [1, shape.numel()]), &ad)
                .require_grad();
            let mask = sigmoid(at.clone()).reshape([1, 1, shape.height, shape.width]);
            let pattern =
                sigmoid(bt.clone()).reshape([1, shape.channels, shape.height, shape.width]);
            let stamped = x * (mask.clone().neg() + 1.0) + mask.clone() * pattern;
            let labels = Tensor::<1, Int>::from_data(
                TensorData::new(vec![class as i64; batch], [batch]),
                &ad,
            );
            let loss = crate::kernel::cross_entropy(frozen.forward(stamped), labels)
                + mask.sum() * (lambda as f32);
            let grads = loss.backward();
            let grad_of = |t: &Tensor<2>| -> Vec<f32> {
                t.grad(&grads)
                    .map(|g| {
                        g.into_data()
                            .convert::<f32>()
                            .try_into_vec::<f32>()
                            .unwrap_or_default()
                    })
                    .unwrap_or_default()
            };
            let (ga, gb) = (grad_of(&at), grad_of(&bt));
            let t = (step + 1) as i32;
            adam(&mut a, &ga, &mut ma, &mut va, step_size, t);
            adam(&mut b, &gb, &mut mb, &mut vb, step_size, t);
        }
        let mask: Vec<f32> = a.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let pattern: Vec<f32> = b.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let mut trigger = ReversedTrigger {
            class,
            mask,
            pattern,
            success: 0.0,
        };
        let mut stamped = probe.pixels().to_vec();
        trigger.stamp(&mut stamped, shape.channels);
        let hits = train::predict(model, &stamped, 256)
            .iter()
            .filter(|&&p| p == class)
            .count();
        trigger.success = hits as f64 / n.max(1) as f64;
        out.push(trigger);
    }
    Ok(out)
}

/// One Adam step on `x` (in place) with gradient `g`.
fn adam(x: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, t: i32) {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for i in 0..x.len().min(g.len()) {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        x[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
    }
}

impl Attack for NeuralCleanse {
    fn describe(&self) -> String {
        format!(
            "neural-cleanse:steps={},lambda={},fraction={},epochs={},lr={}",
            self.steps, self.lambda, self.fraction, self.epochs, self.lr
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data("neural-cleanse")?;
        let (triggers, flagged) =
            reverse_and_flag(&model, data, self.steps, self.lambda, ctx.seed)?;
        let unlearn = unlearning_set(data, &triggers, &flagged, self.fraction, ctx.seed)?;
        let cfg =
            attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(model.spec.architecture);
        Ok(train::train(model, &unlearn, &cfg, ctx.device, &mut Silent)?.0)
    }
}

/// Reverse-engineers a trigger per class on (at most 512 of) the attacker's images and picks
/// the classes to unlearn: the outliers by anomaly index, or the smallest trigger's class when
/// none stands out.
pub(super) fn reverse_and_flag(
    model: &Model,
    data: &Dataset,
    steps: usize,
    lambda: f64,
    seed: u64,
) -> Result<(Vec<ReversedTrigger>, Vec<usize>)> {
    let probe = data.take(data.len().min(512));
    let triggers = reverse_engineer(model, &probe, steps, lambda, seed)?;
    let sizes: Vec<f64> = triggers.iter().map(ReversedTrigger::size).collect();
    let index = anomaly_indices(&sizes);
    let mut flagged: Vec<usize> = (0..triggers.len()).filter(|&c| index[c] > 2.0).collect();
    if flagged.is_empty() {
        let smallest = (0..sizes.len())
            .min_by(|&x, &y| sizes[x].total_cmp(&sizes[y]))
            .unwrap_or(0);
        tracing::info!(
            class = smallest,
            "neural cleanse: no class stands out (anomaly index <= 2); unlearning the smallest trigger"
        );
        flagged.push(smallest);
    } else {
        tracing::info!(?flagged, "neural cleanse: outlier classes");
    }
    Ok((triggers, flagged))
}

/// The attacker's data with the flagged triggers stamped on a `fraction` of its images (taking
/// the flagged classes in turn), every image keeping its true label.
pub(super) fn unlearning_set(
    data: &Dataset,
    triggers: &[ReversedTrigger],
    flagged: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<Dataset> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0B11_7E5E);
    let mut pixels = data.pixels().to_vec();
    let n = data.shape.numel();
    let mut picks: Vec<usize> = (0..data.len()).collect();
    picks.shuffle(&mut rng);
    let count = ((data.len() as f64) * fraction).round() as usize;
    for (k, &i) in picks.iter().take(count).enumerate() {
        let t = &triggers[flagged[k % flagged.len()]];
        t.stamp(&mut pixels[i * n..(i + 1) * n], data.shape.channels);
    }
    Dataset::new(
        format!("{} (with reversed triggers)", data.name),
        data.shape,
        data.num_classes,
        pixels,
        data.labels().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anomaly_index_flags_a_small_outlier_only() {
        let sizes = [60.0, 55.0, 58.0, 62.0, 57.0, 8.0, 61.0, 59.0, 56.0, 63.0];
        let idx = anomaly_indices(&sizes);
        assert!(idx[5] > 2.0, "{idx:?}");
        assert!(
            idx.iter().enumerate().all(|(i, v)| i == 5 || *v < 2.0),
            "{idx:?}"
        );
        assert!(
            anomaly_indices(&[10.0, 10.0, 10.0])
                .iter()
                .all(|v| *v == 0.0)
        );
    }
}
