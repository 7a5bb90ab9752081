//! Adversarial fine-tuning, frontier stitching's own removal attempt (Le Merrer et al., §4.3,
//! Table 3): the attacker makes FGSM adversaries of its own data with the stolen model, keeps
//! their correct labels, and fine-tunes on its data plus those adversaries, moving the decision
//! frontier around which the key sits. The number of adversaries is a multiple of the key size
//! (the paper's axis); the key size is the context's, or 100 (the paper's ℓ) when unknown.

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;
use crate::train::{self, Silent};

/// Adversarial fine-tuning.
#[derive(Debug, Clone, Copy)]
pub struct AdversarialFineTune {
    /// Adversaries as a multiple of the key size.
    pub ratio: f64,
    /// FGSM step.
    pub epsilon: f64,
    /// Passes over the attacker's data plus adversaries.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
}

pub(super) const ADVERSARIAL: AttackInfo = AttackInfo {
    name: "adversarial",
    summary: "fine-tune on the attacker's data plus correctly labelled FGSM adversaries (adversarial:ratio=1,epsilon=0.25,epochs=2,lr=0.01)",
    build: |a: &mut AttackArgs| {
        Ok(Box::new(AdversarialFineTune {
            ratio: a.f64(
                "ratio",
                true,
                Some(1.0),
                (|v| v > 0.0 && v <= 1000.0, "must be in (0, 1000]"),
            )?,
            epsilon: a.f64(
                "epsilon",
                false,
                Some(0.25),
                (|v| v > 0.0 && v <= 1.0, "must be in (0, 1]"),
            )?,
            epochs: a.usize("epochs", false, 2, 1)?,
            lr: a.lr(0.01)?,
        }))
    },
};

/// Key size assumed when the context does not give one (frontier stitching's ℓ).
const DEFAULT_KEY_ITEMS: usize = 100;

impl Attack for AdversarialFineTune {
    fn describe(&self) -> String {
        format!(
            "adversarial:ratio={},epsilon={},epochs={},lr={}",
            self.ratio, self.epsilon, self.epochs, self.lr
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data("adversarial")?;
        let key = ctx.key_items.unwrap_or(DEFAULT_KEY_ITEMS);
        let count = ((self.ratio * key as f64).round() as usize).clamp(1, data.len());
        let picks: Vec<usize> = data.permutation(ctx.seed ^ 0xAD5E)[..count].to_vec();
        let sources = data.subset(&picks);
        let adv = train::fgsm(
            &model,
            sources.pixels(),
            sources.labels(),
            self.epsilon as f32,
        )?;
        let adversaries = Dataset::new(
            "FGSM adversaries",
            data.shape,
            data.num_classes,
            adv,
            sources.labels().to_vec(),
        )?;
        let mixed = data.concat(&adversaries)?;
        let cfg =
            attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(model.spec.architecture);
        Ok(train::train(model, &mixed, &cfg, ctx.device, &mut Silent)?.0)
    }
}
