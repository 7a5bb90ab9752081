//! A small ResNet-18 (BasicBlocks [2, 2, 2, 2]) with reduced width for 28x28 and 32x32 inputs:
//! 3x3 stem without max-pool (as CIFAR ResNets), widths w, 2w, 4w, 8w, global average pool.
//! Parameter names follow torchvision (`layer1.0.conv1`, `layer2.0.downsample.0`, `fc`) once
//! `downsample.conv`/`downsample.bn` are mapped to `downsample.0`/`.1` (see `weights`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::kernel::{conv2d_forward, linear, relu};

use crate::data::ImageShape;

fn conv3x3(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

/// The 1x1 projection on a block's shortcut when its shape changes.
#[derive(Module, Debug)]
pub(crate) struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// Two 3x3 convolutions with a residual connection.
#[derive(Module, Debug)]
pub(crate) struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || cin != cout).then(|| Downsample {
            conv: Conv2dConfig::new([cin, cout], [1, 1])
                .with_stride([stride, stride])
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        });
        Self {
            conv1: conv3x3(cin, cout, stride, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: conv3x3(cout, cout, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(conv2d_forward(&d.conv, x.clone())),
            None => x.clone(),
        };
        let out = relu(self.bn1.forward(conv2d_forward(&self.conv1, x)));
        let out = self.bn2.forward(conv2d_forward(&self.conv2, out));
        relu(out + identity)
    }
}

/// ResNet-18 layout at a chosen base width.
#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    layer1: Vec<BasicBlock>,
    layer2: Vec<BasicBlock>,
    layer3: Vec<BasicBlock>,
    layer4: Vec<BasicBlock>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

/// Default base width: 16 (ResNet-18 uses 64), about 0.7 M parameters.
pub(crate) const RESNET_WIDTH: usize = 16;

impl ResNet {
    /// A freshly initialised ResNet-18 of base width `width`.
    pub fn new(input: ImageShape, classes: usize, width: usize, device: &Device) -> Self {
        let stage = |cin: usize, cout: usize, stride: usize| {
            vec![
                BasicBlock::new(cin, cout, stride, device),
                BasicBlock::new(cout, cout, 1, device),
            ]
        };
        Self {
            conv1: conv3x3(input.channels, width, 1, device),
            bn1: BatchNormConfig::new(width).init(device),
            layer1: stage(width, width, 1),
            layer2: stage(width, 2 * width, 2),
            layer3: stage(2 * width, 4 * width, 2),
            layer4: stage(4 * width, 8 * width, 2),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(8 * width, classes).init(device),
        }
    }

    /// Logits for a (N, C, H, W) batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        linear(&self.fc, self.features(x))
    }

    /// The pooled channels of the last convolution block (the output layer's inputs).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(conv2d_forward(&self.conv1, x)));
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        self.pool.forward(x).flatten(1, 3)
    }

    /// The output layer.
    pub fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc
    }

    /// Convolutions by PyTorch module name, in forward order.
    pub fn conv_layers(&self) -> Vec<(String, &Conv2d)> {
        let mut out = vec![("conv1".to_string(), &self.conv1)];
        for (stage, blocks) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .enumerate()
        {
            for (i, b) in blocks.iter().enumerate() {
                let p = format!("layer{}.{i}", stage + 1);
                out.push((format!("{p}.conv1"), &b.conv1));
                out.push((format!("{p}.conv2"), &b.conv2));
                if let Some(d) = &b.downsample {
                    out.push((format!("{p}.downsample.0"), &d.conv));
                }
            }
        }
        out
    }
}
