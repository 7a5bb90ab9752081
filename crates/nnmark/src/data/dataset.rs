//! An in-memory labelled image set with deterministic, seeded shuffling, splitting and batching.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Channels, height and width of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Colour channels (1 for grey).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// A single-channel 28x28 image, the MNIST family's shape.
    pub const MNIST: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };

    /// Values per image.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// Largest image side a shape may name (the IDX reader's limit too): larger ones would ask for
/// gigabytes per batch.
pub const MAX_IMAGE_SIDE: usize = 4096;

impl std::str::FromStr for ImageShape {
    type Err = crate::error::Error;
    /// `CxHxW` (also with `X` or `,`): 1-4 channels, sides of 1 to [`MAX_IMAGE_SIDE`].
    fn from_str(s: &str) -> crate::error::Result<Self> {
        let bad = || {
            crate::error::Error::invalid(
                "image shape",
                s,
                format!(
                    "expected CxHxW with 1-4 channels and sides of 1-{MAX_IMAGE_SIDE}, e.g. 1x28x28"
                ),
            )
        };
        let dims: Vec<usize> = s
            .split(['x', 'X', ','])
            .map(|d| d.trim().parse::<usize>().map_err(|_| bad()))
            .collect::<crate::error::Result<_>>()?;
        match dims[..] {
            [channels, height, width]
                if (1..=4).contains(&channels)
                    && (1..=MAX_IMAGE_SIDE).contains(&height)
                    && (1..=MAX_IMAGE_SIDE).contains(&width) =>
            {
                Ok(ImageShape {
                    channels,
                    height,
                    width,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Labelled images, pixels as `f32` in [0, 1], stored contiguously (N, C, H, W).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where the data came from (shown in errors and recorded in outputs).
    pub name: String,
    /// Shape of every image.
    pub shape: ImageShape,
    /// Number of classes; every label is below it.
    pub num_classes: usize,
    pixels: Vec<f32>,
    labels: Vec<u8>,
}

impl Dataset {
    /// Builds a data set, checking sizes and label range.
    pub fn new(
        name: impl Into<String>,
        shape: ImageShape,
        num_classes: usize,
        pixels: Vec<f32>,
        labels: Vec<u8>,
    ) -> Result<Self> {
        let name = name.into();
        if !(2..=256).contains(&num_classes) {
            return Err(Error::Data {
                source_name: name,
                problem: format!("class count {num_classes} must be between 2 and 256"),
            });
        }
        if pixels.len() != labels.len() * shape.numel() {
            return Err(Error::Data {
                source_name: name,
                problem: format!(
                    "{} labels but {} pixel values ({} per {shape} image expected)",
                    labels.len(),
                    pixels.len(),
                    shape.numel()
                ),
            });
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= num_classes)
        {
            return Err(Error::Data {
                source_name: name,
                problem: format!(
                    "label {l} at index {i} is out of range for {num_classes} classes"
                ),
            });
        }
        Ok(Self {
            name,
            shape,
            num_classes,
            pixels,
            labels,
        })
    }

    /// Builds a data set from 8-bit pixels (scaled to [0, 1]).
    pub fn from_u8(
        name: impl Into<String>,
        shape: ImageShape,
        num_classes: usize,
        pixels: &[u8],
        labels: Vec<u8>,
    ) -> Result<Self> {
        let px = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        Self::new(name, shape, num_classes, px, labels)
    }

    /// The same images with other labels (e.g. a teacher model's predictions for distillation).
    pub fn relabeled(&self, name: impl Into<String>, labels: Vec<u8>) -> Result<Dataset> {
        Dataset::new(
            name,
            self.shape,
            self.num_classes,
            self.pixels.clone(),
            labels,
        )
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All labels in order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// All pixels, (N, C, H, W) row-major.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// Pixels of example `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.shape.numel();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.shape.numel();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            shape: self.shape,
            num_classes: self.num_classes,
            pixels,
            labels,
        }
    }

    /// The first `n` examples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// A permutation of `0..len` determined by `seed` alone.
    pub fn permutation(&self, seed: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx
    }

    /// A copy with the examples in a seeded random order.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        self.subset(&self.permutation(seed))
    }

    /// Stratified split: `fraction` of each class (rounded) goes to the second set, the rest
    /// to the first. Both keep the original relative order within the chosen indices' shuffle.
    pub fn split_stratified(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::invalid(
                "split fraction",
                fraction,
                "must be in [0, 1)",
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut first = Vec::new();
        let mut second = Vec::new();
        for class in 0..self.num_classes {
            let mut idx: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] as usize == class)
                .collect();
            idx.shuffle(&mut rng);
            let k = (idx.len() as f64 * fraction).round() as usize;
            second.extend_from_slice(&idx[..k]);
            first.extend_from_slice(&idx[k..]);
        }
        first.sort_unstable();
        second.sort_unstable();
        Ok((self.subset(&first), self.subset(&second)))
    }

    /// Appends another set of the same shape and class count.
    pub fn concat(&self, other: &Dataset) -> Result<Dataset> {
        if other.shape != self.shape || other.num_classes != self.num_classes {
            return Err(Error::Data {
                source_name: other.name.clone(),
                problem: format!(
                    "cannot join {} images / {} classes with {} images / {} classes of {}",
                    other.shape, other.num_classes, self.shape, self.num_classes, self.name
                ),
            });
        }
        let mut out = self.clone();
        out.pixels.extend_from_slice(&other.pixels);
        out.labels.extend_from_slice(&other.labels);
        Ok(out)
    }

    /// Examples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Index ranges of consecutive batches of `batch_size` (the last may be shorter).
    pub fn batch_ranges(&self, batch_size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let n = self.len();
        let bs = batch_size.max(1);
        (0..n.div_ceil(bs)).map(move |b| b * bs..((b + 1) * bs).min(n))
    }
}

/// A train/test pair of the same data set.
#[derive(Debug, Clone)]
pub struct DataSplit {
    /// Training examples.
    pub train: Dataset,
    /// Held-out test examples.
    pub test: Dataset,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        let shape = ImageShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let px: Vec<f32> = (0..n * 4).map(|i| i as f32).collect();
        let labels = (0..n).map(|i| (i % 3) as u8).collect();
        Dataset::new("toy", shape, 3, px, labels).unwrap()
    }

    #[test]
    fn label_out_of_range_is_rejected() {
        let err = Dataset::new("t", ImageShape::MNIST, 10, vec![0.0; 784], vec![10])
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 10 at index 0"), "{err}");
    }

    #[test]
    fn shuffle_is_seeded_and_split_is_stratified() {
        let d = toy(30);
        assert_eq!(d.permutation(7), d.permutation(7));
        assert_ne!(d.permutation(7), d.permutation(8));
        let (a, b) = d.split_stratified(0.2, 1).unwrap();
        assert_eq!(b.class_counts(), vec![2, 2, 2]);
        assert_eq!(a.len() + b.len(), 30);
        let sh = d.shuffled(3);
        // Images travel with their labels.
        for i in 0..sh.len() {
            let first = sh.image(i)[0] as usize / 4;
            assert_eq!(sh.labels()[i] as usize, first % 3);
        }
        let ranges: Vec<_> = d.batch_ranges(8).collect();
        assert_eq!(ranges.last().unwrap(), &(24..30));
    }
}
