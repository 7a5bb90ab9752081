//! The adaptive remote attacker: the stolen model is served behind a detector that tries to
//! spot verification queries and answers them differently (the evasion Zhang et al. 2018 and
//! Hitaj et al. 2019 discuss). The weights stay as they are; what changes is what the API
//! answers.
//!
//! Two detectors, both fitted on the attacker's own clean data only (the thief never sees the
//! key):
//! - `score=autoencoder`: MagNet's detector (Meng & Chen 2017): an autoencoder learns to
//!   reconstruct the attacker's images; an input it reconstructs badly (mean absolute error
//!   above the threshold) is off the data's manifold. nnmark's autoencoder is dense
//!   (inputs → 256 → 64 → 256 → inputs, ReLU, sigmoid output, Adam, mean squared error),
//!   where MagNet's MNIST one is convolutional.
//! - `score=confidence`: the baseline out-of-distribution score of Hendrycks & Gimpel 2017,
//!   one minus the stolen model's top probability.
//!
//! The attacker trains on one half of its data and sets the threshold on the other half so
//! that a share `fpr` of its clean images is flagged: the detector's false-positive rate on
//! ordinary traffic, which costs the thief accuracy, since every flagged ordinary query gets a
//! wrong answer. A flagged query is answered with the model's second most likely class
//! (`answer=second`) or a class drawn at random (`answer=random`).
//!
//! [`GuardedOracle`] records every decision, so an experiment can report the detector's true
//! positive rate on key items against its false positive rate on decoys. A per-image detector
//! judges each image alone: interleaving decoys does not hide key items from it; what decoys
//! measure is the price the detector makes ordinary users pay.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Attack, AttackArgs, AttackContext, AttackInfo};
use crate::data::{Dataset, ImageShape};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::oracle::{Answer, Oracle, Reveal, answer_from_ranked, check_batch, ranked};
use crate::train::{model_device, predict_proba, rng_guard};

/// What the detector scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardScoreKind {
    /// Reconstruction error of an autoencoder fitted on the attacker's data (MagNet).
    Autoencoder,
    /// One minus the stolen model's top probability (Hendrycks & Gimpel).
    Confidence,
}

/// What a flagged query is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deflection {
    /// The model's second most likely class.
    Second,
    /// A class drawn uniformly at random (never the model's own answer).
    Random,
}

/// The attack: put a detector in front of the stolen model.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// The score.
    pub score: GuardScoreKind,
    /// Share of the attacker's held-out clean images the threshold lets through as flagged.
    pub fpr: f64,
    /// Answer to flagged queries.
    pub answer: Deflection,
    /// Autoencoder training epochs.
    pub epochs: usize,
}

pub(super) const GUARD: AttackInfo = AttackInfo {
    name: "guard",
    summary: "serve the model behind a detector of verification queries that answers them differently (guard:score=autoencoder|confidence,fpr=0.05,answer=second|random,epochs=30)",
    build: |a: &mut AttackArgs| {
        let score = match a.choice(
            "score",
            false,
            "autoencoder",
            &["autoencoder", "confidence"],
        )? {
            "confidence" => GuardScoreKind::Confidence,
            _ => GuardScoreKind::Autoencoder,
        };
        let answer = match a.choice("answer", false, "second", &["second", "random"])? {
            "random" => Deflection::Random,
            _ => Deflection::Second,
        };
        Ok(Box::new(Guard {
            score,
            fpr: a.f64(
                "fpr",
                false,
                Some(0.05),
                (|v| v > 0.0 && v < 1.0, "must be in (0, 1)"),
            )?,
            answer,
            epochs: a.usize("epochs", false, 30, 1)?,
        }))
    },
};

/// A dense autoencoder: inputs → 256 → 64 → 256 → inputs.
#[derive(Module, Debug)]
pub struct Autoencoder {
    enc1: Linear,
    enc2: Linear,
    dec1: Linear,
    dec2: Linear,
}

impl Autoencoder {
    fn new(inputs: usize, device: &Device) -> Self {
        Self {
            enc1: LinearConfig::new(inputs, 256).init(device),
            enc2: LinearConfig::new(256, 64).init(device),
            dec1: LinearConfig::new(64, 256).init(device),
            dec2: LinearConfig::new(256, inputs).init(device),
        }
    }

