//! Faster CPU kernels for the layers where burn's flex backend spends most of a LeNet step,
//! plugged in as custom autodiff operations on `Autodiff<Flex>` through burn's public
//! primitive API (`Tensor::try_into_primitive` / `from_primitive`, `burn_autodiff::Backward`).
//! With the `tch` feature, the ReLU, the cross-entropy loss and the linear layer get the same
//! treatment on `Autodiff<LibTorch>` (`tch`: LibTorch's own fused kernels, as PyTorch calls
//! them, instead of burn's generic operations).
//!
//! Every entry point falls back to burn's own module when its kernel does not apply: not f32
//! tensors of the kernel's backend (flex, or LibTorch for `tch`), half precision, gradient
//! checkpointing, or layer options the kernel does not cover (dilation, groups, asymmetric or
//! `Same` padding). So models call them unconditionally and stay device-agnostic.

pub mod conv2d;
pub mod max_pool;
#[cfg(feature = "tch")]
mod tch;

use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    GradientCheckpointingStrategy, TensorMetadata,
};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};

use conv2d::ConvGeometry;
use max_pool::PoolGeometry;

/// burn-autodiff's tensor (its type is only reachable through this alias).
type AutodiffTensor<B> = FloatTensor<Autodiff<B>>;

/// A flex f32 tensor, either plain or carried by the (non-checkpointing) autodiff backend.
enum FlexFloat {
    Plain(FlexTensor),
    Tracked(AutodiffTensor<Flex>),
}

impl FlexFloat {
    /// Takes the tensor apart when it is an f32 flex tensor; gives it back otherwise.
    fn from_tensor<const D: usize>(t: Tensor<D>) -> std::result::Result<Self, Box<Tensor<D>>> {
        let d = t.into_dispatch();
        if d.dtype() != DType::F32 {
            return Err(Box::new(Tensor::from_dispatch(d)));
        }
        match (d.kind, d.autodiff) {
            (
                DispatchTensorKind::Flex(BackendTensor::Float(t)),
                DispatchAutodiffContext::Disabled,
            ) => Ok(Self::Plain(t)),
            (
                DispatchTensorKind::Autodiff(inner),
                ctx @ DispatchAutodiffContext::Enabled(GradientCheckpointingStrategy::Disabled),
            ) => match *inner {
                DispatchTensorKind::Flex(BackendTensor::Autodiff(t)) => Ok(Self::Tracked(t)),
                kind => Err(Box::new(Tensor::from_dispatch(DispatchTensor {
                    kind: DispatchTensorKind::Autodiff(Box::new(kind)),
                    autodiff: ctx,
                }))),
            },
            (kind, autodiff) => Err(Box::new(Tensor::from_dispatch(DispatchTensor {
                kind,
                autodiff,
            }))),
        }
    }

    fn is_tracked(&self) -> bool {
        matches!(self, Self::Tracked(_))
    }

    /// The tensor under autodiff (a plain one becomes an untracked constant).
    fn into_autodiff(self) -> AutodiffTensor<Flex> {
        match self {
            Self::Plain(t) => AutodiffTensor::new(t),
            Self::Tracked(t) => t,
        }
    }

    fn primitive(&self) -> &FlexTensor {
        match self {
            Self::Plain(t) => t,
            Self::Tracked(t) => t.primitive(),
        }
    }
}

/// A contiguous f32 copy-free view where possible.
fn contiguous(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("kernel inputs are made contiguous f32 before use")
}

fn flex_f32(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

/// The kernel's geometry for `conv` applied to an input of `dims`, when it covers the layer.
fn conv_geometry(conv: &Conv2d, dims: [usize; 4]) -> Option<ConvGeometry> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        _ => return None,
    };
    let [channels_out, per_group, kh, kw] = conv.weight.dims();
    let [batch, channels_in, height, width] = dims;
    let g = ConvGeometry {
        batch,
        channels_in,
        height,
        width,
        channels_out,
        kernel: [kh, kw],
        stride: conv.stride,
        padding,
    };
    (conv.groups == 1 && conv.dilation == [1, 1] && per_group == channels_in && g.is_valid())
        .then_some(g)
}

