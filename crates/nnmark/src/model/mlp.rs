//! MLP 784-128-64-10 with ReLU: AIME's "Sequential" model (input size follows the image shape).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::kernel::{linear, relu};

/// Fully connected classifier: input → 128 → 64 → classes.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Mlp {
    /// A freshly initialised MLP for `inputs` features and `classes` outputs.
    pub fn new(inputs: usize, classes: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(inputs, 128).init(device),
            fc2: LinearConfig::new(128, 64).init(device),
            fc3: LinearConfig::new(64, classes).init(device),
        }
    }

    /// Logits for a (N, C, H, W) batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        linear(&self.fc3, self.features(x))
    }

    /// The last hidden layer's activations (the output layer's inputs).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(linear(&self.fc1, x));
        relu(linear(&self.fc2, x))
    }

    /// The output layer, the one fine-tuning attacks retrain.
    pub fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc3
    }
}
