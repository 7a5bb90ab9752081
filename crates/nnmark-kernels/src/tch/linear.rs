//! The linear layer `x W + b` on `Autodiff<LibTorch>` as PyTorch runs it: one `addmm` forward;
//! backward one matrix product per needed gradient and a column sum for the bias. burn's
//! `Linear` is a `matmul` plus a broadcast addition, whose backward adds transposes, reshapes
//! and the broadcast's reduction.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::nn::Linear;
use burn::prelude::*;

use super::{autodiff_libtorch, tracked};

/// `linear.forward(x)` for a `[batch, in]` LibTorch f32 input under autodiff and a layer with a
/// bias on the same backend; `x` back otherwise.
pub(crate) fn try_linear(
    linear: &Linear,
    x: Tensor<2>,
) -> std::result::Result<Tensor<2>, Box<Tensor<2>>> {
    let Some(bias) = &linear.bias else {
        return Err(Box::new(x));
    };
    let x = autodiff_libtorch(x)?;
    let (Ok(w), Ok(b)) = (
        autodiff_libtorch(linear.weight.val()),
        autodiff_libtorch(bias.val()),
    ) else {
        // Parameters on another backend than the input: let burn report it.
        return Err(Box::new(tracked(x)));
    };
    // burn stores the weight as [in, out], so this is `b + x W` with no transpose; LibTorch
    // broadcasts the bias over the rows.
    let y = b
        .primitive()
        .tensor
        .addmm(&x.primitive().tensor, &w.primitive().tensor);
    let y = TchTensor::new(y);
    let out = match LinearBackward
        .prepare::<NoCheckpointing>([x.node(), w.node(), b.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = (x.primitive().clone(), w.primitive().clone());
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(tracked(out))
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<LibTorch, 3> for LinearBackward {
    /// The input and the weight.
    type State = (TchTensor, TchTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<LibTorch>(&ops.node);
        let dy = &dy.tensor;
        let (x, w) = ops.state;
        let [node_x, node_w, node_b] = ops.parents;
        if let Some(node) = node_x {
            grads.register::<LibTorch>(node.id, TchTensor::new(dy.mm(&w.tensor.tr())));
        }
        if let Some(node) = node_w {
            grads.register::<LibTorch>(node.id, TchTensor::new(x.tensor.tr().mm(dy)));
        }
        if let Some(node) = node_b {
            let db = dy.sum_dim_intlist(0, false, dy.kind());
            grads.register::<LibTorch>(node.id, TchTensor::new(db));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};

    use super::*;

    /// Same output and gradients (input, weight, bias) as burn's `Linear`.
    #[test]
    fn matches_burn_linear_and_its_gradients() {
        let ad = Device::libtorch().autodiff();
        ad.seed(5);
        let layer: Linear = LinearConfig::new(7, 4).init(&ad);
        let x = Tensor::<2>::random([6, 7], Distribution::Normal(0.0, 1.0), &ad).require_grad();
        let w = Tensor::<2>::random([6, 4], Distribution::Normal(0.0, 1.0), &ad);
        let y = try_linear(&layer, x.clone()).expect("LibTorch tensors take the op");
        let grads = (y.clone() * w.clone()).sum().backward();
        let x2 = x.clone().detach().require_grad();
        let y2 = layer.forward(x2.clone());
        let grads2 = (y2.clone() * w).sum().backward();
        let tol = Tolerance::<f32>::absolute(1e-5);
        y.into_data().assert_approx_eq::<f32>(&y2.into_data(), tol);
        let pairs = [
            (x.grad(&grads).unwrap(), x2.grad(&grads2).unwrap()),
            (
                layer.weight.grad(&grads).unwrap(),
                layer.weight.grad(&grads2).unwrap(),
            ),
        ];
        for (ours, burns) in pairs {
            ours.into_data()
                .assert_approx_eq::<f32>(&burns.into_data(), tol);
        }
        let b = layer.bias.as_ref().unwrap();
        b.grad(&grads)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&b.grad(&grads2).unwrap().into_data(), tol);
        // A flex input is not this op's: the caller uses burn's `Linear`.
        let flex = Tensor::<2>::zeros([2, 7], &Device::flex().autodiff());
        assert!(try_linear(&layer, flex).is_err());
    }
}
