//! Neural network laundering (Aiken, Kim, Kim, Woo 2021, "Neural network laundering: removing
//! black-box backdoor watermarks from deep neural networks"): neural cleanse's reversed trigger,
//! then a reset of the neurons the trigger excites, then retraining. Three steps:
//!
//! 1. Reverse-engineer a trigger per class and flag the outliers (as [`super::NeuralCleanse`]).
//! 2. Run the attacker's clean images and the same images with the flagged trigger stamped on
//!    through the model; a last-hidden-layer neuron whose mean activation rises under the
//!    trigger by more than `z` robust standard deviations (median absolute deviation × 1.4826)
//!    above the neurons' median rise is one the watermark uses: its weights into the output
//!    layer are zeroed.
//! 3. Retrain on the attacker's data with the trigger stamped on a share of it, true labels
//!    kept (neural cleanse's unlearning), and zero the reset neurons again afterwards so they
//!    stay out.
//!
//! Aiken et al. reset neurons in every layer, convolutional channels included; nnmark's models
//! expose their last hidden layer (the one fine-pruning acts on), so the reset is limited to
//! it. The reversed trigger and the unlearning are the same as neural cleanse's.

use super::fineprune::{cut, mean_activations};
use super::neural_cleanse::{reversal_args, reverse_and_flag, unlearning_set};
use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::error::Result;
use crate::model::Model;
use crate::train::{self, Silent};

/// Neural laundering.
#[derive(Debug, Clone, Copy)]
pub struct Laundering {
    /// Gradient steps of the trigger reverse engineering, per class.
    pub steps: usize,
    /// Weight of the mask's L1 norm in the reverse engineering.
    pub lambda: f64,
    /// Robust z-score above which a neuron's activation rise under the trigger resets it.
    pub z: f64,
    /// Share of the retraining images that carry the reversed trigger.
    pub fraction: f64,
    /// Retraining epochs.
    pub epochs: usize,
    /// Retraining learning rate.
    pub lr: f64,
}

pub(super) const LAUNDERING: AttackInfo = AttackInfo {
    name: "laundering",
    summary: "neural cleanse's trigger, reset the last-layer neurons it excites, retrain (laundering:z=2,steps=100,lambda=0.01,fraction=0.2,epochs=3,lr=0.01)",
    build: |a: &mut AttackArgs| {
        let (steps, lambda, fraction) = reversal_args(a)?;
        Ok(Box::new(Laundering {
            steps,
            lambda,
            z: a.f64(
                "z",
                false,
                Some(2.0),
                (|v| (0.0..=100.0).contains(&v), "must be in [0, 100]"),
            )?,
            fraction,
            epochs: a.usize("epochs", false, 3, 1)?,
            lr: a.lr(0.01)?,
        }))
    },
};

/// Which neurons to reset: rise under the trigger more than `z` robust standard deviations
/// above the median rise (and above zero).
pub fn excited_neurons(clean: &[f64], triggered: &[f64], z: f64) -> Vec<bool> {
    let rise: Vec<f64> = clean.iter().zip(triggered).map(|(c, t)| t - c).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let m = median(rise.clone());
    let sd = median(rise.iter().map(|r| (r - m).abs()).collect()) * 1.4826;
    rise.iter()
        .map(|&r| r > 0.0 && r > m + z * sd.max(f64::MIN_POSITIVE))
        .collect()
}

impl Attack for Laundering {
    fn describe(&self) -> String {
        format!(
            "laundering:z={},steps={},lambda={},fraction={},epochs={},lr={}",
            self.z, self.steps, self.lambda, self.fraction, self.epochs, self.lr
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data("laundering")?;
        let (triggers, flagged) =
            reverse_and_flag(&model, data, self.steps, self.lambda, ctx.seed)?;
        // Every probe image stamped with the first flagged class's trigger.
        let probe = data.take(data.len().min(1024));
        let mut stamped = probe.pixels().to_vec();
        triggers[flagged[0]].stamp(&mut stamped, probe.shape.channels);
        let reset = excited_neurons(
            &mean_activations(&model, probe.pixels()),
            &mean_activations(&model, &stamped),
            self.z,
        );
        tracing::info!(
            reset = reset.iter().filter(|r| **r).count(),
            of = reset.len(),
            "neural laundering: neurons reset"
        );
        let model = cut(model, &reset);
        let unlearn = unlearning_set(data, &triggers, &flagged, self.fraction, ctx.seed)?;
        let cfg =
            attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(model.spec.architecture);
        let (model, _) = train::train(model, &unlearn, &cfg, ctx.device, &mut Silent)?;
        Ok(cut(model, &reset))
    }
}

#[cfg(test)]
mod tests {
    use super::excited_neurons;

    #[test]
    fn only_neurons_the_trigger_excites_far_above_the_rest_are_reset() {
        let clean = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let triggered = [1.1, 0.9, 1.05, 4.0, 1.0, 0.95, 1.02, 0.2];
        let reset = excited_neurons(&clean, &triggered, 2.0);
        assert_eq!(
            reset,
            [false, false, false, true, false, false, false, false]
        );
        // A neuron the trigger silences is left alone, however far it moves.
        assert!(!reset[7]);
        assert!(excited_neurons(&clean, &clean, 2.0).iter().all(|r| !r));
    }
}
