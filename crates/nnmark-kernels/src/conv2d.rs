//! 2-D convolution on plain NCHW `f32` slices: im2col into a per-thread buffer and one GEMM
//! (the `gemm` crate, which burn's flex backend also uses) per sample for the forward pass, the
//! weight gradient and the input gradient.
//!
//! Why not burn's own: flex runs `conv2d` through its generic 3-D convolution in NHWC, and burn
//! derives the weight gradient as a second convolution over batch-swapped tensors and the input
//! gradient as a transposed 3-D convolution. For LeNet's tiny channel counts that data
//! movement costs more than the arithmetic (BENCHMARKS.md, "Where the LeNet time goes").
//!
//! Determinism: every output element is summed in a fixed order that does not depend on the
//! number of threads or on work stealing (the weight gradient sums fixed batch chunks, then the
//! chunks in order), so the same seed still gives the same weights file.

use rayon::prelude::*;

/// Shapes of one convolution: input `[batch, channels_in, height, width]`, weight
/// `[channels_out, channels_in, kernel]`, output `[batch, channels_out, out_height, out_width]`.
/// Dilation 1, one group, the same padding on both sides of each axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Samples in the batch.
    pub batch: usize,
    /// Input channels.
    pub channels_in: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding on each side, along height and width.
    pub padding: [usize; 2],
}

/// The fixed number of batch chunks the weight gradient is split into (see the module docs).
const WEIGHT_GRAD_PARTS: usize = 16;

impl ConvGeometry {
    /// Output height.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding[0] - self.kernel[0]) / self.stride[0] + 1
    }

    /// Output width.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding[1] - self.kernel[1]) / self.stride[1] + 1
    }

    /// The GEMM's inner dimension: one im2col column's length.
    fn k(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per channel.
    fn l(&self) -> usize {
        self.out_height() * self.out_width()
    }

    fn in_len(&self) -> usize {
        self.channels_in * self.height * self.width
    }

    fn out_len(&self) -> usize {
        self.channels_out * self.l()
    }

    /// A 1x1 convolution with stride 1 and no padding reads the input as it lies.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Whether the shapes make sense (kernel fits the padded input, nothing empty).
    pub fn is_valid(&self) -> bool {
        let nonzero = [
            self.batch,
            self.channels_in,
            self.height,
            self.width,
            self.channels_out,
            self.kernel[0],
            self.kernel[1],
            self.stride[0],
            self.stride[1],
        ];
        nonzero.iter().all(|&v| v > 0)
            && self.height + 2 * self.padding[0] >= self.kernel[0]
            && self.width + 2 * self.padding[1] >= self.kernel[1]
    }

    /// The range of output columns `ow` whose input column `ow*stride + j - pad` lies inside
    /// the image, for kernel column `j`.
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        let (s, p, w, wo) = (
            self.stride[1],
            self.padding[1],
            self.width,
            self.out_width(),
        );
        let lo = if j >= p { 0 } else { (p - j).div_ceil(s) };
        let hi = if w + p > j {
            (w + p - j).div_ceil(s)
        } else {
            0
        };
        (lo.min(wo), hi.clamp(lo.min(wo), wo))
    }

    /// The input row read by output row `oh` for kernel row `i`, if inside the image.
    fn input_row(&self, oh: usize, i: usize) -> Option<usize> {
        let ih = (oh * self.stride[0] + i).checked_sub(self.padding[0])?;
        (ih < self.height).then_some(ih)
    }
}

/// Unfolds one sample `x` (`[C, H, W]`) into `cols` (`[C*kh*kw, Ho*Wo]`, row-major).
fn im2col(g: &ConvGeometry, x: &[f32], cols: &mut [f32]) {
    let (l, wo, ho) = (g.l(), g.out_width(), g.out_height());
    let [kh, kw] = g.kernel;
    let (sw, pw) = (g.stride[1], g.padding[1]);
    for c in 0..g.channels_in {
        let plane = &x[c * g.height * g.width..][..g.height * g.width];
        for i in 0..kh {
            for j in 0..kw {
                let row = &mut cols[((c * kh + i) * kw + j) * l..][..l];
                let (lo, hi) = g.valid_cols(j);
                for oh in 0..ho {
                    let dst = &mut row[oh * wo..][..wo];
                    let Some(ih) = g.input_row(oh, i) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[ih * g.width..][..g.width];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if sw == 1 {
                        let start = lo + j - pw;
                        dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (ow, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[(lo + ow) * sw + j - pw];
                        }
                    }
                }
            }
        }
    }
}

