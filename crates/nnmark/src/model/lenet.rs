//! LeNet-5: 6C5-pool-16C5-pool-120-84-classes (AIME's CNN). 28x28 inputs get padding 2 on the
//! first convolution so both 28x28 and 32x32 inputs reach 16x5x5 before the dense layers.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::kernel::{conv2d_forward, linear, max_pool2d_forward, relu};

use crate::data::ImageShape;
use crate::error::{Error, Result};

/// LeNet-5 with ReLU and max pooling.
#[derive(Module, Debug)]
pub struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    pool: MaxPool2d,
}

impl LeNet {
    /// A freshly initialised LeNet for 28x28 or 32x32 inputs.
    pub fn new(input: ImageShape, classes: usize, device: &Device) -> Result<Self> {
        let pad = match (input.height, input.width) {
            (28, 28) => 2,
            (32, 32) => 0,
            (h, w) => {
                return Err(Error::invalid(
                    "input shape",
                    format!("{h}x{w}"),
                    "LeNet takes 28x28 or 32x32 images",
                ));
            }
        };
        Ok(Self {
            conv1: Conv2dConfig::new([input.channels, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            fc1: LinearConfig::new(16 * 5 * 5, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, classes).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        })
    }

    /// Logits for a (N, C, H, W) batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        linear(&self.fc3, self.features(x))
    }

    /// The last hidden layer's activations (the output layer's inputs).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = max_pool2d_forward(&self.pool, relu(conv2d_forward(&self.conv1, x)));
        let x = max_pool2d_forward(&self.pool, relu(conv2d_forward(&self.conv2, x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(linear(&self.fc1, x));
        relu(linear(&self.fc2, x))
    }

    /// The output layer.
    pub fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc3
    }

    /// Convolutions by PyTorch module name.
    pub fn conv_layers(&self) -> Vec<(String, &Conv2d)> {
        vec![
            ("conv1".to_string(), &self.conv1),
            ("conv2".to_string(), &self.conv2),
        ]
    }
}
