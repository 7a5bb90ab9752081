//! The README's main command: a composition of library calls on the embedded MNIST sample.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::{self, DataSource};
use crate::error::Result;
use crate::model::{Architecture, Model, ModelSpec, Normalization};
use crate::train::{self, TrainConfig, TrainObserver};
use crate::weights::{self, WeightsMeta};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Folder for the files the demo writes.
    pub out_dir: PathBuf,
    /// Training epochs.
    pub epochs: usize,
    /// Seed of everything.
    pub seed: u64,
}

/// What the demo produced.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// nnmark version.
    pub nnmark_version: String,
    /// Seed used.
    pub seed: u64,
    /// Test accuracy of the trained LeNet.
    pub test_accuracy: f64,
    /// Where the model was written.
    pub model_path: PathBuf,
    /// SHA-256 of the model file.
    pub model_sha256: String,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// Trains a LeNet on the embedded MNIST sample, evaluates it and writes it.
pub fn run(
    cfg: &DemoConfig,
    device: &burn::prelude::Device,
    observer: &mut dyn TrainObserver,
) -> Result<DemoReport> {
    let split = data::load(&DataSource::Named("mnist10k".into()), None)?;
    let spec = ModelSpec {
        architecture: Architecture::Lenet,
        input: split.train.shape,
        num_classes: split.train.num_classes,
        normalization: Normalization::from_dataset(&split.train),
    };
    device.seed(cfg.seed);
    let model = Model::new(spec.clone(), device)?;
    let tc = TrainConfig {
        epochs: cfg.epochs,
        seed: cfg.seed,
        ..TrainConfig::default()
    };
    let started = std::time::Instant::now();
    let (model, _report) = train::train(model, &split.train, &tc, device, observer)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let eval = train::evaluate(&model, &split.test, 256)?;
    let model_path = cfg.out_dir.join("lenet-mnist10k.safetensors");
    let meta = WeightsMeta::new(spec, "mnist10k", cfg.seed);
    let model_sha256 = weights::save(&model, &meta, Path::new(&model_path))?;
    Ok(DemoReport {
        nnmark_version: crate::VERSION.into(),
        seed: cfg.seed,
        test_accuracy: eval.accuracy,
        model_path,
        model_sha256,
        train_seconds,
    })
}
