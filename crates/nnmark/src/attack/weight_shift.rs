//! Weight shifting (Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network
//! Watermarking?", S&P 2022): fine-tuning on the attacker's data while a term rewards moving the
//! weights away from the stolen ones, so that the model settles in another region of weight
//! space, where features that only the key relies on may not survive, while the task loss keeps
//! the accuracy. Here the reward is `lambda` times the relative distance
//! `‖θ − θ₀‖ / ‖θ₀‖` over every trainable weight, capped at `shift`: past the cap the term is
//! flat and the run is plain fine-tuning (an uncapped reward would grow without bound).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::{self, Silent, TrainExtras};

/// The weight-shifting attack.
#[derive(Debug, Clone, Copy)]
pub struct WeightShift {
    /// Passes over the attacker's data.
    pub epochs: usize,
    /// Learning rate (SGD, momentum 0.9).
    pub lr: f64,
    /// Weight of the distance reward against the task loss.
    pub lambda: f64,
    /// Relative distance beyond which moving further earns nothing.
    pub shift: f64,
}

pub(super) const WEIGHT_SHIFT: AttackInfo = AttackInfo {
    name: "weight-shift",
    summary: "fine-tune while rewarding distance from the stolen weights (weight-shift:epochs=5,lr=0.01,lambda=1,shift=0.5)",
    build: |a: &mut AttackArgs| {
        Ok(Box::new(WeightShift {
            epochs: a.usize("epochs", true, 5, 1)?,
            lr: a.lr(0.01)?,
            lambda: a.f64(
                "lambda",
                false,
                Some(1.0),
                (|v| v > 0.0 && v <= 100.0, "must be in (0, 100]"),
            )?,
            shift: a.f64(
                "shift",
                false,
                Some(0.5),
                (|v| v > 0.0 && v <= 10.0, "must be in (0, 10]"),
            )?,
        }))
    },
};

/// Every float parameter of a module, flattened, in visiting order.
struct Flatten(Vec<Tensor<1>>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().reshape([-1]));
    }
}

fn flat_params(model: &Model) -> Vec<Tensor<1>> {
    let mut v = Flatten(Vec::new());
    model.net.visit(&mut v);
    v.0
}

/// `‖θ − θ₀‖ / ‖θ₀‖` between two models of one architecture, over every float parameter.
pub fn relative_distance(model: &Model, original: &Model) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    let values = |t: Tensor<1>| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default()
    };
    for (a, b) in flat_params(model).into_iter().zip(flat_params(original)) {
        let (a, b) = (values(a), values(b));
        diff += a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>();
        norm += b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>();
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

impl Attack for WeightShift {
    fn describe(&self) -> String {
        format!(
            "weight-shift:epochs={},lr={},lambda={},shift={}",
            self.epochs, self.lr, self.lambda, self.shift
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data("weight-shift")?;
        // The stolen weights, as plain numbers: the reward compares against constants.
        let original: Vec<(Vec<f32>, usize)> = flat_params(&model)
            .into_iter()
            .map(|t| {
                let n = t.dims()[0];
                t.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map(|v| (v, n))
                    .map_err(|e| {
                        Error::Unsupported(format!("weight-shift reads f32 weights: {e:?}"))
                    })
            })
            .collect::<Result<_>>()?;
        let norm_sq: f64 = original
            .iter()
            .flat_map(|(v, _)| v.iter().map(|x| (*x as f64).powi(2)))
            .sum();
        let (lambda, shift) = (self.lambda as f32, self.shift as f32);
        let scale = 1.0 / norm_sq.max(f64::MIN_POSITIVE).sqrt() as f32;
        // A tiny floor under the square root keeps the gradient finite where θ = θ₀.
        let floor = (norm_sq * 1e-12) as f32;
        let reward = |m: &Model| {
            let params = flat_params(m);
            let device = params[0].device();
            let mut sum = Tensor::<1>::zeros([1], &device);
            for (p, (orig, n)) in params.into_iter().zip(&original) {
                let o = Tensor::<1>::from_data(TensorData::new(orig.clone(), [*n]), &device);
                sum = sum + (p - o).powi_scalar(2).sum();
            }
            let rel = (sum + floor).sqrt() * scale;
            rel.clamp_max(shift) * (-lambda)
        };
        let cfg =
            attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(model.spec.architecture);
        let extras = TrainExtras {
            regularizer: Some(&reward),
            ..Default::default()
        };
        Ok(train::train_with(model, data, &cfg, ctx.device, &mut Silent, extras)?.0)
    }
}
