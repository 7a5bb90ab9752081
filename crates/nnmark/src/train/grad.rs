//! Gradients of the loss with respect to the input pixels (for FGSM and friends).

use burn::prelude::*;

use super::batch::{images_tensor, labels_tensor};
use super::eval::model_device;
use crate::error::{Error, Result};
use crate::model::Model;

/// d(cross-entropy)/d(input) for each image, same layout as `pixels`. The loss is summed over
/// the batch, so each image's gradient is that of its own loss.
pub fn input_gradients(
    model: &Model,
    pixels: &[f32],
    labels: &[u8],
    batch_size: usize,
) -> Result<Vec<f32>> {
    let n = model.spec.input.numel();
    if pixels.len() != labels.len() * n {
        return Err(Error::invalid(
            "input batch",
            pixels.len(),
            format!(
                "{} labels need {} pixel values",
                labels.len(),
                labels.len() * n
            ),
        ));
    }
    // A label the model has no class for would abort inside the loss kernel (LibTorch's
    // `nll_loss` on the `tch` backend): say which one instead.
    if let Some(l) = labels
        .iter()
        .find(|&&l| l as usize >= model.spec.num_classes)
    {
        return Err(Error::invalid(
            "label",
            l,
            format!(
                "out of range for a model with {} classes",
                model.spec.num_classes
            ),
        ));
    }
    let device = model_device(model);
    let ad = device.clone().autodiff();
    // Weights are constants here: only the input is a leaf that requires a gradient. Frozen,
    // not just without gradients: `no_grad` leaves dropout on, which would make the gradients
    // of a dropout network (mnist_cnn) random and draw from burn's global generator outside
    // any lock (frontier stitching's keys then changed with the process's history).
    let model_ad = Model {
        spec: model.spec.clone(),
        net: model.net.clone().to_device(&ad).freeze(),
    };
    let mut out = Vec::with_capacity(pixels.len());
    let bs = batch_size.max(1);
    for (chunk, lab) in pixels.chunks(bs * n).zip(labels.chunks(bs)) {
        let x = images_tensor(chunk.to_vec(), model.spec.input, &ad).require_grad();
        let y = labels_tensor(lab, &ad);
        let loss =
            crate::kernel::cross_entropy(model_ad.forward(x.clone()), y) * (lab.len() as f32);
        let grads = loss.backward();
        let g = x.grad(&grads).expect("the input requires a gradient");
        out.extend(
            g.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("float gradient"),
        );
    }
    Ok(out)
}

/// Fast gradient sign method (Goodfellow et al. 2015): x' = clip(x + ε·sign(∇x loss), 0, 1),
/// the loss taken at the given labels. Used for frontier stitching's keys and for adversarial
/// fine-tuning.
pub fn fgsm(model: &Model, pixels: &[f32], labels: &[u8], epsilon: f32) -> Result<Vec<f32>> {
    if !(epsilon > 0.0 && epsilon <= 1.0) {
        return Err(Error::invalid("epsilon", epsilon, "must be in (0, 1]"));
    }
    let grads = input_gradients(model, pixels, labels, 256)?;
    Ok(pixels
        .iter()
        .zip(grads)
        .map(|(&x, g)| fgsm_step(x, g, epsilon))
        .collect())
}

/// One pixel's FGSM step: x + ε·sign(g), clipped to [0, 1] (no step where g is 0).
pub fn fgsm_step(x: f32, g: f32, epsilon: f32) -> f32 {
    let step = if g > 0.0 {
        epsilon
    } else if g < 0.0 {
        -epsilon
    } else {
        0.0
    };
    (x + step).clamp(0.0, 1.0)
}
