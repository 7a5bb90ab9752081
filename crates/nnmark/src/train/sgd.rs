//! SGD with PyTorch's update rule (momentum without dampening, Nesterov, L2 weight decay) in
//! the fewest tensor operations burn's public API allows.
//!
//! burn's own `Sgd` computes the velocity as `grad * (1 - dampening) + velocity * momentum`
//! and the step as `param - velocity * lr`: five tensor operations per parameter per step even
//! at dampening 0, where the first multiplication is by exactly 1. On the LibTorch backend each
//! is one LibTorch call (a kernel launch on CUDA); the MLP's six parameters made 30 of the
//! roughly 90 LibTorch calls burn issued per training step (callgrind, BENCHMARKS.md). This
//! optimiser drops the multiplication by 1 and updates the velocity in place, four operations
//! per parameter, with results bit for bit equal to burn's (f32 addition commutes, and the
//! remaining products are the same), which the tests check.

use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::prelude::*;

/// SGD as PyTorch's `torch.optim.SGD(lr, momentum, nesterov=..., weight_decay=...)`.
#[derive(Debug, Clone)]
pub(crate) struct Sgd {
    // f32, as burn's `Momentum` and `WeightDecay` hold them, so the products are burn's.
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
}

impl Sgd {
    pub(crate) fn new(momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        Sgd {
            momentum: momentum as f32,
            nesterov,
            weight_decay: weight_decay as f32,
        }
    }
}

/// The momentum buffer of one parameter (none without momentum).
#[derive(Clone)]
pub(crate) struct SgdState<const D: usize> {
    velocity: Option<Tensor<D>>,
}

impl<const D: usize> RecordState for SgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(v) = &self.velocity {
            out.push_tensor(prefix, "velocity", v.clone().into_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let velocity = src
            .take_tensor(prefix, "velocity")
            .map(|data| Tensor::from_data(data, device));
        Some(SgdState { velocity })
    }
}

impl Optimizer for Sgd {
    type State<const D: usize> = SgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let grad = if self.weight_decay > 0.0 {
            tensor.clone().mul_scalar(self.weight_decay).add(grad)
        } else {
            grad
        };
        if self.momentum == 0.0 {
            return (tensor - grad.mul_scalar(lr), None);
        }
        let velocity = match state.and_then(|s| s.velocity) {
            // The buffer is uniquely owned here, so both operations run in place.
            Some(v) => v.mul_scalar(self.momentum).add(grad.clone()),
            // PyTorch starts the buffer at the first gradient.
            None => grad.clone(),
        };
        let direction = if self.nesterov {
            velocity.clone().mul_scalar(self.momentum).add(grad)
        } else {
            drop(grad);
            velocity.clone()
        };
        let next = tensor - direction.mul_scalar(lr);
        (
            next,
            Some(SgdState {
                velocity: Some(velocity),
            }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        SgdState {
            velocity: state.velocity.map(|v| v.to_device(device)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
    use burn::tensor::Distribution;

    use super::*;

    /// Six steps of a linear layer under `optim`, from the same start and data each time.
    fn run(mut optim: ModuleOptimizer, device: &Device) -> Vec<f32> {
        device.seed(3);
        let mut layer: Linear = LinearConfig::new(7, 5).init(device);
        for step in 0..6 {
            let x = Tensor::<2>::random([8, 7], Distribution::Normal(0.0, 1.0), device);
            let loss = layer.forward(x).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &layer);
            let lr = if step < 3 { 0.05 } else { 0.02 };
            layer = optim.step(lr, layer, grads);
        }
        let mut out = layer.weight.val().into_data().try_to_vec::<f32>().unwrap();
        out.extend(
            layer
                .bias
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        );
        out
    }

    /// Bit for bit burn's `Sgd` at dampening 0, in every combination of options.
    #[test]
    fn equals_burns_sgd_bit_for_bit() {
        let device = Device::default().autodiff();
        for (momentum, nesterov, wd) in [
            (0.9, false, 0.0),
            (0.9, true, 0.0),
            (0.9, false, 5e-4),
            (0.5, true, 1e-2),
            (0.0, false, 0.0),
            (0.0, false, 1e-3),
        ] {
            let burns = SgdConfig::new()
                .with_momentum((momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                        .with_nesterov(nesterov)
                }))
                .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd as f32)))
                .init();
            let ours = ModuleOptimizer::from(Sgd::new(momentum, nesterov, wd));
            let (a, b) = (run(burns, &device), run(ours, &device));
            assert_eq!(a, b, "momentum {momentum} nesterov {nesterov} wd {wd}");
        }
        // And the options matter: a different momentum gives other weights.
        let other = run(ModuleOptimizer::from(Sgd::new(0.5, false, 0.0)), &device);
        assert_ne!(
            other,
            run(ModuleOptimizer::from(Sgd::new(0.9, false, 0.0)), &device)
        );
    }
}
