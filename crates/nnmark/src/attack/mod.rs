//! Removal attacks: a stolen model (plus whatever the attacker holds) → a new model. Each attack
//! is one file implementing [`Attack`]. Model-dependent schemes use them to show robustness
//! (Uchida's pruning claim, AIME's error-correcting code), and the evaluation matrix runs them
//! against every scheme.

mod prune;

pub use prune::{Prune, PruneScope, prune_magnitude};

use burn::prelude::Device;

use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;

/// What an attacker holds besides the stolen model.
pub struct AttackContext<'a> {
    /// The attacker's own data (disjoint from the owner's), for attacks that train.
    pub data: Option<&'a Dataset>,
    /// Compute device.
    pub device: &'a Device,
    /// Seed for everything random in the attack.
    pub seed: u64,
}

/// A removal attack.
pub trait Attack {
    /// A name with its parameters, as on the command line (`prune:0.5`).
    fn describe(&self) -> String;
    /// Produces the attacked model.
    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model>;
}
