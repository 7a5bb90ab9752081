//! 2-D max pooling on plain NCHW `f32` slices, without padding or dilation: the forward pass
//! records each window's winning position so the backward pass is one scatter per output.
//! Planes (sample × channel) run in parallel; each plane's result depends on nothing else, so
//! the output does not depend on the thread count.

use rayon::prelude::*;

/// Shapes of one pooling: input `[planes, height, width]` (planes = batch × channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Batch size times channels.
    pub planes: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
}

impl PoolGeometry {
    /// Output height (floor mode).
    pub fn out_height(&self) -> usize {
        (self.height - self.kernel[0]) / self.stride[0] + 1
    }

    /// Output width (floor mode).
    pub fn out_width(&self) -> usize {
        (self.width - self.kernel[1]) / self.stride[1] + 1
    }

    /// Whether the window fits and nothing is empty.
    pub fn is_valid(&self) -> bool {
        [self.planes, self.kernel[0], self.kernel[1], self.stride[0], self.stride[1]]
            .iter()
            .all(|&v| v > 0)
            && self.height >= self.kernel[0]
            && self.width >= self.kernel[1]
            // Winner positions are stored as u32 offsets within a plane.
            && self.height * self.width <= u32::MAX as usize
    }

    fn in_len(&self) -> usize {
        self.height * self.width
    }

    fn out_len(&self) -> usize {
        self.out_height() * self.out_width()
    }
}

/// Forward pass: the maxima and, for each, its offset within its input plane. NaN wins (as
/// in PyTorch), and among equal values the first in row-major order.
pub fn forward(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    assert_eq!(x.len(), g.planes * g.in_len(), "max_pool2d input length");
    let (ho, wo) = (g.out_height(), g.out_width());
    let mut out = vec![0.0f32; g.planes * g.out_len()];
    let mut arg = vec![0u32; g.planes * g.out_len()];
    out.par_chunks_mut(g.out_len())
        .zip(arg.par_chunks_mut(g.out_len()))
        .zip(x.par_chunks(g.in_len()))
        .for_each(|((y, a), plane)| {
            for oh in 0..ho {
                for ow in 0..wo {
                    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
                    for i in 0..g.kernel[0] {
                        let row = (oh * g.stride[0] + i) * g.width;
                        for j in 0..g.kernel[1] {
                            let idx = row + ow * g.stride[1] + j;
                            let v = plane[idx];
                            if at == usize::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                                (best, at) = (v, idx);
                            }
                        }
                    }
                    y[oh * wo + ow] = best;
                    a[oh * wo + ow] = at as u32;
                }
            }
        });
    (out, arg)
}

/// Backward pass: each output gradient goes to its window's winner.
pub fn backward(g: &PoolGeometry, winners: &[u32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        g.planes * g.out_len(),
        "max_pool2d output-gradient length"
    );
    assert_eq!(winners.len(), dy.len(), "max_pool2d winner count");
    let mut dx = vec![0.0f32; g.planes * g.in_len()];
    dx.par_chunks_mut(g.in_len())
        .zip(dy.par_chunks(g.out_len()))
        .zip(winners.par_chunks(g.out_len()))
        .for_each(|((plane, d), w)| {
            for (&at, &v) in w.iter().zip(d) {
                plane[at as usize] += v;
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_window_maxima_and_routes_gradients_to_them() {
        let g = PoolGeometry {
            planes: 2,
            height: 4,
            width: 5,
            kernel: [2, 2],
            stride: [2, 2],
        };
        assert_eq!((g.out_height(), g.out_width()), (2, 2));
        #[rustfmt::skip]
        let x = [
            1., 5., 2., 0., 9.,
            3., 4., 8., 1., 9.,
            0., 0., -1., -2., 9.,
            7., 0., -3., -1., 9.,
            // plane 2: a NaN and ties
            f32::NAN, 1., 2., 2., 0.,
            0., 0., 2., 2., 0.,
            -5., -6., 0., 0., 0.,
            -7., -4., 0., 0., 0.,
        ];
        let (y, arg) = forward(&g, &x);
        assert_eq!(&y[..4], &[5., 8., 7., -1.]);
        assert!(y[4].is_nan());
        assert_eq!(&y[5..], &[2., -4., 0.]);
        assert_eq!(arg, vec![1, 7, 15, 12, 0, 2, 16, 12]);
        let dx = backward(&g, &arg, &[1., 2., 3., 4., 5., 6., 7., 8.]);
        let mut expect = vec![0.0; 40];
        for (at, v) in [
            (1, 1.),
            (7, 2.),
            (15, 3.),
            (12, 4.),
            (20, 5.),
            (22, 6.),
            (36, 7.),
            (32, 8.),
        ] {
            expect[at] = v;
        }
        assert_eq!(dx, expect);
    }

    #[test]
    fn overlapping_windows_add_their_gradients() {
        let g = PoolGeometry {
            planes: 1,
            height: 3,
            width: 3,
            kernel: [2, 2],
            stride: [1, 1],
        };
        let x = [0., 0., 0., 0., 9., 0., 0., 0., 0.];
        let (y, arg) = forward(&g, &x);
        assert_eq!(y, vec![9.; 4]);
        assert_eq!(arg, vec![4; 4]);
        let dx = backward(&g, &arg, &[1., 1., 1., 1.]);
        assert_eq!(dx[4], 4.0);
        assert_eq!(dx.iter().sum::<f32>(), 4.0);
    }
}
