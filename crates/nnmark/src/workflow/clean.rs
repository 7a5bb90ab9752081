//! Training a clean (unmarked) model: the owner's model before marking, a reference model for a
//! calibrated null, the evaluation matrix's independent models.

use burn::prelude::Device;

use crate::data::Dataset;
use crate::error::Result;
use crate::model::{Architecture, Model, ModelSpec, Normalization};
use crate::train::{self, TrainConfig, TrainObserver, TrainReport};
use crate::weights::WeightsMeta;

/// What to train.
#[derive(Debug, Clone)]
pub struct CleanTraining<'a> {
    /// Architecture.
    pub arch: Architecture,
    /// Training data.
    pub data: &'a Dataset,
    /// Normalise inputs by the training data's mean and standard deviation.
    pub normalize: bool,
    /// Training recipe; fitted to the architecture (see [`TrainConfig::fitted_to`]).
    pub config: TrainConfig,
    /// Name of the data set, recorded in the weights file.
    pub dataset_label: String,
}

impl<'a> CleanTraining<'a> {
    /// A normalised model of `arch` trained on `data` with `config`.
    pub fn new(
        arch: Architecture,
        data: &'a Dataset,
        config: TrainConfig,
        dataset_label: impl Into<String>,
    ) -> Self {
        CleanTraining {
            arch,
            data,
            normalize: true,
            config,
            dataset_label: dataset_label.into(),
        }
    }

    /// The model's spec: input and classes from the data.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            architecture: self.arch,
            input: self.data.shape,
            num_classes: self.data.num_classes,
            normalization: if self.normalize {
                Normalization::from_dataset(self.data)
            } else {
                Normalization::identity(self.data.shape.channels)
            },
        }
    }
}

/// A trained clean model with the metadata to save it under.
pub struct CleanModel {
    /// The model.
    pub model: Model,
    /// Metadata for its weights file (records the recipe as `train_config`).
    pub meta: WeightsMeta,
    /// The recipe as trained (fitted to the architecture).
    pub config: TrainConfig,
    /// How training went.
    pub report: TrainReport,
}

/// Trains a clean model from a fresh initialisation seeded by the recipe's seed.
pub fn train_clean(
    req: &CleanTraining<'_>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<CleanModel> {
    let config = req.config.clone().fitted_to(req.arch);
    config.validate()?;
    let spec = req.spec();
    let model = Model::seeded(spec.clone(), config.seed, device)?;
    let (model, report) = train::train(model, req.data, &config, device, observer)?;
    let meta = clean_meta(req, &config);
    Ok(CleanModel {
        model,
        meta,
        config,
        report,
    })
}

/// The metadata a clean model's file carries: spec, data set, seed and the recipe.
fn clean_meta(req: &CleanTraining<'_>, config: &TrainConfig) -> WeightsMeta {
    let mut meta = WeightsMeta::new(req.spec(), req.dataset_label.clone(), config.seed);
    meta.extra.insert(
        "train_config".into(),
        serde_json::to_string(config).expect("a training config serialises"),
    );
    meta
}

