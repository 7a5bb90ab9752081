//! IRNN (Le, Jaitly, Hinton 2015): a ReLU RNN whose recurrent weights start as the identity,
//! reading an image row by row (28 steps of 28 pixels on MNIST), then a dense output layer. The
//! third model family of frontier stitching (its Keras `mnist_irnn`). Parameter names and
//! layouts follow PyTorch's `nn.RNN(nonlinearity="relu", batch_first=True)` named `rnn`.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::kernel::{linear, relu};

use crate::data::ImageShape;

/// Hidden units (the Keras example: 100).
pub(crate) const IRNN_HIDDEN: usize = 100;

/// One ReLU recurrent layer, PyTorch `nn.RNN` layout (`weight_ih_l0` is `[hidden, input]`).
#[derive(Module, Debug)]
pub(crate) struct ReluRnn {
    weight_ih_l0: Param<Tensor<2>>,
    weight_hh_l0: Param<Tensor<2>>,
    bias_ih_l0: Param<Tensor<1>>,
    bias_hh_l0: Param<Tensor<1>>,
}

/// Row-by-row ReLU RNN classifier.
#[derive(Module, Debug)]
pub struct Irnn {
    rnn: ReluRnn,
    fc: Linear,
}

impl Irnn {
    /// A freshly initialised IRNN: identity recurrent weights, zero biases, input weights
    /// uniform in ±1/√hidden (PyTorch's RNN default; the Keras example's N(0, 0.001) needs its
    /// hundreds of epochs at lr 1e-6 to train).
    pub fn new(input: ImageShape, classes: usize, device: &Device) -> Self {
        let features = input.channels * input.width;
        let h = IRNN_HIDDEN;
        let k = 1.0 / (h as f64).sqrt();
        Self {
            rnn: ReluRnn {
                weight_ih_l0: Param::from_tensor(Tensor::random(
                    [h, features],
                    Distribution::Uniform(-k, k),
                    device,
                )),
                weight_hh_l0: Param::from_tensor(Tensor::eye(h, device)),
                bias_ih_l0: Param::from_tensor(Tensor::zeros([h], device)),
                bias_hh_l0: Param::from_tensor(Tensor::zeros([h], device)),
            },
            fc: LinearConfig::new(h, classes).init(device),
        }
    }

    /// Logits for a (N, C, H, W) batch: one step per image row.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        linear(&self.fc, self.features(x))
    }

    /// The final hidden state (the output layer's inputs).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, c, rows, cols] = x.dims();
        let h = IRNN_HIDDEN;
        // (N, C, H, W) → (N, H, C·W): each row, all channels, is one step's input.
        let steps = x.permute([0, 2, 1, 3]).reshape([n * rows, c * cols]);
        let w_ih = self.rnn.weight_ih_l0.val().transpose();
        let w_hh = self.rnn.weight_hh_l0.val().transpose();
        let bias = (self.rnn.bias_ih_l0.val() + self.rnn.bias_hh_l0.val()).reshape([1, h]);
        // Input projections of every step at once; only the recurrence is sequential.
        let projected = (steps.matmul(w_ih) + bias).reshape([n, rows, h]);
        let mut state: Tensor<2> = Tensor::zeros([n, h], &projected.device());
        for t in 0..rows {
            let step: Tensor<2> = projected
                .clone()
                .slice([0..n, t..t + 1, 0..h])
                .reshape([n, h]);
            state = relu(step + state.matmul(w_hh.clone()));
        }
        state
    }

    /// The output layer.
    pub fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc
    }
}
