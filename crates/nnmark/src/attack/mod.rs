//! Removal attacks: a stolen model (plus whatever the attacker holds) → a new model. Each attack
//! is one file implementing [`Attack`] and one line in [`REGISTRY`]; attacks are named on the
//! command line as `name[:value][,key=value...]` (`prune:0.5`, `ftal:epochs=2,lr=0.005`) and
//! compose with `+` (`prune:0.5+ftal:epochs=2`), applied left to right.
//!
//! The attacker's data is disjoint from the owner's: [`owner_attacker_split`] gives the fixed
//! split nnmark uses (a third of the training set to the attacker, as in the
//! Watermark-Robustness-Toolbox); the owner's test set measures accuracy.

mod adversarial;
mod args;
mod budget;
mod distill;
mod fineprune;
mod finetune;
mod guard;
mod laundering;
mod neural_cleanse;
mod overwrite;
mod prune;
mod quantize;
mod smooth_retrain;
mod transfer;
mod transform;
mod weight_shift;

pub use adversarial::AdversarialFineTune;
pub use args::AttackArgs;
pub use budget::Budget;
pub use distill::Distill;
pub use fineprune::{FinePrune, mean_activations};
pub use finetune::{FineTune, FineTuneVariant};
pub use guard::{Autoencoder, Deflection, Guard, GuardScoreKind, GuardedOracle, QueryGuard};
pub use laundering::{Laundering, excited_neurons};
pub use neural_cleanse::{NeuralCleanse, ReversedTrigger, anomaly_indices, reverse_engineer};
pub use overwrite::Overwrite;
pub use prune::{Prune, PruneScope, prune_magnitude};
pub use quantize::{Quantize, quantize_weights};
pub use smooth_retrain::SmoothRetrain;
pub use transfer::Transfer;
pub use transform::{InputTransform, TransformedOracle};
pub use weight_shift::{WeightShift, relative_distance};

use burn::prelude::Device;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::{LrSchedule, OptimizerConfig, TrainConfig};

/// What an attacker holds besides the stolen model.
pub struct AttackContext<'a> {
    /// The attacker's own data (disjoint from the owner's), for attacks that train.
    pub data: Option<&'a Dataset>,
    /// Compute device.
    pub device: &'a Device,
    /// Seed for everything random in the attack.
    pub seed: u64,
    /// Number of items in the watermark key, for attacks sized by it (adversarial
    /// fine-tuning); the attacker is assumed to know the scheme's usual key size.
    pub key_items: Option<usize>,
    /// The scheme under attack, for attacks that embed their own mark (overwriting).
    pub scheme: Option<&'a dyn crate::scheme::Scheme>,
}

impl AttackContext<'_> {
    /// The attacker's data, or an error saying which attack needs it.
    pub fn attacker_data(&self, attack: &str) -> Result<&Dataset> {
        self.data.ok_or_else(|| {
            Error::invalid(
                "attack",
                attack,
                "this attack trains on the attacker's data; none was given",
            )
        })
    }
}

/// A removal attack.
pub trait Attack: Send + Sync {
    /// A name with its parameters, as on the command line (`prune:0.5`).
    fn describe(&self) -> String;
    /// Produces the attacked model.
    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model>;
    /// What the thief puts in front of the model at query time (input transformations);
    /// None for attacks on the weights.
    fn query_transform(&self) -> Option<InputTransform> {
        None
    }
    /// True when the attack needs the attacker's data.
    fn needs_data(&self) -> bool {
        false
    }
    /// For a `budget` stage: the share of the attacker's data the stages after it get.
    fn data_budget(&self) -> Option<&Budget> {
        None
    }
    /// A detector the thief serves the attacked model behind (fitted on the attacker's data):
    /// queries it flags get another answer. None for attacks without one.
    fn query_guard(&self, _model: &Model, _ctx: &AttackContext<'_>) -> Result<Option<QueryGuard>> {
        Ok(None)
    }
}

/// One registry entry: how to build an attack from its arguments.
pub struct AttackInfo {
    /// Name on the command line.
    pub name: &'static str,
    /// One line for help texts.
    pub summary: &'static str,
    /// Builds the attack, checking every parameter before any work starts.
    pub build: fn(&mut AttackArgs) -> Result<Box<dyn Attack>>,
}

/// Every attack, by name.
pub static REGISTRY: &[AttackInfo] = &[
    finetune::FTLL,
    finetune::FTAL,
    finetune::RTLL,
    finetune::RTAL,
    prune::PRUNE,
    prune::PRUNE_GLOBAL,
    fineprune::FINE_PRUNE,
    quantize::QUANTIZE,
    overwrite::OVERWRITE,
    adversarial::ADVERSARIAL,
    distill::DISTILL,
    weight_shift::WEIGHT_SHIFT,
    neural_cleanse::NEURAL_CLEANSE,
    laundering::LAUNDERING,
    transfer::TRANSFER,
    smooth_retrain::SMOOTH_RETRAIN,
    budget::BUDGET,
    transform::BLUR,
    transform::NOISE,
    transform::PIXEL_QUANTIZE,
    transform::JPEG,
    guard::GUARD,
];

