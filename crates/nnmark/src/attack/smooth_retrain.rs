//! Smooth retraining (the Watermark-Robustness-Toolbox's retraining on a smoothed teacher,
//! after randomized smoothing, Cohen, Rosenfeld, Kolter 2019): the thief asks the stolen model
//! about many Gaussian-noised copies of each of its images and keeps the vote (with
//! `answers=probabilities`, the mean probability vector) as that image's soft label, the
//! answer of the smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²). A fresh
//! model then learns these soft labels on the images and on one more noised copy of each. A
//! trigger-set mark needs the exact trigger pixels; the smoothed teacher never shows the
//! student the triggers' labels, and the noise blurs the narrow regions around them.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::distill::student_args;
use super::{Attack, AttackArgs, AttackContext, AttackInfo};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::{Architecture, Model, ModelSpec};
use crate::oracle::{LocalOracle, Oracle, Reveal};
use crate::train::{self, Silent, TrainConfig, TrainExtras};

/// Retraining on a smoothed teacher's answers.
#[derive(Debug, Clone)]
pub struct SmoothRetrain {
    /// Standard deviation of the Gaussian noise, in pixel units.
    pub sigma: f64,
    /// Noised queries per image.
    pub samples: usize,
    /// The student's architecture (None: the stolen model's).
    pub arch: Option<Architecture>,
    /// Training epochs of the student.
    pub epochs: usize,
    /// Average the probability vectors instead of counting labels.
    pub probabilities: bool,
}

pub(super) const SMOOTH_RETRAIN: AttackInfo = AttackInfo {
    name: "smooth-retrain",
    summary: "train a fresh model on the votes of the stolen model over Gaussian-noised queries (smooth-retrain:sigma=0.25,samples=8,epochs=10,arch=lenet,answers=labels|probabilities)",
    build: |a: &mut AttackArgs| {
        let (arch, probabilities) = student_args(a)?;
        Ok(Box::new(SmoothRetrain {
            sigma: a.f64(
                "sigma",
                false,
                Some(0.25),
                (|v| v > 0.0 && v <= 1.0, "must be in (0, 1]"),
            )?,
            samples: a.usize("samples", false, 8, 1)?,
            arch,
            epochs: a.usize("epochs", false, 10, 1)?,
            probabilities,
        }))
    },
};

/// `pixels` with N(0, σ²) noise added, clipped to [0, 1].
fn noised(pixels: &[f32], normal: &Normal<f32>, rng: &mut ChaCha8Rng) -> Vec<f32> {
    pixels
        .iter()
        .map(|p| (p + normal.sample(rng)).clamp(0.0, 1.0))
        .collect()
}

impl Attack for SmoothRetrain {
    fn describe(&self) -> String {
        format!(
            "smooth-retrain:sigma={},samples={},arch={},epochs={},answers={}",
            self.sigma,
            self.samples,
            self.arch.map_or("same".to_string(), |a| a.to_string()),
            self.epochs,
            if self.probabilities {
                "probabilities"
            } else {
                "labels"
            }
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data("smooth-retrain")?;
        model.check_data(data)?;
        let classes = model.spec.num_classes;
        let spec = ModelSpec {
            architecture: self.arch.unwrap_or(model.spec.architecture),
            ..model.spec.clone()
        };
        let normal = Normal::new(0.0, self.sigma as f32).map_err(|e| {
            crate::error::Error::invalid("attack smooth-retrain sigma", self.sigma, e.to_string())
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0x5A00_7E11);
        let reveal = if self.probabilities {
            Reveal::Probabilities
        } else {
            Reveal::Label
        };
        let mut oracle = LocalOracle::new(model, reveal);
        let n = data.shape.numel();
        // The smoothed teacher's answer for each image: votes (or mean probabilities) over
        // `samples` noised copies, normalised to a probability row.
        let mut soft = vec![0f32; data.len() * classes];
        let per_chunk = 64;
        for (c, chunk) in data.pixels().chunks(per_chunk * n).enumerate() {
            for _ in 0..self.samples {
                for answer in oracle
                    .query(&noised(chunk, &normal, &mut rng))?
                    .iter()
                    .enumerate()
                {
                    let row = &mut soft[(c * per_chunk + answer.0) * classes..][..classes];
                    if self.probabilities {
                        for &(k, p) in &answer.1.scores {
                            row[k] += p / self.samples as f32;
                        }
                    } else {
                        row[answer.1.label] += 1.0 / self.samples as f32;
                    }
                }
            }
        }
        let labels: Vec<u8> = soft
            .chunks(classes)
            .map(|row| {
                (0..classes)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                    .unwrap_or(0) as u8
            })
            .collect();
        // The student sees each image and one more noised copy, both with its smoothed label.
        let copy = noised(data.pixels(), &normal, &mut rng);
        let train_set = Dataset::new(
            format!("{} (smoothed teacher's answers)", data.name),
            data.shape,
            classes,
            data.pixels().iter().copied().chain(copy).collect(),
            labels.iter().chain(&labels).copied().collect(),
        )?;
        let soft: Vec<f32> = soft.iter().chain(&soft).copied().collect();
        let student = Model::seeded(spec, ctx.seed, ctx.device)?;
        let cfg = TrainConfig {
            epochs: self.epochs,
            seed: ctx.seed,
            ..TrainConfig::default()
        }
        .fitted_to(student.spec.architecture);
        let extras = TrainExtras {
            soft_targets: Some(soft.as_slice()),
            ..Default::default()
        };
        Ok(train::train_with(student, &train_set, &cfg, ctx.device, &mut Silent, extras)?.0)
    }
}
