//! Mean cross-entropy of logits against class indices on `Autodiff<LibTorch>`, as PyTorch's
//! `F.cross_entropy`: LibTorch's `log_softmax` and `nll_loss` forward, `nll_loss_backward` and
//! `_log_softmax_backward_data` backward. burn's `CrossEntropyLoss` builds the same value from
//! generic operations (a max, a subtraction, `exp`, a sum, `log`, a gather, a mean), whose
//! autodiff backward is about a dozen more: on the MLP, 21 of the roughly 90 LibTorch calls of
//! a training step (callgrind, BENCHMARKS.md) against 4 here.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::prelude::*;
use tch::{Kind, Reduction};

use super::{autodiff_libtorch, libtorch_int, tracked};

/// PyTorch's default `ignore_index`: no class is ignored (targets are checked to be in range).
const NO_IGNORED_CLASS: i64 = -100;

/// The mean cross-entropy, shape `[1]`, when `logits` (`[batch, classes]`) is a LibTorch f32
/// tensor under autodiff and `targets` LibTorch class indices; `None` otherwise.
pub(crate) fn try_cross_entropy(logits: &Tensor<2>, targets: &Tensor<1, Int>) -> Option<Tensor<1>> {
    let target = libtorch_int(targets.clone())?;
    let x = autodiff_libtorch(logits.clone()).ok()?;
    let log_p = x.primitive().tensor.log_softmax(1, None::<Kind>);
    let loss = log_p
        .g_nll_loss(
            &target.tensor,
            None::<tch::Tensor>,
            Reduction::Mean,
            NO_IGNORED_CLASS,
        )
        .view([1]);
    let loss = TchTensor::new(loss);
    let out = match CrossEntropyBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((TchTensor::new(log_p), target), loss),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    };
    Some(tracked(out))
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<LibTorch, 1> for CrossEntropyBackward {
    /// The log-probabilities and the targets.
    type State = (TchTensor, TchTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<LibTorch>(&ops.node);
        let Some(node) = &ops.parents[0] else {
            return;
        };
        let (log_p, target) = ops.state;
        let log_p = &log_p.tensor;
        // With no class weights and no ignored class, the mean's divisor is the batch size.
        let total_weight = tch::Tensor::full(
            [],
            target.tensor.size()[0] as f64,
            (log_p.kind(), log_p.device()),
        );
        let d_log_p = log_p.nll_loss_backward(
            &dy.tensor.view([]),
            &target.tensor,
            None::<tch::Tensor>,
            Reduction::Mean,
            NO_IGNORED_CLASS,
            &total_weight,
        );
        let dx = tch::Tensor::internal_log_softmax_backward_data(&d_log_p, log_p, 1, log_p.kind());
        grads.register::<LibTorch>(node.id, TchTensor::new(dx));
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Distribution, Tolerance};

    use super::*;

    /// Same loss and logit gradient as burn's `CrossEntropyLoss`, scaled by a later factor.
    #[test]
    fn matches_burn_cross_entropy_and_its_gradient() {
        let ad = Device::libtorch().autodiff();
        ad.seed(11);
        let logits =
            Tensor::<2>::random([9, 10], Distribution::Normal(0.0, 3.0), &ad).require_grad();
        let targets = Tensor::<1, Int>::from_data([3, 0, 9, 9, 1, 5, 2, 7, 4], &ad);
        let loss = try_cross_entropy(&logits, &targets).expect("LibTorch tensors take the op");
        let grads = (loss.clone() * 2.5).backward();
        let dx = logits.grad(&grads).unwrap();

        let logits2 = logits.clone().detach().require_grad();
        let loss2 = CrossEntropyLossConfig::new()
            .init(&ad)
            .forward(logits2.clone(), targets);
        let grads2 = (loss2.clone() * 2.5).backward();
        let dx2 = logits2.grad(&grads2).unwrap();
        assert_eq!(loss.dims(), [1]);
        let tol = Tolerance::<f32>::absolute(1e-6);
        loss.into_data()
            .assert_approx_eq::<f32>(&loss2.into_data(), tol);
        dx.into_data()
            .assert_approx_eq::<f32>(&dx2.into_data(), tol);
        // Not on flex.
        let flex = Tensor::<2>::zeros([2, 3], &Device::flex().autodiff());
        let t = Tensor::<1, Int>::from_data([0, 1], &Device::flex());
        assert!(try_cross_entropy(&flex, &t).is_none());
    }
}