/// `relu(x)`. On tracked LibTorch tensors its backward is LibTorch's one `threshold_backward`
/// kernel instead of burn's comparison plus `masked_fill` (`tch::relu`); flex's own ReLU
/// backward is already one pass.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    let x = match tch::try_relu(x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    burn::tensor::activation::relu(x)
}

/// Mean cross-entropy of `logits` (`[batch, classes]`) against class indices, shape `[1]`:
/// burn's `CrossEntropyLoss`, or on tracked LibTorch tensors LibTorch's `log_softmax` +
/// `nll_loss` pair and their two backward kernels (`tch::loss`), as PyTorch's `cross_entropy`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    #[cfg(feature = "tch")]
    if let Some(loss) = tch::try_cross_entropy(&logits, &targets) {
        return loss;
    }
    burn::nn::loss::CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, targets)
}

/// `linear.forward(x)`; on tracked LibTorch tensors one `addmm` forward and one product per
/// gradient backward (`tch::linear`), as PyTorch's `nn.Linear`.
pub fn linear(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "tch")]
    let x = match tch::try_linear(linear, x) {
        Ok(y) => return y,
        Err(x) => *x,
    };
    linear.forward(x)
}

/// `conv.forward(x)`, through [`conv2d`]'s kernels on flex f32 tensors.
pub fn conv2d_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(g) = conv_geometry(conv, x.dims()) else {
        return conv.forward(x);
    };
    let x = match FlexFloat::from_tensor(x) {
        Ok(x) => x,
        Err(x) => return conv.forward(*x),
    };
    let weight = FlexFloat::from_tensor(conv.weight.val());
    let bias = conv.bias.as_ref().map(|b| FlexFloat::from_tensor(b.val()));
    let (weight, bias) = match (weight, bias) {
        (Ok(w), None) => (w, None),
        (Ok(w), Some(Ok(b))) => (w, Some(b)),
        // Parameters on another backend than the input: let burn report it.
        _ => return conv.forward(rebuild(x)),
    };
    let out_shape = [g.batch, g.channels_out, g.out_height(), g.out_width()];
    let run = |x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>| {
        let b = b.map(contiguous);
        let y = conv2d::forward(
            &g,
            f32s(&contiguous(x)),
            f32s(&contiguous(w)),
            b.as_ref().map(f32s),
        );
        flex_f32(y, &out_shape)
    };
    let any_tracked =
        x.is_tracked() || weight.is_tracked() || bias.as_ref().is_some_and(FlexFloat::is_tracked);
    if !any_tracked {
        let y = run(
            x.primitive(),
            weight.primitive(),
            bias.as_ref().map(FlexFloat::primitive),
        );
        return Tensor::from_primitive::<Flex>(y);
    }
    let (x, weight) = (x.into_autodiff(), weight.into_autodiff());
    let y = run(
        x.primitive(),
        weight.primitive(),
        bias.as_ref().map(FlexFloat::primitive),
    );
    let state = ConvState {
        x: x.primitive().clone(),
        weight: weight.primitive().clone(),
        geometry: g,
    };
    let out = match bias.map(FlexFloat::into_autodiff) {
        Some(b) => match ConvBackward
            .prepare::<NoCheckpointing>([x.node(), weight.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
        None => match ConvBackward
            .prepare::<NoCheckpointing>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}

fn rebuild<const D: usize>(t: FlexFloat) -> Tensor<D> {
    match t {
        FlexFloat::Plain(t) => Tensor::from_primitive::<Flex>(t),
        FlexFloat::Tracked(t) => Tensor::from_primitive::<Autodiff<Flex>>(t),
    }
}

/// What the convolution's backward step needs: its input, its weight, its shapes.
#[derive(Clone, Debug)]
struct ConvState {
    x: FlexTensor,
    weight: FlexTensor,
    geometry: ConvGeometry,
}

#[derive(Debug)]
struct ConvBackward;

impl ConvBackward {
    /// Gradients for the parents that need one: `[x, weight, bias]` (bias absent when N = 2).
    fn run<const N: usize>(ops: Ops<ConvState, N>, grads: &mut Gradients) {
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let ConvState {
            x,
            weight,
            geometry: g,
        } = ops.state;
        let parents = ops.parents;
        let w_shape = weight.layout().shape().to_vec();
        let wants_weight = parents[1..].iter().any(Option::is_some);
        if wants_weight {
            let (dw, db) = conv2d::backward_weight(&g, f32s(&contiguous(&x)), f32s(&dy));
            if let Some(node) = &parents[1] {
                grads.register::<Flex>(node.id, flex_f32(dw, &w_shape));
            }
            if let Some(Some(node)) = parents.get(2) {
                grads.register::<Flex>(node.id, flex_f32(db, &[g.channels_out]));
            }
        }
        if let Some(node) = &parents[0] {
            let dx = conv2d::backward_input(&g, f32s(&contiguous(&weight)), f32s(&dy));
            let shape = [g.batch, g.channels_in, g.height, g.width];
            grads.register::<Flex>(node.id, flex_f32(dx, &shape));
        }
    }
}

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        Self::run(ops, grads);
    }
}

