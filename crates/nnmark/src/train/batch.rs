//! Turning data-set slices into tensors.

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::data::{Dataset, ImageShape};

/// A (N, C, H, W) tensor from contiguous pixels.
pub fn images_tensor(pixels: Vec<f32>, shape: ImageShape, device: &Device) -> Tensor<4> {
    let n = pixels.len() / shape.numel();
    Tensor::from_data(
        TensorData::new(pixels, [n, shape.channels, shape.height, shape.width]),
        device,
    )
}

/// A label tensor.
pub(crate) fn labels_tensor(labels: &[u8], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

pub(crate) fn gather_images(
    data: &Dataset,
    idx: &[usize],
    shape: ImageShape,
    device: &Device,
) -> Tensor<4> {
    let mut px = Vec::with_capacity(idx.len() * shape.numel());
    for &i in idx {
        px.extend_from_slice(data.image(i));
    }
    images_tensor(px, shape, device)
}

pub(crate) fn gather_labels(data: &Dataset, idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let labels: Vec<u8> = idx.iter().map(|&i| data.labels()[i]).collect();
    labels_tensor(&labels, device)
}

/// Data items `idx` followed by trigger items `picks`, as one batch.
pub(crate) fn gather_mixed(
    data: &Dataset,
    idx: &[usize],
    triggers: &Dataset,
    picks: &[usize],
    shape: ImageShape,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let mut px = Vec::with_capacity((idx.len() + picks.len()) * shape.numel());
    let mut labels = Vec::with_capacity(idx.len() + picks.len());
    for &i in idx {
        px.extend_from_slice(data.image(i));
        labels.push(data.labels()[i]);
    }
    for &i in picks {
        px.extend_from_slice(triggers.image(i));
        labels.push(triggers.labels()[i]);
    }
    (
        images_tensor(px, shape, device),
        labels_tensor(&labels, device),
    )
}

pub(crate) fn count_correct(logits: &Tensor<2>, labels: &Tensor<1, Int>) -> usize {
    let pred: Tensor<1, Int> = logits.clone().argmax(1).flatten(0, 1);
    let hits: i64 = pred.equal(labels.clone()).int().sum().into_scalar::<i64>();
    hits as usize
}