/// Folds `cols` (`[C*kh*kw, Ho*Wo]`) back onto one sample's input gradient `dx` (`[C, H, W]`),
/// adding overlapping contributions. `dx` must start zeroed.
fn col2im(g: &ConvGeometry, cols: &[f32], dx: &mut [f32]) {
    let (l, wo, ho) = (g.l(), g.out_width(), g.out_height());
    let [kh, kw] = g.kernel;
    let (sw, pw) = (g.stride[1], g.padding[1]);
    for c in 0..g.channels_in {
        let plane = &mut dx[c * g.height * g.width..][..g.height * g.width];
        for i in 0..kh {
            for j in 0..kw {
                let row = &cols[((c * kh + i) * kw + j) * l..][..l];
                let (lo, hi) = g.valid_cols(j);
                for oh in 0..ho {
                    let Some(ih) = g.input_row(oh, i) else {
                        continue;
                    };
                    let src = &row[oh * wo..][..wo];
                    let dst = &mut plane[ih * g.width..][..g.width];
                    if sw == 1 {
                        let start = lo + j - pw;
                        for (d, s) in dst[start..start + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += s;
                        }
                    } else {
                        for (ow, s) in src[lo..hi].iter().enumerate() {
                            dst[(lo + ow) * sw + j - pw] += s;
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each matrix given by its column and row strides.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_cs, lhs_rs): (isize, isize),
    rhs: &[f32],
    (rhs_cs, rhs_rs): (isize, isize),
) {
    debug_assert!(dst.len() >= m * n);
    // SAFETY: the strides address elements inside the three slices: the callers pass row-major
    // (or transposed row-major) views whose extents are the slices' lengths, asserted above
    // for `dst` and by construction of the buffers for `lhs` and `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Forward pass: `y[n] = W · im2col(x[n]) + b`, samples in parallel.
pub fn forward(g: &ConvGeometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (k, l, co) = (g.k(), g.l(), g.channels_out);
    assert_eq!(x.len(), g.batch * g.in_len(), "conv2d input length");
    assert_eq!(weight.len(), co * k, "conv2d weight length");
    let mut out = vec![0.0f32; g.batch * g.out_len()];
    let pointwise = g.is_pointwise();
    out.par_chunks_mut(g.out_len())
        .zip(x.par_chunks(g.in_len()))
        .for_each_init(
            || vec![0.0f32; if pointwise { 0 } else { k * l }],
            |cols, (y, xn)| {
                if let Some(b) = bias {
                    for (row, &bo) in y.chunks_mut(l).zip(b) {
                        row.fill(bo);
                    }
                }
                let rhs: &[f32] = if pointwise {
                    xn
                } else {
                    im2col(g, xn, cols);
                    cols
                };
                matmul(
                    (co, l, k),
                    y,
                    bias.is_some(),
                    weight,
                    (1, k as isize),
                    rhs,
                    (1, l as isize),
                );
            },
        );
    out
}

/// Weight and bias gradients: `dW = Σ_n dy[n] · im2col(x[n])ᵀ`, `db = Σ_n Σ_l dy[n]`.
pub(crate) fn backward_weight(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (k, l, co) = (g.k(), g.l(), g.channels_out);
    assert_eq!(x.len(), g.batch * g.in_len(), "conv2d input length");
    assert_eq!(
        dy.len(),
        g.batch * g.out_len(),
        "conv2d output-gradient length"
    );
    let chunk = g.batch.div_ceil(WEIGHT_GRAD_PARTS);
    let pointwise = g.is_pointwise();
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..g.batch.div_ceil(chunk))
        .into_par_iter()
        .map(|part| {
            let mut dw = vec![0.0f32; co * k];
            let mut db = vec![0.0f32; co];
            let mut cols = vec![0.0f32; if pointwise { 0 } else { k * l }];
            for n in part * chunk..((part + 1) * chunk).min(g.batch) {
                let xn = &x[n * g.in_len()..][..g.in_len()];
                let dyn_ = &dy[n * g.out_len()..][..g.out_len()];
                let rhs: &[f32] = if pointwise {
                    xn
                } else {
                    im2col(g, xn, &mut cols);
                    &cols
                };
                // dW (co×k) += dy[n] (co×l) · colsᵀ (l×k)
                matmul(
                    (co, k, l),
                    &mut dw,
                    true,
                    dyn_,
                    (1, l as isize),
                    rhs,
                    (l as isize, 1),
                );
                for (acc, row) in db.iter_mut().zip(dyn_.chunks(l)) {
                    *acc += row.iter().sum::<f32>();
                }
            }
            (dw, db)
        })
        .collect();
    let mut parts = partials.into_iter();
    let (mut dw, mut db) = parts
        .next()
        .unwrap_or_else(|| (vec![0.0; co * k], vec![0.0; co]));
    for (pw, pb) in parts {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// Input gradient: `dx[n] = col2im(Wᵀ · dy[n])`, samples in parallel.
pub(crate) fn backward_input(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, l, co) = (g.k(), g.l(), g.channels_out);
    assert_eq!(weight.len(), co * k, "conv2d weight length");
    assert_eq!(
        dy.len(),
        g.batch * g.out_len(),
        "conv2d output-gradient length"
    );
    let mut dx = vec![0.0f32; g.batch * g.in_len()];
    let pointwise = g.is_pointwise();
    dx.par_chunks_mut(g.in_len())
        .zip(dy.par_chunks(g.out_len()))
        .for_each_init(
            || vec![0.0f32; if pointwise { 0 } else { k * l }],
            |cols, (dxn, dyn_)| {
                let dst: &mut [f32] = if pointwise { dxn } else { cols };
                // dcols (k×l) = Wᵀ (k×co) · dy[n] (co×l)
                matmul(
                    (k, l, co),
                    dst,
                    false,
                    weight,
                    (k as isize, 1),
                    dyn_,
                    (1, l as isize),
                );
                if !pointwise {
                    col2im(g, cols, dxn);
                }
            },
        );
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct-loop convolution, the reference the GEMM version must match.
    fn naive_forward(g: &ConvGeometry, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let (ho, wo) = (g.out_height(), g.out_width());
        let [kh, kw] = g.kernel;
        let mut y = vec![0.0; g.batch * g.channels_out * ho * wo];
        for n in 0..g.batch {
            for o in 0..g.channels_out {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let mut acc = b[o];
                        for c in 0..g.channels_in {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let ih =
                                        (oh * g.stride[0] + i) as isize - g.padding[0] as isize;
                                    let iw =
                                        (ow * g.stride[1] + j) as isize - g.padding[1] as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= g.height as isize
                                        || iw >= g.width as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * g.channels_in + c) * g.height + ih as usize)
                                        * g.width
                                        + iw as usize;
                                    acc += x[xi] * w[((o * g.channels_in + c) * kh + i) * kw + j];
                                }
                            }
                        }
                        y[((n * g.channels_out + o) * ho + oh) * wo + ow] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    fn geometries() -> Vec<ConvGeometry> {
        let g = |batch, ci, h, w, co, k: usize, s: usize, p: usize| ConvGeometry {
            batch,
            channels_in: ci,
            height: h,
            width: w,
            channels_out: co,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        };
        vec![
            g(3, 1, 28, 28, 6, 5, 1, 2),  // LeNet conv1
            g(2, 6, 14, 14, 16, 5, 1, 0), // LeNet conv2
            g(2, 4, 9, 7, 5, 3, 2, 1),    // strided, non-square input (ResNet downsampling)
            g(2, 4, 8, 8, 3, 1, 2, 0),    // strided 1x1 shortcut
            g(2, 4, 6, 6, 3, 1, 1, 0),    // pointwise
            g(1, 2, 3, 3, 2, 5, 1, 2),    // kernel wider than the image
        ]
    }

    #[test]
    fn forward_matches_direct_loops() {
        for g in geometries() {
            assert!(g.is_valid(), "{g:?}");
            let x = values(g.batch * g.in_len(), 1);
            let w = values(g.channels_out * g.k(), 2);
            let b = values(g.channels_out, 3);
            let fast = forward(&g, &x, &w, Some(&b));
            let slow = naive_forward(&g, &x, &w, &b);
            for (a, e) in fast.iter().zip(&slow) {
                assert!((a - e).abs() < 1e-4, "{g:?}: {a} vs {e}");
            }
        }
    }

    /// The gradients are the adjoints of the forward map: for a linear map y = A(x, W),
    /// ⟨dy, y⟩ = ⟨dx, x⟩ = ⟨dW, W⟩ (no bias), which pins both backward passes.
    #[test]
    fn gradients_are_adjoint_to_the_forward_pass() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
        for g in geometries() {
            let x = values(g.batch * g.in_len(), 4);
            let w = values(g.channels_out * g.k(), 5);
            let dy = values(g.batch * g.out_len(), 6);
            let y = forward(&g, &x, &w, None);
            let (dw, db) = backward_weight(&g, &x, &dy);
            let dx = backward_input(&g, &w, &dy);
            let lhs = dot(&dy, &y);
            let tol = 1e-3 * lhs.abs().max(1.0);
            assert!((dot(&dx, &x) - lhs).abs() < tol, "{g:?}: input adjoint");
            assert!((dot(&dw, &w) - lhs).abs() < tol, "{g:?}: weight adjoint");
            for (o, d) in db.iter().enumerate() {
                let expect: f32 = (0..g.batch)
                    .map(|n| {
                        dy[n * g.out_len() + o * g.l()..][..g.l()]
                            .iter()
                            .sum::<f32>()
                    })
                    .sum();
                assert!((d - expect).abs() < 1e-3, "{g:?}: bias gradient");
            }
        }
    }
}