impl Backward<Flex, 2> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        Self::run(ops, grads);
    }
}

/// `pool.forward(x)`, through [`max_pool`]'s kernels on flex f32 tensors.
pub fn max_pool2d_forward(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [batch, channels, height, width] = x.dims();
    let g = PoolGeometry {
        planes: batch * channels,
        height,
        width,
        kernel: pool.kernel_size,
        stride: pool.stride,
    };
    let unpadded = matches!(
        pool.padding,
        PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
    );
    if !unpadded || pool.dilation != [1, 1] || pool.ceil_mode || !g.is_valid() {
        return pool.forward(x);
    }
    let x = match FlexFloat::from_tensor(x) {
        Ok(x) => x,
        Err(x) => return pool.forward(*x),
    };
    let (y, winners) = max_pool::forward(&g, f32s(&contiguous(x.primitive())));
    let y = flex_f32(y, &[batch, channels, g.out_height(), g.out_width()]);
    match x {
        FlexFloat::Plain(_) => Tensor::from_primitive::<Flex>(y),
        FlexFloat::Tracked(x) => {
            let out = match PoolBackward
                .prepare::<NoCheckpointing>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(
                    PoolState {
                        winners: Arc::new(winners),
                        geometry: g,
                        input_shape: [batch, channels, height, width],
                    },
                    y,
                ),
                OpsKind::UnTracked(prep) => prep.finish(y),
            };
            Tensor::from_primitive::<Autodiff<Flex>>(out)
        }
    }
}

