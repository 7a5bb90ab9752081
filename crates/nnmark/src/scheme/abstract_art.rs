//! Procedural abstract images for Adi et al.'s trigger set. The paper used 100 abstract
//! pictures; these are drawn from a seed instead, so a key can be regenerated and audited:
//! a gradient background, a stripe or checker texture, a few antialiased shapes (ellipses,
//! rotated rectangles, triangles, rings) and thick Bézier strokes, each in its own colour.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::ImageShape;

struct Canvas {
    shape: ImageShape,
    px: Vec<f32>,
}

impl Canvas {
    /// Blends `colour` (one value per channel) into every pixel by `coverage(x, y)` · `alpha`.
    fn paint(&mut self, colour: &[f32], alpha: f32, coverage: impl Fn(f32, f32) -> f32) {
        let (h, w) = (self.shape.height, self.shape.width);
        for y in 0..h {
            for x in 0..w {
                let cov = coverage(x as f32 + 0.5, y as f32 + 0.5).clamp(0.0, 1.0) * alpha;
                if cov <= 0.0 {
                    continue;
                }
                for (c, &col) in colour.iter().enumerate() {
                    let p = &mut self.px[(c * h + y) * w + x];
                    *p = *p * (1.0 - cov) + col * cov;
                }
            }
        }
    }
}

fn colour(rng: &mut ChaCha8Rng, channels: usize) -> Vec<f32> {
    (0..channels).map(|_| rng.random::<f32>()).collect()
}

