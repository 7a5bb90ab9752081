//! The Keras `mnist_cnn` example used by frontier stitching:
//! 32C3-64C3-maxpool2-dropout(0.25)-128-dropout(0.5)-classes.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::kernel::{conv2d_forward, linear, max_pool2d_forward, relu};

use crate::data::ImageShape;
use crate::error::{Error, Result};

/// Two 3x3 convolutions, a pool and two dense layers with dropout.
#[derive(Module, Debug)]
pub struct MnistCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    pool: MaxPool2d,
    drop1: Dropout,
    drop2: Dropout,
}

impl MnistCnn {
    /// A freshly initialised network for `input` images (at least 6x6).
    pub fn new(input: ImageShape, classes: usize, device: &Device) -> Result<Self> {
        if input.height < 6 || input.width < 6 {
            return Err(Error::invalid(
                "input shape",
                input,
                "mnist_cnn needs images of at least 6x6",
            ));
        }
        let h = (input.height - 4) / 2;
        let w = (input.width - 4) / 2;
        Ok(Self {
            conv1: Conv2dConfig::new([input.channels, 32], [3, 3]).init(device),
            conv2: Conv2dConfig::new([32, 64], [3, 3]).init(device),
            fc1: LinearConfig::new(64 * h * w, 128).init(device),
            fc2: LinearConfig::new(128, classes).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            drop1: DropoutConfig::new(0.25).init(),
            drop2: DropoutConfig::new(0.5).init(),
        })
    }

    /// Logits for a (N, C, H, W) batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        linear(&self.fc2, self.features(x))
    }

    /// The last hidden layer's activations (the output layer's inputs).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(conv2d_forward(&self.conv1, x));
        let x = relu(conv2d_forward(&self.conv2, x));
        let x = self.drop1.forward(max_pool2d_forward(&self.pool, x));
        let x: Tensor<2> = x.flatten(1, 3);
        self.drop2.forward(relu(linear(&self.fc1, x)))
    }

    /// The output layer.
    pub fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc2
    }

    /// Convolutions by PyTorch module name.
    pub fn conv_layers(&self) -> Vec<(String, &Conv2d)> {
        vec![
            ("conv1".to_string(), &self.conv1),
            ("conv2".to_string(), &self.conv2),
        ]
    }
}
