//! The attacker's data budget as an attack stage: `budget:0.1+ftal` runs the fine-tuning with a
//! stratified tenth of the attacker's data (the Watermark-Robustness-Toolbox's budgets of 1%,
//! 10% and 33% of the training set are `budget:0.03`, `budget:0.3` and the whole third). The
//! stage changes nothing itself; the stages after it see the smaller set.

use super::{Attack, AttackArgs, AttackContext, AttackInfo};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;

/// The share of the attacker's data the following stages get.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Share of the attacker's data, in (0, 1].
    pub fraction: f64,
}

pub(super) const BUDGET: AttackInfo = AttackInfo {
    name: "budget",
    summary: "give the following stages a stratified share of the attacker's data (budget:0.1+ftal)",
    build: |a: &mut AttackArgs| {
        Ok(Box::new(Budget {
            fraction: a.f64(
                "fraction",
                true,
                None,
                (|v| v > 0.0 && v <= 1.0, "must be in (0, 1]"),
            )?,
        }))
    },
};

impl Budget {
    /// The share of `data` the following stages see (the same images for the same seed).
    pub fn apply(&self, data: &Dataset, seed: u64) -> Result<Dataset> {
        if self.fraction >= 1.0 {
            return Ok(data.clone());
        }
        let (_, mut part) = data.split_stratified(self.fraction, seed ^ 0xB0D6_E7D5)?;
        part.name = format!("{} ({} of it)", data.name, self.fraction);
        Ok(part)
    }
}

impl Attack for Budget {
    fn describe(&self) -> String {
        format!("budget:{}", self.fraction)
    }

    fn remove(&self, model: Model, _ctx: &AttackContext<'_>) -> Result<Model> {
        Ok(model)
    }

    fn data_budget(&self) -> Option<&Budget> {
        Some(self)
    }
}
