//! Times LeNet's layers (burn's modules, then nnmark's kernels) on one epoch's worth of batches (125 × 64), forward and backward.
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;
use nnmark_kernels::{conv2d_forward, max_pool2d_forward};
use std::time::Instant;

fn main() {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let c1 = Conv2dConfig::new([1, 6], [5, 5])
        .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(&ad);
    let c2 = Conv2dConfig::new([6, 16], [5, 5]).init(&ad);
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    let d = burn::tensor::Distribution::Default;
    let x: Tensor<4> = Tensor::random([64, 1, 28, 28], d, &ad);
    let x2: Tensor<4> = Tensor::random([64, 6, 14, 14], d, &ad).require_grad();
    let x3: Tensor<4> = Tensor::random([64, 6, 28, 28], d, &ad).require_grad();
    for (name, f) in [
        ("conv1 fwd+bwd", 0),
        ("conv2 fwd+bwd", 1),
        ("pool fwd+bwd", 2),
        ("conv1 fwd only", 3),
        ("conv2 fwd only", 4),
        ("nnmark conv1 fwd+bwd", 5),
        ("nnmark conv2 fwd+bwd", 6),
        ("nnmark conv1 fwd only", 7),
        ("nnmark conv2 fwd only", 8),
        ("nnmark pool fwd+bwd", 9),
    ] {
        let t = Instant::now();
        for _ in 0..125 {
            match f {
                0 => drop(c1.forward(x.clone()).sum().backward()),
                1 => drop(c2.forward(x2.clone()).sum().backward()),
                2 => drop(pool.forward(x3.clone()).sum().backward()),
                3 => drop(c1.forward(x.clone()).sum().into_scalar::<f32>()),
                4 => drop(c2.forward(x2.clone()).sum().into_scalar::<f32>()),
                5 => drop(conv2d_forward(&c1, x.clone()).sum().backward()),
                6 => drop(conv2d_forward(&c2, x2.clone()).sum().backward()),
                7 => drop(conv2d_forward(&c1, x.clone()).sum().into_scalar::<f32>()),
                8 => drop(conv2d_forward(&c2, x2.clone()).sum().into_scalar::<f32>()),
                _ => drop(max_pool2d_forward(&pool, x3.clone()).sum().backward()),
            }
        }
        eprintln!("{name}: {:.3}s per 125 batches", t.elapsed().as_secs_f64());
    }
}
