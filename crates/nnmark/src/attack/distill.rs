//! Distillation / model extraction through the API: the thief queries the stolen model (an
//! [`Oracle`]) with its own inputs and trains a fresh model, of the same or another
//! architecture, on the answers: the labels only (what most services return) or the full
//! probability vectors (Hinton et al.'s soft targets, temperature 1 as served). Trigger-set
//! watermarks often do not survive it, because the student never sees the triggers.
//!
//! With `data=NAME` the thief queries with another data set's training images instead of its
//! own (a knockoff-style extraction with a surrogate set, e.g. Fashion-MNIST images to copy an
//! MNIST model): the set is read from the data folders (`nnmark data fetch` puts Fashion-MNIST
//! there; nothing is downloaded here) and must have the stolen model's image shape.

use super::{Attack, AttackArgs, AttackContext, AttackInfo};
use crate::data::DataSource;
use crate::error::{Error, Result};
use crate::model::{Architecture, Model, ModelSpec};
use crate::oracle::{LocalOracle, Oracle, Reveal};
use crate::train::{self, Silent, TrainConfig, TrainExtras};

/// Distillation through the oracle.
#[derive(Debug, Clone)]
pub struct Distill {
    /// The student's architecture (None: the stolen model's).
    pub arch: Option<Architecture>,
    /// Training epochs of the student.
    pub epochs: usize,
    /// Train on the probability vectors instead of the labels.
    pub probabilities: bool,
    /// A named data set whose training images are the queries (None: the attacker's data).
    pub surrogate: Option<String>,
}

pub(super) const DISTILL: AttackInfo = AttackInfo {
    name: "distill",
    summary: "train a fresh model on the stolen model's answers to the attacker's inputs, or to a surrogate data set's (distill:arch=lenet,epochs=10,answers=labels|probabilities,data=fashion)",
    build: |a: &mut AttackArgs| {
        let (arch, probabilities) = student_args(a)?;
        Ok(Box::new(Distill {
            arch,
            epochs: a.usize("epochs", true, 10, 1)?,
            probabilities,
            surrogate: a.text("data"),
        }))
    },
};

/// A student's `arch` (None: the stolen model's) and whether it learns from the
/// `answers=probabilities` instead of the labels; shared with smooth retraining.
pub(super) fn student_args(a: &mut AttackArgs) -> Result<(Option<Architecture>, bool)> {
    let arch = match a.text("arch") {
        None => None,
        Some(s) => Some(s.parse::<Architecture>()?),
    };
    let probabilities =
        a.choice("answers", false, "labels", &["labels", "probabilities"])? == "probabilities";
    Ok((arch, probabilities))
}

impl Attack for Distill {
    fn describe(&self) -> String {
        format!(
            "distill:arch={},epochs={},answers={}{}",
            self.arch.map_or("same".to_string(), |a| a.to_string()),
            self.epochs,
            if self.probabilities {
                "probabilities"
            } else {
                "labels"
            },
            self.surrogate
                .as_ref()
                .map_or(String::new(), |d| format!(",data={d}"))
        )
    }

    fn needs_data(&self) -> bool {
        self.surrogate.is_none()
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let surrogate = match &self.surrogate {
            None => None,
            Some(name) => {
                let mut set = crate::data::load(&DataSource::Named(name.clone()), None)?.train;
                if set.shape != model.spec.input {
                    return Err(Error::invalid(
                        "attack distill data",
                        name,
                        format!(
                            "holds {} images; the stolen model takes {}",
                            set.shape, model.spec.input
                        ),
                    ));
                }
                // Its labels are the data set's own classes, which the answers replace; only
                // the class count must fit the relabelled set.
                set.num_classes = model.spec.num_classes;
                Some(set)
            }
        };
        let data = match &surrogate {
            Some(set) => set,
            None => ctx.attacker_data("distill")?,
        };
        model.check_data(data)?;
        let spec = ModelSpec {
            architecture: self.arch.unwrap_or(model.spec.architecture),
            ..model.spec.clone()
        };
        let classes = spec.num_classes;
        let reveal = if self.probabilities {
            Reveal::Probabilities
        } else {
            Reveal::Label
        };
        let mut oracle = LocalOracle::new(model, reveal);
        let n = data.shape.numel();
        let (mut labels, mut soft) = (Vec::with_capacity(data.len()), Vec::new());
        for chunk in data.pixels().chunks(256 * n) {
            for answer in oracle.query(chunk)? {
                labels.push(answer.label as u8);
                if self.probabilities {
                    let mut row = vec![0f32; classes];
                    for (c, p) in answer.scores {
                        row[c] = p;
                    }
                    soft.extend(row);
                }
            }
        }
        let answers = data.relabeled(format!("{} (stolen model's answers)", data.name), labels)?;
        let student = Model::seeded(spec, ctx.seed, ctx.device)?;
        let cfg = TrainConfig {
            epochs: self.epochs,
            seed: ctx.seed,
            ..TrainConfig::default()
        }
        .fitted_to(student.spec.architecture);
        let extras = TrainExtras {
            soft_targets: self.probabilities.then_some(soft.as_slice()),
            ..Default::default()
        };
        Ok(train::train_with(student, &answers, &cfg, ctx.device, &mut Silent, extras)?.0)
    }
}
