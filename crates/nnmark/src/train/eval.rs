//! Accuracy, per-class accuracy, confusion matrix and batched prediction.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::batch::images_tensor;
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;

/// A model's performance on a data set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Fraction correct.
    pub accuracy: f64,
    /// Fraction correct per true class (NaN-free: a class with no example reports 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Predicted class of each image (`pixels` holds whole images of the model's input shape).
pub fn predict(model: &Model, pixels: &[f32], batch_size: usize) -> Vec<usize> {
    let device = model_device(model);
    let n = model.spec.input.numel();
    let mut out = Vec::with_capacity(pixels.len() / n);
    for chunk in pixels.chunks(batch_size.max(1) * n) {
        let logits = model.forward(images_tensor(chunk.to_vec(), model.spec.input, &device));
        let pred: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("argmax yields integers");
        out.extend(pred.into_iter().map(|p| p as usize));
    }
    out
}

/// Class probabilities (softmax of the logits), one row per image.
pub fn predict_proba(model: &Model, pixels: &[f32], batch_size: usize) -> Vec<Vec<f32>> {
    let device = model_device(model);
    let n = model.spec.input.numel();
    let c = model.spec.num_classes;
    let mut out = Vec::with_capacity(pixels.len() / n);
    for chunk in pixels.chunks(batch_size.max(1) * n) {
        let logits = model.forward(images_tensor(chunk.to_vec(), model.spec.input, &device));
        let p: Vec<f32> = softmax(logits, 1)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("softmax yields floats");
        out.extend(p.chunks(c).map(|r| r.to_vec()));
    }
    out
}

pub(crate) fn model_device(model: &Model) -> Device {
    model
        .net
        .devices()
        .first()
        .cloned()
        .unwrap_or_else(Device::flex)
}

/// Accuracy, per-class accuracy and confusion matrix of `model` on `data`.
pub fn evaluate(model: &Model, data: &Dataset, batch_size: usize) -> Result<Evaluation> {
    model.check_data(data)?;
    let c = model.spec.num_classes;
    let pred = predict(model, data.pixels(), batch_size);
    let mut confusion = vec![vec![0u64; c]; c];
    for (&t, &p) in data.labels().iter().zip(&pred) {
        confusion[t as usize][p] += 1;
    }
    let correct: u64 = (0..c).map(|i| confusion[i][i]).sum();
    let per_class_accuracy = (0..c)
        .map(|i| {
            let total: u64 = confusion[i].iter().sum();
            if total == 0 {
                0.0
            } else {
                confusion[i][i] as f64 / total as f64
            }
        })
        .collect();
    Ok(Evaluation {
        examples: data.len(),
        accuracy: if data.is_empty() {
            0.0
        } else {
            correct as f64 / data.len() as f64
        },
        per_class_accuracy,
        confusion,
    })
}