/// The pooling's backward state: where each window's maximum sat.
#[derive(Clone, Debug)]
struct PoolState {
    winners: Arc<Vec<u32>>,
    geometry: PoolGeometry,
    input_shape: [usize; 4],
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<PoolState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let s = ops.state;
            let dx = max_pool::backward(&s.geometry, &s.winners, f32s(&dy));
            grads.register::<Flex>(node.id, flex_f32(dx, &s.input_shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    /// Equal up to f32 summation order: relative to the largest magnitude in `b`.
    fn close<const D: usize>(a: Tensor<D>, b: Tensor<D>, what: &str) {
        let scale: f32 = b.clone().abs().max().into_scalar();
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{what}: max difference {diff} at scale {scale}"
        );
    }

    /// Checks that two outputs agree and back-propagates the same random upstream gradient
    /// through each: the gradients of the kernel's graph and of burn's.
    fn backward_both(
        ours: Tensor<4>,
        theirs: Tensor<4>,
        what: &str,
    ) -> (burn::tensor::Gradients, burn::tensor::Gradients) {
        close(ours.clone(), theirs.clone(), what);
        let upstream: Tensor<4> =
            Tensor::random(ours.dims(), Distribution::Default, &ours.device());
        (
            (ours * upstream.clone()).sum().backward(),
            (theirs * upstream).sum().backward(),
        )
    }

    /// The custom op gives burn's outputs and gradients (input, weight, bias) on the layers
    /// nnmark's models use, with and without bias, strided and padded.
    #[test]
    fn matches_burn_conv2d_forward_and_gradients() {
        let ad = Device::flex().autodiff();
        ad.seed(7);
        let cases = [
            (
                Conv2dConfig::new([1, 6], [5, 5])
                    .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
                [4, 1, 28, 28],
            ),
            (Conv2dConfig::new([6, 16], [5, 5]), [4, 6, 14, 14]),
            (
                Conv2dConfig::new([4, 8], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false),
                [3, 4, 9, 9],
            ),
            (
                Conv2dConfig::new([4, 8], [1, 1])
                    .with_stride([2, 2])
                    .with_bias(false),
                [3, 4, 8, 8],
            ),
        ];
        for (config, dims) in cases {
            let conv = config.init(&ad);
            assert!(
                conv_geometry(&conv, dims).is_some(),
                "{dims:?} takes the fast path"
            );
            let x: Tensor<4> = Tensor::random(dims, Distribution::Default, &ad).require_grad();
            let (g_ours, g_theirs) = backward_both(
                conv2d_forward(&conv, x.clone()),
                conv.forward(x.clone()),
                "forward",
            );
            close(
                x.grad(&g_ours).unwrap(),
                x.grad(&g_theirs).unwrap(),
                "input gradient",
            );
            close(
                conv.weight.grad(&g_ours).unwrap(),
                conv.weight.grad(&g_theirs).unwrap(),
                "weight gradient",
            );
            if let Some(b) = &conv.bias {
                close(
                    b.grad(&g_ours).unwrap(),
                    b.grad(&g_theirs).unwrap(),
                    "bias gradient",
                );
            }
        }
    }

    /// The pooling op gives burn's outputs and input gradients (random inputs have no ties).
    #[test]
    fn max_pool_matches_burn() {
        use burn::nn::pool::MaxPool2dConfig;
        let ad = Device::flex().autodiff();
        for (k, s, dims) in [
            (2, 2, [3, 6, 28, 28]),
            (2, 2, [2, 3, 7, 9]),
            (3, 2, [2, 2, 9, 9]),
        ] {
            let pool = MaxPool2dConfig::new([k, k]).with_strides([s, s]).init();
            let x: Tensor<4> = Tensor::random(dims, Distribution::Default, &ad).require_grad();
            let (g_ours, g_theirs) = backward_both(
                max_pool2d_forward(&pool, x.clone()),
                pool.forward(x.clone()),
                "pool forward",
            );
            close(
                x.grad(&g_ours).unwrap(),
                x.grad(&g_theirs).unwrap(),
                "pool gradient",
            );
        }
    }

    #[test]
    fn plain_flex_inputs_run_without_autodiff() {
        let dev = Device::flex();
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init(&dev);
        let x: Tensor<4> = Tensor::random([2, 2, 7, 7], Distribution::Default, &dev);
        close(
            conv2d_forward(&conv, x.clone()),
            conv.forward(x),
            "plain forward",
        );
    }

    #[test]
    fn layers_the_kernel_does_not_cover_fall_back_to_burn() {
        let dev = Device::flex();
        let conv = Conv2dConfig::new([2, 4], [3, 3]).with_groups(2).init(&dev);
        assert!(conv_geometry(&conv, [1, 2, 6, 6]).is_none());
        let x: Tensor<4> = Tensor::random([1, 2, 6, 6], Distribution::Default, &dev);
        close(
            conv2d_forward(&conv, x.clone()),
            conv.forward(x),
            "grouped conv",
        );
    }
}