/// [`train_clean`] for several requests on the same data, trained together where the
/// architectures allow ([`train::train_many`]): each result is the model [`train_clean`]
/// gives for its request.
pub fn train_clean_many(reqs: &[CleanTraining<'_>], device: &Device) -> Result<Vec<CleanModel>> {
    let Some(first) = reqs.first() else {
        return Ok(Vec::new());
    };
    if reqs.iter().any(|r| !std::ptr::eq(r.data, first.data)) {
        return reqs
            .iter()
            .map(|r| train_clean(r, device, &mut crate::train::Silent))
            .collect();
    }
    let jobs = reqs
        .iter()
        .map(|r| {
            let config = r.config.clone().fitted_to(r.arch);
            config.validate()?;
            Ok((Model::seeded(r.spec(), config.seed, device)?, config))
        })
        .collect::<Result<Vec<_>>>()?;
    let configs: Vec<TrainConfig> = jobs.iter().map(|(_, c)| c.clone()).collect();
    train::train_many(jobs, first.data, device)?
        .into_iter()
        .zip(reqs.iter().zip(configs))
        .map(|((model, report), (req, config))| {
            Ok(CleanModel {
                model,
                meta: clean_meta(req, &config),
                config,
                report,
            })
        })
        .collect()
}

/// A clean model trained, evaluated on the test split and written: what `nnmark train` reports.
pub struct TrainedFile {
    /// The training (recipe, report, metadata).
    pub clean: CleanModel,
    /// Test-split accuracy.
    pub test: crate::train::Evaluation,
    /// The weights file.
    pub out: std::path::PathBuf,
    /// Its SHA-256.
    pub sha256: String,
}

/// Trains a clean model, evaluates it on `test`, and writes it (with its test accuracy in the
/// metadata) to `out`.
pub fn train_and_save(
    req: &CleanTraining<'_>,
    test: &Dataset,
    out: &std::path::Path,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<TrainedFile> {
    let clean = train_clean(req, device, observer)?;
    save_trained(clean, test, out)
}

/// [`train_and_save`] for several models at once (one file each, `outs[i]` for `reqs[i]`),
/// trained side by side ([`train_clean_many`]): each file is byte for byte the one
/// [`train_and_save`] writes for its request alone. Nothing is written before every model
/// has trained.
pub fn train_and_save_many(
    reqs: &[CleanTraining<'_>],
    test: &Dataset,
    outs: &[std::path::PathBuf],
    device: &Device,
) -> Result<Vec<TrainedFile>> {
    if reqs.len() != outs.len() {
        return Err(crate::error::Error::invalid(
            "output files",
            outs.len(),
            format!("one per model: {} models", reqs.len()),
        ));
    }
    for (i, out) in outs.iter().enumerate() {
        if outs[..i].contains(out) {
            return Err(crate::error::Error::invalid(
                "output file",
                out.display(),
                "named for two models",
            ));
        }
    }
    train_clean_many(reqs, device)?
        .into_iter()
        .zip(outs)
        .map(|(clean, out)| save_trained(clean, test, out))
        .collect()
}

/// Evaluates a trained model on `test` and writes it, its test accuracy in the metadata.
fn save_trained(
    mut clean: CleanModel,
    test: &Dataset,
    out: &std::path::Path,
) -> Result<TrainedFile> {
    let eval = train::evaluate(&clean.model, test, 256)?;
    clean
        .meta
        .extra
        .insert("test_accuracy".into(), format!("{:.6}", eval.accuracy));
    let sha256 = crate::weights::save(&clean.model, &clean.meta, out)?;
    Ok(TrainedFile {
        clean,
        test: eval,
        out: out.to_path_buf(),
        sha256,
    })
}

impl TrainedFile {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        let (c, r, m) = (&self.clean.config, &self.clean.report, &self.clean.meta);
        serde_json::json!({ "versions": super::render::versions(), "seed": c.seed, "dataset": m.dataset, "model": m.spec.architecture, "config": c, "epochs": r.epochs, "kept_epoch": r.kept_epoch, "stopped_early": r.stopped_early, "test_accuracy": self.test.accuracy, "out": self.out, "sha256": self.sha256 })
    }
}

impl std::fmt::Display for TrainedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, r, m) = (&self.clean.config, &self.clean.report, &self.clean.meta);
        write!(
            f,
            "test accuracy {:.2}% on {} images ({} {}, seed {}, {} epochs{})\nwrote {} (sha256 {})",
            self.test.accuracy * 100.0,
            self.test.examples,
            m.spec.architecture,
            m.dataset,
            c.seed,
            r.epochs.len(),
            if r.stopped_early {
                ", stopped early"
            } else {
                ""
            },
            self.out.display(),
            self.sha256
        )
    }
}
