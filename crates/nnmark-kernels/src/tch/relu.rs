//! ReLU on `Autodiff<LibTorch>` with LibTorch's own one-kernel backward.
//!
//! burn's LibTorch backend has no `relu_backward`, so burn falls back to its generic one: a
//! comparison into a boolean tensor, then a `masked_fill`. Two LibTorch kernels and two
//! OpenMP regions per ReLU per step where PyTorch runs one `threshold_backward`: 5.7% of a
//! LeNet training step on 2 CPU cores (perf, BENCHMARKS.md). This op keeps the forward as is
//! and calls `threshold_backward` directly.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::prelude::*;

use super::{autodiff_libtorch, tracked};

/// `relu(x)` with the fused backward when `x` is a tracked LibTorch tensor; `x` back otherwise.
pub(crate) fn try_relu<const D: usize>(
    x: Tensor<D>,
) -> std::result::Result<Tensor<D>, Box<Tensor<D>>> {
    let x = autodiff_libtorch(x)?;
    let y = TchTensor::new(x.primitive().tensor.relu());
    let out = match ReluBackward
        .prepare::<NoCheckpointing>([x.node()])
        // Compute-bound: nothing to recompute, the output is kept (no checkpointing here).
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = y.clone();
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(tracked(out))
}

#[derive(Debug)]
struct ReluBackward;

impl Backward<LibTorch, 1> for ReluBackward {
    /// The ReLU's output: the gradient passes where it is positive.
    type State = TchTensor;

    fn backward(self, ops: Ops<TchTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<LibTorch>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            let dx = ops.state.tensor.threshold_backward(&dy.tensor, 0.0);
            grads.register::<LibTorch>(node.id, TchTensor::new(dx));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// The op takes over on tracked LibTorch tensors and gives burn's output and gradient.
    #[test]
    fn matches_burn_relu_and_its_gradient() {
        let ad = Device::libtorch().autodiff();
        ad.seed(7);
        let x = Tensor::<3>::random([4, 6, 10], Distribution::Normal(0.0, 1.0), &ad).require_grad();
        let y = try_relu(x.clone()).expect("a tracked LibTorch tensor takes the fused op");
        let w = Tensor::<3>::random([4, 6, 10], Distribution::Normal(0.0, 1.0), &ad);
        let grads = (y.clone() * w.clone()).sum().backward();
        let dx = x.grad(&grads).unwrap();
        let x2 = x.clone().detach().require_grad();
        let y2 = burn::tensor::activation::relu(x2.clone());
        let grads2 = (y2.clone() * w).sum().backward();
        let dx2 = x2.grad(&grads2).unwrap();
        y.into_data().assert_eq(&y2.into_data(), true);
        dx.into_data().assert_eq(&dx2.into_data(), true);
        // Untracked tensors go back to the caller unchanged.
        assert!(try_relu(Tensor::<2>::zeros([2, 2], &Device::libtorch())).is_err());
    }
}
