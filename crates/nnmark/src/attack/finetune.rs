//! Fine-tuning attacks in Adi et al.'s four variants (USENIX Security 2018, §5): FTLL trains
//! only the last layer, FTAL all layers, RTLL re-initialises the last layer and trains it
//! alone, RTAL re-initialises it and trains everything. All four train on the attacker's data
//! with its true labels (SGD, momentum 0.9, constant rate).

use burn::module::Module;
use burn::nn::LinearConfig;

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::error::Result;
use crate::model::Model;
use crate::train::{self, Silent};

/// Which layers move, and whether the last one starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FineTuneVariant {
    /// Fine-tune the last layer.
    Ftll,
    /// Fine-tune all layers.
    Ftal,
    /// Re-initialise the last layer and train it.
    Rtll,
    /// Re-initialise the last layer and train all layers.
    Rtal,
}

impl FineTuneVariant {
    fn name(self) -> &'static str {
        match self {
            FineTuneVariant::Ftll => "ftll",
            FineTuneVariant::Ftal => "ftal",
            FineTuneVariant::Rtll => "rtll",
            FineTuneVariant::Rtal => "rtal",
        }
    }
    fn reinit(self) -> bool {
        matches!(self, FineTuneVariant::Rtll | FineTuneVariant::Rtal)
    }
    fn last_layer_only(self) -> bool {
        matches!(self, FineTuneVariant::Ftll | FineTuneVariant::Rtll)
    }
}

/// A fine-tuning attack.
#[derive(Debug, Clone, Copy)]
pub struct FineTune {
    /// The variant.
    pub variant: FineTuneVariant,
    /// Passes over the attacker's data.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
}

fn build(variant: FineTuneVariant, a: &mut AttackArgs) -> Result<Box<dyn Attack>> {
    Ok(Box::new(FineTune {
        variant,
        epochs: a.usize("epochs", true, 5, 1)?,
        lr: a.lr(0.01)?,
    }))
}

pub(super) const FTLL: AttackInfo = AttackInfo {
    name: "ftll",
    summary: "fine-tune the last layer (epochs=5, lr=0.01)",
    build: |a| build(FineTuneVariant::Ftll, a),
};
pub(super) const FTAL: AttackInfo = AttackInfo {
    name: "ftal",
    summary: "fine-tune all layers (epochs=5, lr=0.01)",
    build: |a| build(FineTuneVariant::Ftal, a),
};
pub(super) const RTLL: AttackInfo = AttackInfo {
    name: "rtll",
    summary: "re-initialise the last layer and train it (epochs=5, lr=0.01)",
    build: |a| build(FineTuneVariant::Rtll, a),
};
pub(super) const RTAL: AttackInfo = AttackInfo {
    name: "rtal",
    summary: "re-initialise the last layer and train all layers (epochs=5, lr=0.01)",
    build: |a| build(FineTuneVariant::Rtal, a),
};

impl Attack for FineTune {
    fn describe(&self) -> String {
        format!(
            "{}:epochs={},lr={}",
            self.variant.name(),
            self.epochs,
            self.lr
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, mut model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data(self.variant.name())?;
        if self.variant.reinit() {
            let head = model.net.head_mut();
            let [d_in, d_out] = head.weight.dims();
            let _rng = crate::train::rng_guard();
            ctx.device.seed(ctx.seed ^ 0x4EAD);
            *head = LinearConfig::new(d_in, d_out).init(ctx.device);
        }
        if self.variant.last_layer_only() {
            // Gradients off everywhere, back on for the head: the optimiser only sees the head.
            model.net = model.net.no_grad();
            let head = model.net.head_mut();
            *head = head.clone().set_require_grad(true);
        }
        let cfg =
            attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(model.spec.architecture);
        let (mut out, _) = train::train(model, data, &cfg, ctx.device, &mut Silent)?;
        // The flag persists in the module; a later stage must be free to train every layer.
        out.net = out.net.set_require_grad(true);
        Ok(out)
    }
}
