//! Fine-tuning attacks in Adi et al.'s four variants (USENIX Security 2018, §5): FTLL trains
//! only the last layer, FTAL all layers, RTLL re-initialises the last layer and trains it
//! alone, RTAL re-initialises it and trains everything. All four train on the attacker's data
//! with its true labels (SGD, momentum 0.9, a constant rate by default). The stronger
//! fine-tuning of the removal literature (Lukas et al., S&P'22: large rates, cyclic schedules)
//! is the same attack with `lr=` and `schedule=cosine|cyclic:PERIOD|step:SIZE:GAMMA`; the
//! regularised fine-tuning with label smoothing (Szegedy et al.'s targets, `(1 - ε)` on the
//! true class and `ε / classes` on every class) is `smoothing=ε`.

use burn::module::Module;
use burn::nn::LinearConfig;

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::LrSchedule;
use crate::train::{self, Silent, TrainConfig};

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
#[derive(Debug, Clone)]
pub struct FineTune {
    /// The variant.
    pub variant: FineTuneVariant,
    /// Passes over the attacker's data.
    pub epochs: usize,
    /// Learning rate (the base rate of the schedule).
    pub lr: f64,
    /// How the rate changes over the epochs.
    pub schedule: LrSchedule,
    /// Label smoothing ε in [0, 1): the targets put `1 - ε` on the true class and spread `ε`
    /// evenly over all classes (0: plain labels).
    pub smoothing: f64,
}

fn build(variant: FineTuneVariant, a: &mut AttackArgs) -> Result<Box<dyn Attack>> {
    let epochs = a.usize("epochs", true, 5, 1)?;
    let lr = a.lr(0.01)?;
    let schedule = match a.text("schedule") {
        None => LrSchedule::Constant,
        Some(s) => s.parse().map_err(|_| {
            Error::invalid(
                format!("attack {} schedule", variant.name()),
                &s,
                "expected constant, cosine, cyclic:PERIOD (epochs per cycle) or step:SIZE:GAMMA",
            )
        })?,
    };
    let smoothing = a.f64(
        "smoothing",
        false,
        Some(0.0),
        (|v| (0.0..1.0).contains(&v), "must be in [0, 1)"),
    )?;
    Ok(Box::new(FineTune {
        variant,
        epochs,
        lr,
        schedule,
        smoothing,
    }))
}

pub(super) const FTLL: AttackInfo = AttackInfo {
    name: "ftll",
    summary: "fine-tune the last layer (epochs=5, lr=0.01, schedule=constant|cosine|cyclic:N, smoothing=0)",
    build: |a| build(FineTuneVariant::Ftll, a),
};
pub(super) const FTAL: AttackInfo = AttackInfo {
    name: "ftal",
    summary: "fine-tune all layers (epochs=5, lr=0.01, schedule=constant|cosine|cyclic:N, smoothing=0)",
    build: |a| build(FineTuneVariant::Ftal, a),
};
pub(super) const RTLL: AttackInfo = AttackInfo {
    name: "rtll",
    summary: "re-initialise the last layer and train it (epochs=5, lr=0.01, schedule=constant|cosine|cyclic:N, smoothing=0)",
    build: |a| build(FineTuneVariant::Rtll, a),
};
pub(super) const RTAL: AttackInfo = AttackInfo {
    name: "rtal",
    summary: "re-initialise the last layer and train all layers (epochs=5, lr=0.01, schedule=constant|cosine|cyclic:N, smoothing=0)",
    build: |a| build(FineTuneVariant::Rtal, a),
};

impl Attack for FineTune {
    fn describe(&self) -> String {
        let schedule = match self.schedule {
            LrSchedule::Constant => String::new(),
            LrSchedule::Cosine => ",schedule=cosine".into(),
            LrSchedule::Cyclic { period } => format!(",schedule=cyclic:{period}"),
            LrSchedule::Step { step_size, gamma } => {
                format!(",schedule=step:{step_size}:{gamma}")
            }
        };
        let smoothing = if self.smoothing > 0.0 {
            format!(",smoothing={}", self.smoothing)
        } else {
            String::new()
        };
        format!(
            "{}:epochs={},lr={}{schedule}{smoothing}",
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
        // A new head draws its weights lazily (at its first use, which may be as late as the
        // training run), so the lock is held from its seeding to the end: the draws are the
        // same with other threads training at the same time.
        let _rng = self.variant.reinit().then(crate::train::rng_guard);
        if self.variant.reinit() {
            let head = model.net.head_mut();
            let [d_in, d_out] = head.weight.dims();
            ctx.device.seed(ctx.seed ^ 0x4EAD);
            *head = LinearConfig::new(d_in, d_out).init(ctx.device);
        }
        if self.variant.last_layer_only() {
            // Gradients off everywhere, back on for the head: the optimiser only sees the head.
            model.net = model.net.no_grad();
            let head = model.net.head_mut();
            *head = head.clone().set_require_grad(true);
        }
        let cfg = TrainConfig {
            schedule: self.schedule.clone(),
            ..attacker_recipe(self.epochs, self.lr, ctx.seed)
        }
        .fitted_to(model.spec.architecture);
        let classes = model.spec.num_classes;
        let eps = self.smoothing as f32;
        let smoothed: Vec<f32> = if eps > 0.0 {
            data.labels()
                .iter()
                .flat_map(|&l| {
                    (0..classes).map(move |c| {
                        eps / classes as f32 + if c == l as usize { 1.0 - eps } else { 0.0 }
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let extras = train::TrainExtras {
            soft_targets: (eps > 0.0).then_some(smoothed.as_slice()),
            ..Default::default()
        };
        let (mut out, _) = train::train_with(model, data, &cfg, ctx.device, &mut Silent, extras)?;
        // The flag persists in the module; a later stage must be free to train every layer.
        out.net = out.net.set_require_grad(true);
        Ok(out)
    }
}
