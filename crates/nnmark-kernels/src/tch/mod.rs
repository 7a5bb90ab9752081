//! Custom autodiff operations on `Autodiff<LibTorch>` that call LibTorch's own fused kernels
//! where burn would issue several generic tensor operations: the ReLU's backward, the
//! cross-entropy loss and the linear layer. On CUDA every LibTorch operation is a kernel
//! launch, and at batch 64 a training step is bound by launches and host overhead, so fewer
//! operations per step is the lever (BENCHMARKS.md, "`tch` on an NVIDIA H100"). Each entry
//! point hands its input back when it is not a tracked LibTorch f32 tensor, and the caller
//! (`kernel::relu`, `kernel::cross_entropy`, `kernel::linear`) then uses burn's own op.

// burn marks its LibTorch backend deprecated; it is still the only CUDA path that builds here.
#![allow(deprecated)]

mod linear;
mod loss;
mod relu;

pub(super) use linear::try_linear;
pub(super) use loss::try_cross_entropy;
pub(super) use relu::try_relu;

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::{
    BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    GradientCheckpointingStrategy, TensorMetadata,
};
use burn::prelude::*;
use burn::tensor::DType;

use super::AutodiffTensor;

/// The LibTorch tensor under an autodiff tensor on `Autodiff<LibTorch>` without gradient
/// checkpointing (tracked or not); the tensor back otherwise.
fn autodiff_libtorch<const D: usize>(
    x: Tensor<D>,
) -> std::result::Result<AutodiffTensor<LibTorch>, Box<Tensor<D>>> {
    let d = x.into_dispatch();
    let f32 = d.dtype() == DType::F32;
    let (kind, ctx) = (d.kind, d.autodiff);
    let rebuild =
        |kind, autodiff| Box::new(Tensor::from_dispatch(DispatchTensor { kind, autodiff }));
    match (kind, ctx) {
        (
            DispatchTensorKind::Autodiff(inner),
            ctx @ DispatchAutodiffContext::Enabled(GradientCheckpointingStrategy::Disabled),
        ) if f32 => match *inner {
            DispatchTensorKind::LibTorch(BackendTensor::Autodiff(t)) => Ok(t),
            kind => Err(rebuild(DispatchTensorKind::Autodiff(Box::new(kind)), ctx)),
        },
        (kind, ctx) => Err(rebuild(kind, ctx)),
    }
}

/// The LibTorch tensor of integer class indices (on any LibTorch device, autodiff or not).
fn libtorch_int(t: Tensor<1, Int>) -> Option<TchTensor> {
    match t.into_dispatch().kind {
        DispatchTensorKind::LibTorch(BackendTensor::Int(t)) => Some(t),
        DispatchTensorKind::Autodiff(inner) => match *inner {
            DispatchTensorKind::LibTorch(BackendTensor::Int(t)) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// An autodiff output back into a `Tensor`.
fn tracked<const D: usize>(t: AutodiffTensor<LibTorch>) -> Tensor<D> {
    Tensor::from_primitive::<burn::backend::Autodiff<LibTorch>>(t)
}
