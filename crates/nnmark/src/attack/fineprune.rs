//! Fine-pruning (Liu, Dolan-Gavitt, Garg 2018, "Fine-Pruning: defending against backdooring
//! attacks"): backdoors, and trigger-set watermarks with them, live in neurons that ordinary
//! inputs leave dormant. Run the attacker's clean data through the model, remove the `rate`
//! fraction of last-hidden-layer neurons with the smallest mean activation, then fine-tune
//! every layer on the attacker's data. The pruned neurons are removed by zeroing their
//! weights into the output layer, before and again after fine-tuning, so they stay removed.
//! The layer is the output layer's input (for the ResNet the last block's pooled channels,
//! Liu et al.'s last convolution; for the others the last fully connected hidden layer).

use burn::module::Param;
use burn::prelude::*;

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::error::Result;
use crate::model::Model;
use crate::train::{self, Silent, images_tensor, model_device};

/// Fine-pruning.
#[derive(Debug, Clone, Copy)]
pub struct FinePrune {
    /// Fraction of last-hidden-layer neurons removed.
    pub rate: f64,
    /// Fine-tuning epochs after pruning.
    pub epochs: usize,
    /// Fine-tuning learning rate.
    pub lr: f64,
}

pub(super) const FINE_PRUNE: AttackInfo = AttackInfo {
    name: "fine-prune",
    summary: "remove the least active last-layer neurons on clean data, then fine-tune (fine-prune:0.5,epochs=2,lr=0.01)",
    build: |a: &mut AttackArgs| {
        Ok(Box::new(FinePrune {
            rate: a.rate()?,
            epochs: a.usize("epochs", false, 2, 1)?,
            lr: a.lr(0.01)?,
        }))
    },
};

/// Mean activation of each last-hidden-layer neuron over `pixels`.
pub fn mean_activations(model: &Model, pixels: &[f32]) -> Vec<f64> {
    let device = model_device(model);
    let n = model.spec.input.numel();
    let mut sums: Vec<f64> = Vec::new();
    let mut count = 0usize;
    for chunk in pixels.chunks(256 * n) {
        let x = model.normalize(images_tensor(chunk.to_vec(), model.spec.input, &device));
        let f: Vec<f32> = model
            .net
            .features(x)
            .sum_dim(0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("float features");
        if sums.is_empty() {
            sums = vec![0.0; f.len()];
        }
        for (s, v) in sums.iter_mut().zip(f) {
            *s += v as f64;
        }
        count += chunk.len() / n;
    }
    sums.iter().map(|s| s / count.max(1) as f64).collect()
}

/// Zeroes the output layer's weights from the neurons in `dead` (weight rows: burn stores
/// Linear weights as [inputs, outputs]).
pub(super) fn cut(mut model: Model, dead: &[bool]) -> Model {
    let head = model.net.head_mut();
    let w = head.weight.val();
    let [d_in, d_out] = w.dims();
    let device = w.device();
    let mask: Vec<f32> = (0..d_in)
        .flat_map(|i| std::iter::repeat_n(if dead[i] { 0.0 } else { 1.0 }, d_out))
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [d_in, d_out]), &device);
    head.weight = Param::from_tensor(w * mask);
    model
}

impl Attack for FinePrune {
    fn describe(&self) -> String {
        format!(
            "fine-prune:{},epochs={},lr={}",
            self.rate, self.epochs, self.lr
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let data = ctx.attacker_data("fine-prune")?;
        model.check_data(data)?;
        let act = mean_activations(&model, data.pixels());
        let mut order: Vec<usize> = (0..act.len()).collect();
        order.sort_by(|&a, &b| act[a].total_cmp(&act[b]).then(a.cmp(&b)));
        let k = (self.rate * act.len() as f64).round() as usize;
        let mut dead = vec![false; act.len()];
        for &i in &order[..k] {
            dead[i] = true;
        }
        let model = cut(model, &dead);
        let cfg =
            attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(model.spec.architecture);
        let (model, _) = train::train(model, data, &cfg, ctx.device, &mut Silent)?;
        Ok(cut(model, &dead))
    }
}