/// Coverage of a point at signed distance `d` from an edge (negative inside), antialiased.
fn edge(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

fn dist_to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let (wx, wy) = (p.0 - a.0, p.1 - a.1);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        ((wx * vx + wy * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (wx - t * vx, wy - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// One abstract image, pixels in [0, 1], (C, H, W).
pub(crate) fn abstract_image(rng: &mut ChaCha8Rng, shape: ImageShape) -> Vec<f32> {
    let (w, h, ch) = (shape.width as f32, shape.height as f32, shape.channels);
    let scale = w.min(h);
    let mut canvas = Canvas {
        shape,
        px: vec![0.0; shape.numel()],
    };

    // Background: a linear gradient between two colours in a random direction.
    let (c0, c1) = (colour(rng, ch), colour(rng, ch));
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    for c in 0..ch {
        for y in 0..shape.height {
            for x in 0..shape.width {
                let t = (((x as f32 / w - 0.5) * ca + (y as f32 / h - 0.5) * sa) + 0.71) / 1.42;
                canvas.px[(c * shape.height + y) * shape.width + x] = c0[c] * (1.0 - t) + c1[c] * t;
            }
        }
    }

    // Texture: stripes or a checker, partly transparent.
    let freq: f32 = rng.random_range(0.15..0.9);
    let theta: f32 = rng.random_range(0.0..std::f32::consts::PI);
    let checker = rng.random_bool(0.4);
    let tex_col = colour(rng, ch);
    let tex_alpha = rng.random_range(0.3..0.8);
    let (ct, st) = (theta.cos(), theta.sin());
    canvas.paint(&tex_col, tex_alpha, |x, y| {
        let u = x * ct + y * st;
        let v = -x * st + y * ct;
        let s = (u * freq).sin();
        let s = if checker { s * (v * freq).sin() } else { s };
        if s > 0.0 { 1.0 } else { 0.0 }
    });

    // Shapes.
    for _ in 0..rng.random_range(2..=4) {
        let col = colour(rng, ch);
        let alpha = rng.random_range(0.6..1.0);
        let (cx, cy) = (
            rng.random_range(0.1..0.9) * w,
            rng.random_range(0.1..0.9) * h,
        );
        let (rx, ry) = (
            rng.random_range(0.08..0.35) * scale,
            rng.random_range(0.08..0.35) * scale,
        );
        let rot: f32 = rng.random_range(0.0..std::f32::consts::PI);
        let (cr, sr) = (rot.cos(), rot.sin());
        let local = move |x: f32, y: f32| {
            let (dx, dy) = (x - cx, y - cy);
            (dx * cr + dy * sr, -dx * sr + dy * cr)
        };
        match rng.random_range(0..4) {
            0 => canvas.paint(&col, alpha, |x, y| {
                let (u, v) = local(x, y);
                let r = ((u / rx).powi(2) + (v / ry).powi(2)).sqrt();
                edge((r - 1.0) * rx.min(ry))
            }),
            1 => canvas.paint(&col, alpha, |x, y| {
                let (u, v) = local(x, y);
                edge((u.abs() - rx).max(v.abs() - ry))
            }),
            2 => {
                let pts: Vec<(f32, f32)> = (0..3)
                    .map(|k| {
                        let a = rot + k as f32 * std::f32::consts::TAU / 3.0;
                        (cx + rx * a.cos(), cy + rx * a.sin())
                    })
                    .collect();
                canvas.paint(&col, alpha, |x, y| {
                    // Inside when on the same side of all three edges.
                    let side = |a: (f32, f32), b: (f32, f32)| {
                        (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0)
                    };
                    let s = [
                        side(pts[0], pts[1]),
                        side(pts[1], pts[2]),
                        side(pts[2], pts[0]),
                    ];
                    let inside = s.iter().all(|&v| v >= 0.0) || s.iter().all(|&v| v <= 0.0);
                    if inside {
                        1.0
                    } else {
                        let d = dist_to_segment((x, y), pts[0], pts[1])
                            .min(dist_to_segment((x, y), pts[1], pts[2]))
                            .min(dist_to_segment((x, y), pts[2], pts[0]));
                        edge(d)
                    }
                })
            }
            _ => {
                let thickness = rng.random_range(0.04..0.12) * scale;
                canvas.paint(&col, alpha, |x, y| {
                    let (u, v) = local(x, y);
                    let r = (u * u + v * v).sqrt();
                    edge((r - rx).abs() - thickness)
                })
            }
        }
    }

    // Strokes: thick quadratic Bézier curves.
    for _ in 0..rng.random_range(1..=3) {
        let col = colour(rng, ch);
        let mut p = || (rng.random_range(0.0..w), rng.random_range(0.0..h));
        let (a, b, c) = (p(), p(), p());
        let thickness = rng.random_range(0.03..0.09) * scale;
        let pts: Vec<(f32, f32)> = (0..=16)
            .map(|i| {
                let t = i as f32 / 16.0;
                let s = 1.0 - t;
                (
                    s * s * a.0 + 2.0 * s * t * b.0 + t * t * c.0,
                    s * s * a.1 + 2.0 * s * t * b.1 + t * t * c.1,
                )
            })
            .collect();
        canvas.paint(&col, 1.0, |x, y| {
            let d = pts
                .windows(2)
                .map(|s| dist_to_segment((x, y), s[0], s[1]))
                .fold(f32::INFINITY, f32::min);
            edge(d - thickness)
        });
    }
    canvas.px
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn images_are_structured_varied_and_reproducible() {
        let shape = ImageShape::MNIST;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let imgs: Vec<Vec<f32>> = (0..20).map(|_| abstract_image(&mut rng, shape)).collect();
        let again = abstract_image(&mut ChaCha8Rng::seed_from_u64(7), shape);
        assert_eq!(imgs[0], again);
        for img in &imgs {
            assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
            // Structure, not noise: neighbouring pixels are far more alike than random pairs.
            let neighbour: f32 = img
                .chunks(28)
                .flat_map(|row| row.windows(2).map(|p| (p[0] - p[1]).abs()))
                .sum::<f32>()
                / (28.0 * 27.0);
            let spread =
                img.iter().cloned().fold(0f32, f32::max) - img.iter().cloned().fold(1f32, f32::min);
            assert!(spread > 0.3, "too flat: {spread}");
            assert!(
                neighbour < 0.2 * spread,
                "too noisy: {neighbour} vs {spread}"
            );
        }
        // Different images differ substantially.
        let d: f32 = imgs[0]
            .iter()
            .zip(&imgs[1])
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / 784.0;
        assert!(d > 0.05, "{d}");
    }
}