    /// Reconstructions of a (N, inputs) batch.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.enc2.forward(relu(self.enc1.forward(x))));
        sigmoid(self.dec2.forward(relu(self.dec1.forward(h))))
    }

    /// Fits the autoencoder to `data`'s images (Adam, lr 1e-3, batches of 64, mean squared
    /// error), seeded.
    pub fn fit(data: &Dataset, epochs: usize, seed: u64, device: &Device) -> Result<Self> {
        let d = data.shape.numel();
        let ad = device.clone().autodiff();
        let mut net = {
            // Seeded and drawn under the lock (burn draws parameters at their first use), so
            // that training on other threads at the same time cannot change them.
            let _rng = rng_guard();
            ad.seed(seed);
            let net = Autoencoder::new(d, &ad);
            let _ = net.forward(Tensor::<2>::zeros([1, d], &ad));
            net
        };
        let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
        for epoch in 0..epochs {
            let order = data.permutation(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64));
            for chunk in order.chunks(64) {
                let pixels: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| data.image(i).iter().copied())
                    .collect();
                let x = Tensor::<2>::from_data(TensorData::new(pixels, [chunk.len(), d]), &ad);
                let loss = (net.forward(x.clone()) - x).powi_scalar(2).mean();
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optim.step(1e-3, net, grads);
            }
        }
        Ok(net.to_device(device).no_grad())
    }

    /// Mean absolute reconstruction error of each image in `pixels`.
    pub fn errors(&self, pixels: &[f32], shape: ImageShape, device: &Device) -> Vec<f32> {
        let d = shape.numel();
        let mut out = Vec::with_capacity(pixels.len() / d);
        for chunk in pixels.chunks(256 * d) {
            let n = chunk.len() / d;
            let x = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [n, d]), device);
            let e: Vec<f32> = (self.forward(x.clone()) - x)
                .abs()
                .mean_dim(1)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            out.extend(e);
        }
        out
    }
}

/// A fitted detector: a score and its threshold.
#[derive(Debug, Clone)]
pub struct QueryGuard {
    score: FittedScore,
    /// Scores above it are flagged.
    pub threshold: f32,
    /// Answer to flagged queries.
    pub answer: Deflection,
    /// Seed of random deflections.
    seed: u64,
}

#[derive(Debug, Clone)]
enum FittedScore {
    Autoencoder(Box<Autoencoder>),
    Confidence,
}

impl QueryGuard {
    /// Each image's score (higher: more suspicious), given the stolen model's probabilities.
    fn scores(&self, pixels: &[f32], probs: &[Vec<f32>], model: &Model) -> Vec<f32> {
        match &self.score {
            FittedScore::Autoencoder(ae) => {
                ae.errors(pixels, model.spec.input, &model_device(model))
            }
            FittedScore::Confidence => probs
                .iter()
                .map(|p| 1.0 - p.iter().copied().fold(0.0, f32::max))
                .collect(),
        }
    }

    /// Whether the detector flags each image of `pixels` as a verification query.
    pub fn flags(&self, model: &Model, pixels: &[f32]) -> Vec<bool> {
        let probs = match self.score {
            FittedScore::Confidence => predict_proba(model, pixels, 256),
            FittedScore::Autoencoder(_) => Vec::new(),
        };
        self.scores(pixels, &probs, model)
            .into_iter()
            .map(|s| s > self.threshold)
            .collect()
    }
}