/// Names of every attack.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|a| a.name).collect()
}

/// Several attacks applied left to right.
pub(crate) struct Composed(pub Vec<Box<dyn Attack>>);

impl Composed {
    /// Calls `f` on every stage but the budget stages, with the context that stage gets: the
    /// share of the data a budget stage before it left, and a seed of its own (so `a+b` and
    /// `b` alone differ only by `a`).
    fn each_stage(
        &self,
        ctx: &AttackContext<'_>,
        mut f: impl FnMut(&dyn Attack, &AttackContext<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut budgeted: Option<crate::data::Dataset> = None;
        for (i, a) in self.0.iter().enumerate() {
            if let Some(b) = a.data_budget() {
                budgeted = Some(b.apply(ctx.attacker_data("budget")?, ctx.seed)?);
                continue;
            }
            let stage = AttackContext {
                data: budgeted.as_ref().or(ctx.data),
                device: ctx.device,
                seed: ctx.seed.wrapping_add(i as u64 * 0x9E37_79B9),
                key_items: ctx.key_items,
                scheme: ctx.scheme,
            };
            f(a.as_ref(), &stage)?;
        }
        Ok(())
    }
}

impl Attack for Composed {
    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|a| a.describe())
            .collect::<Vec<_>>()
            .join("+")
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let mut current = Some(model);
        self.each_stage(ctx, |a, stage| {
            let model = current.take().ok_or_else(|| {
                Error::invalid("attack", a.describe(), "an earlier stage lost the model")
            })?;
            current = Some(a.remove(model, stage)?);
            Ok(())
        })?;
        current.ok_or_else(|| Error::invalid("attack", self.describe(), "no model came out"))
    }

    /// The transforms of the stages, chained.
    fn query_transform(&self) -> Option<InputTransform> {
        let chain: Vec<InputTransform> =
            self.0.iter().filter_map(|a| a.query_transform()).collect();
        match chain.len() {
            0 => None,
            1 => chain.into_iter().next(),
            _ => Some(InputTransform::Chain(chain)),
        }
    }

    fn needs_data(&self) -> bool {
        self.0.iter().any(|a| a.needs_data())
    }

    /// The last stage's guard, fitted on the data that stage would get.
    fn query_guard(&self, model: &Model, ctx: &AttackContext<'_>) -> Result<Option<QueryGuard>> {
        let mut guard = None;
        self.each_stage(ctx, |a, stage| {
            if let Some(g) = a.query_guard(model, stage)? {
                guard = Some(g);
            }
            Ok(())
        })?;
        Ok(guard)
    }
}

/// Parses an attack spec (`prune:0.5+ftal:epochs=2`), checking every name and parameter.
pub fn parse(spec: &str) -> Result<Box<dyn Attack>> {
    let mut stages = Vec::new();
    for part in spec.split('+') {
        let part = part.trim();
        if part.is_empty() {
            return Err(Error::invalid(
                "attack",
                spec,
                "empty stage; write stages as name[:value][,key=value...] joined by '+'",
            ));
        }
        let (name, rest) = part.split_once(':').unwrap_or((part, ""));
        let info = REGISTRY.iter().find(|a| a.name == name).ok_or_else(|| {
            Error::invalid(
                "attack",
                name,
                format!("known attacks: {}", names().join(", ")),
            )
        })?;
        let mut args = AttackArgs::parse(name, rest)?;
        let attack = (info.build)(&mut args)?;
        args.finish()?;
        stages.push(attack);
    }
    Ok(if stages.len() == 1 {
        stages.pop().expect("one stage")
    } else {
        Box::new(Composed(stages))
    })
}

/// The attacker's fraction of the training set.
pub const ATTACKER_FRACTION: f64 = 1.0 / 3.0;

/// The fixed owner / attacker split: a stratified third of the training set goes to the
/// attacker, two thirds to the owner (the Watermark-Robustness-Toolbox's default). The seed is
/// fixed so every experiment on the same data uses the same split.
pub fn owner_attacker_split(train: &Dataset) -> Result<(Dataset, Dataset)> {
    let (mut owner, mut attacker) = train.split_stratified(ATTACKER_FRACTION, 0xA77A_C4E5)?;
    owner.name = format!("{} (owner 2/3)", train.name);
    attacker.name = format!("{} (attacker 1/3)", train.name);
    Ok((owner, attacker))
}

/// The attacker's fine-tuning recipe: SGD with momentum 0.9 at a constant rate (also the
/// evaluation matrix's fine-tuning embedding recipe, so both move the weights alike).
pub fn attacker_recipe(epochs: usize, lr: f64, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        optimizer: OptimizerConfig::sgd_momentum(lr),
        schedule: LrSchedule::Constant,
        seed,
        ..TrainConfig::default()
    }
}
