//! The README's main command: a composition of library calls on the embedded MNIST sample:
//! train a clean model, watermark it, verify the watermarked model and an independent one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::{self, DataSource};
use crate::error::Result;
use crate::model::Architecture;
use crate::scheme::{self, Suspect};
use crate::train::{self, TrainConfig, TrainObserver};
use crate::watermark::{self, Verification};
use crate::weights;
use crate::workflow::{self, CleanTraining, EmbedJob, Start};

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
    /// burn version.
    pub burn_version: String,
    /// Seed used.
    pub seed: u64,
    /// Test accuracy of the clean LeNet.
    pub test_accuracy: f64,
    /// Where the clean model was written.
    pub model_path: PathBuf,
    /// SHA-256 of the clean model file.
    pub model_sha256: String,
    /// Epochs the clean model was trained.
    pub epochs: usize,
    /// Seconds spent training the clean model.
    pub train_seconds: f64,
    /// Test accuracy of the watermarked model (Adi et al., fine-tuned in).
    pub marked_test_accuracy: f64,
    /// Where the watermarked model was written.
    pub marked_model_path: PathBuf,
    /// Where its key was written (mode 0600).
    pub key_path: PathBuf,
    /// Where the public verification key was written.
    pub vk_path: PathBuf,
    /// Where the key's public commitment was written (publish and timestamp it).
    pub commitment_path: PathBuf,
    /// Verification of the watermarked model.
    pub marked: Verification,
    /// Verification of an independently trained model (other seed): must not be accused.
    pub independent: Verification,
}

/// Trains a LeNet on the embedded MNIST sample, watermarks it (Adi et al., by fine-tuning),
/// writes model, key and verification key, and verifies the marked model and an independent
/// one.
pub fn run(
    cfg: &DemoConfig,
    device: &burn::prelude::Device,
    observer: &mut dyn TrainObserver,
) -> Result<DemoReport> {
    let split = data::load(&DataSource::Named("mnist10k".into()), None)?;
    let tc = TrainConfig {
        epochs: cfg.epochs,
        seed: cfg.seed,
        ..TrainConfig::default()
    };
    let training = CleanTraining::new(Architecture::Lenet, &split.train, tc.clone(), "mnist10k");
    let started = std::time::Instant::now();
    let clean = workflow::train_clean(&training, device, observer)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let eval = train::evaluate(&clean.model, &split.test, 256)?;
    let model_path = cfg.out_dir.join("lenet-mnist10k.safetensors");
    let model_sha256 = weights::save(&clean.model, &clean.meta, Path::new(&model_path))?;

    // Watermark it: Adi et al.'s trigger set, fine-tuned in. The 8k sample has only 125
    // batches per epoch, so 24 trigger items ride along in each (the paper's 2 suit 60k images).
    let adi = scheme::by_name("adi")?;
    let mut job = EmbedJob::new(adi, Start::FineTune(clean.model), &split, "mnist10k");
    job.params = serde_json::json!({ "per_batch": 24 });
    // The demo is reproducible from its one seed; an owner's `nnmark embed` draws the key's.
    job.key_seed = Some(cfg.seed);
    job.train = TrainConfig {
        epochs: 3,
        optimizer: crate::train::OptimizerConfig::sgd_momentum(0.02),
        ..tc.clone()
    };
    let report = workflow::embed(job, device, observer)?;
    let key_path = cfg.out_dir.join("owner.nnkey");
    let marked_model_path = cfg.out_dir.join("lenet-mnist10k-marked.safetensors");
    let written = report.write(&marked_model_path, &key_path, None)?;
    let commitment_path = written.commitment;
    let e = &report.embedded;
    let vk_path = cfg.out_dir.join("owner-vk.json");
    crate::commit::VerificationKey::from_key(&e.key)?.save(&vk_path)?;
    let marked_test_accuracy = report.test_accuracy;
    let null = adi.analytic_null(&e.key);
    let marked = watermark::verify(
        &e.key,
        adi,
        &mut Suspect::Model(&e.model),
        "watermarked model",
        null.clone(),
        watermark::DEFAULT_FPR,
    )?;

    // An independent model (another seed) must not be accused.
    let other =
        watermark::train_references(&training.spec(), &split.train, &tc, &[cfg.seed + 1], device)?
            .remove(0);
    let independent = watermark::verify(
        &e.key,
        adi,
        &mut Suspect::Model(&other),
        "independent model",
        null,
        watermark::DEFAULT_FPR,
    )?;
    Ok(DemoReport {
        nnmark_version: crate::VERSION.into(),
        burn_version: crate::BURN_VERSION.into(),
        seed: cfg.seed,
        test_accuracy: eval.accuracy,
        model_path,
        model_sha256,
        epochs: cfg.epochs,
        train_seconds,
        marked_test_accuracy,
        marked_model_path,
        key_path,
        vk_path,
        commitment_path,
        marked,
        independent,
    })
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "clean LeNet: test accuracy {:.2}% after {} epochs ({:.1} s); wrote {}",
            self.test_accuracy * 100.0,
            self.epochs,
            self.train_seconds,
            self.model_path.display()
        )?;
        writeln!(
            f,
            "watermarked (adi, fine-tuned): test accuracy {:.2}%; wrote {}, key {} (secret), verification key {}, key commitment {} (publish and timestamp it)",
            self.marked_test_accuracy * 100.0,
            self.marked_model_path.display(),
            self.key_path.display(),
            self.vk_path.display(),
            self.commitment_path.display()
        )?;
        for (i, v) in [&self.marked, &self.independent].into_iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "verify {}: {}/{} trigger items match, p = {:.2e} at fpr 1e-6 -> {}",
                v.suspect,
                v.verdict.matches,
                v.verdict.queries,
                v.verdict.p_value,
                if v.verdict.watermarked {
                    "WATERMARKED"
                } else {
                    "not watermarked"
                }
            )?;
        }
        Ok(())
    }
}