/// The `q`-quantile of `v` (nearest rank from above).
fn quantile(mut v: Vec<f32>, q: f64) -> f32 {
    v.sort_by(f32::total_cmp);
    if v.is_empty() {
        return f32::INFINITY;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

impl Guard {
    /// Fits the detector on the attacker's data: half trains the autoencoder, the other half
    /// sets the threshold at its `1 − fpr` quantile.
    pub fn fit(&self, model: &Model, ctx: &AttackContext<'_>) -> Result<QueryGuard> {
        let data = ctx.attacker_data("guard")?;
        model.check_data(data)?;
        if data.len() < 20 {
            return Err(Error::invalid(
                "attack guard",
                data.len(),
                "needs at least 20 of the attacker's images to fit and calibrate a detector",
            ));
        }
        let (fit, calibrate) = data.split_stratified(0.5, ctx.seed ^ 0x6A4D)?;
        let score =
            match self.score {
                GuardScoreKind::Autoencoder => FittedScore::Autoencoder(Box::new(
                    Autoencoder::fit(&fit, self.epochs, ctx.seed, ctx.device)?,
                )),
                GuardScoreKind::Confidence => FittedScore::Confidence,
            };
        let mut guard = QueryGuard {
            score,
            threshold: f32::INFINITY,
            answer: self.answer,
            seed: ctx.seed,
        };
        let probs = match self.score {
            GuardScoreKind::Confidence => predict_proba(model, calibrate.pixels(), 256),
            GuardScoreKind::Autoencoder => Vec::new(),
        };
        guard.threshold = quantile(
            guard.scores(calibrate.pixels(), &probs, model),
            1.0 - self.fpr,
        );
        Ok(guard)
    }
}

impl Attack for Guard {
    fn describe(&self) -> String {
        format!(
            "guard:score={},fpr={},answer={},epochs={}",
            match self.score {
                GuardScoreKind::Autoencoder => "autoencoder",
                GuardScoreKind::Confidence => "confidence",
            },
            self.fpr,
            match self.answer {
                Deflection::Second => "second",
                Deflection::Random => "random",
            },
            self.epochs
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, _ctx: &AttackContext<'_>) -> Result<Model> {
        Ok(model)
    }

    fn query_guard(&self, model: &Model, ctx: &AttackContext<'_>) -> Result<Option<QueryGuard>> {
        self.fit(model, ctx).map(Some)
    }
}

/// The stolen model served behind a [`QueryGuard`], answering as a service configured with
/// `reveal` would; every image's flag is recorded in query order.
pub struct GuardedOracle {
    model: Model,
    guard: QueryGuard,
    reveal: Reveal,
    flags: Vec<bool>,
    rng: ChaCha8Rng,
}

impl GuardedOracle {
    /// Serves `model` behind `guard`.
    pub fn new(model: Model, guard: QueryGuard, reveal: Reveal) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(guard.seed ^ 0x0DEF_1EC7);
        Self {
            model,
            guard,
            reveal,
            flags: Vec::new(),
            rng,
        }
    }

    /// Every image's flag so far, in query order.
    pub fn flags(&self) -> &[bool] {
        &self.flags
    }

    /// Forgets the recorded flags (the guard itself is unchanged).
    pub fn clear_flags(&mut self) {
        self.flags.clear();
    }
}

impl Oracle for GuardedOracle {
    fn input_shape(&self) -> ImageShape {
        self.model.spec.input
    }

    fn num_classes(&self) -> usize {
        self.model.spec.num_classes
    }

    fn describe(&self) -> String {
        format!(
            "local {} model behind a query detector",
            self.model.spec.architecture
        )
    }

    fn query(&mut self, pixels: &[f32]) -> Result<Vec<Answer>> {
        check_batch(pixels, self.model.spec.input)?;
        let probs = predict_proba(&self.model, pixels, 256);
        let flags: Vec<bool> = self
            .guard
            .scores(pixels, &probs, &self.model)
            .into_iter()
            .map(|s| s > self.guard.threshold)
            .collect();
        let classes = self.model.spec.num_classes;
        let mut out = Vec::with_capacity(probs.len());
        for (p, &flagged) in probs.into_iter().zip(&flags) {
            let mut scores = ranked(p);
            if flagged && classes > 1 {
                let pick = match self.guard.answer {
                    Deflection::Second => 1,
                    Deflection::Random => self.rng.random_range(1..classes),
                };
                // The deflected class takes the top score, so every reveal level agrees.
                let top = scores[0].1;
                scores[0].1 = scores[pick].1;
                scores[pick].1 = top;
                scores.swap(0, pick);
                scores[1..].sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            }
            out.push(answer_from_ranked(scores, self.reveal));
        }
        self.flags.extend(flags);
        Ok(out)
    }

    fn queries_made(&self) -> u64 {
        self.flags.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn the_threshold_flags_at_most_the_asked_share() {
        let v: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let t = quantile(v.clone(), 0.95);
        assert_eq!(t, 95.0);
        assert_eq!(v.iter().filter(|&&s| s > t).count(), 5);
        assert_eq!(quantile(Vec::new(), 0.5), f32::INFINITY);
    }
}
