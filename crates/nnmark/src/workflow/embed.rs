//! Embedding a mark as an owner does: choose the starting model, give the scheme the data it
//! declares, train the mark in, check that the marked model proves its own key, and only then
//! write key, model and commitment (in that order).

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde_json::json;

use crate::data::{self, DataSource, DataSplit, Dataset};
use crate::error::{Error, Result};
use crate::model::{Architecture, Model, ModelSpec, Normalization};
use crate::scheme::{EmbedMode, Scheme};
use crate::shadow::{self, ShadowCalibration, ShadowPlan};
use crate::train::{self, TrainConfig, TrainObserver};
use crate::verdict::NullModel;
use crate::watermark::{self, EmbedRequest, Embedded, Provability};

use super::verify::default_commitment_path;

/// What the mark is trained into.
pub enum Start {
    /// Fine-tune this trained clean model.
    FineTune(Model),
    /// Train a new model of this architecture with the mark.
    FromScratch(Architecture),
    /// Train a new model of `arch` on `teacher`'s predictions with the mark.
    Distill {
        /// The trained clean model whose answers label the data.
        teacher: Model,
        /// Architecture of the new model.
        arch: Architecture,
    },
}

impl Start {
    /// The embedding mode this start means.
    pub fn mode(&self) -> EmbedMode {
        match self {
            Start::FineTune(_) => EmbedMode::FineTune,
            Start::FromScratch(_) => EmbedMode::FromScratch,
            Start::Distill { .. } => EmbedMode::Distillation,
        }
    }

    /// Architecture of the marked model.
    pub fn architecture(&self) -> Architecture {
        match self {
            Start::FineTune(m) => m.spec.architecture,
            Start::FromScratch(a) | Start::Distill { arch: a, .. } => *a,
        }
    }
}

/// The base model and teacher of an embedding: the clean model itself when fine-tuning, else
/// a fresh model (seeded by `seed`) normalised by `data`, with the clean model as teacher when
/// distilling.
pub fn start_models(
    start: Start,
    data: &Dataset,
    seed: u64,
    device: &Device,
) -> Result<(Model, Option<Model>)> {
    let fresh = |arch: Architecture| {
        Model::seeded(
            ModelSpec {
                architecture: arch,
                input: data.shape,
                num_classes: data.num_classes,
                normalization: Normalization::from_dataset(data),
            },
            seed,
            device,
        )
    };
    Ok(match start {
        Start::FineTune(m) => (m, None),
        Start::FromScratch(arch) => (fresh(arch)?, None),
        Start::Distill { teacher, arch } => (fresh(arch)?, Some(teacher)),
    })
}

/// The auxiliary data set a scheme declares for an owner's data set (see
/// [`Scheme::aux_data`]), loaded: `name` overrides the scheme's default; None for schemes that
/// need none.
pub fn aux_data_for(
    scheme: &dyn Scheme,
    owner_dataset: &str,
    name: Option<&str>,
    data_dir: Option<&Path>,
) -> Result<Option<Dataset>> {
    // A label may carry a note after the data set's name (`mnist10k (owner 2/3)`).
    let owner_dataset = owner_dataset.split(' ').next().unwrap_or(owner_dataset);
    let Some(default) = scheme.aux_data(owner_dataset) else {
        return match name {
            Some(n) => Err(Error::invalid(
                "auxiliary data",
                n,
                format!("scheme '{}' uses no auxiliary data", scheme.name()),
            )),
            None => Ok(None),
        };
    };
    let name = name.unwrap_or(default);
    let split = data::load(&DataSource::Named(name.to_string()), data_dir).map_err(|e| {
        Error::invalid(
            format!("auxiliary data of scheme '{}'", scheme.name()),
            name,
            e.to_string(),
        )
    })?;
    Ok(Some(split.train))
}

/// When a mark may be written.
#[derive(Debug, Clone, Copy)]
pub struct ProofPolicy {
    /// False-positive rate at which the marked model must prove its own key.
    pub fpr: f64,
    /// Matches required beyond the threshold (default: [`watermark::default_margin`]).
    pub margin: Option<u64>,
    /// Return the mark even when it is not provable (with a warning) instead of refusing.
    pub allow_unprovable: bool,
}

impl Default for ProofPolicy {
    fn default() -> Self {
        ProofPolicy {
            fpr: crate::verdict::DEFAULT_FPR,
            margin: None,
            allow_unprovable: false,
        }
    }
}

/// Everything an owner's embedding needs.
pub struct EmbedJob<'a> {
    /// The scheme.
    pub scheme: &'static dyn Scheme,
    /// Parameter overrides (a JSON object, or null for the defaults).
    pub params: serde_json::Value,
    /// What the mark goes into.
    pub start: Start,
    /// The owner's data (train split to embed with, test split to report accuracy on).
    pub split: &'a DataSplit,
    /// Name of the data set, recorded in the model and key.
    pub dataset_label: String,
    /// Override of the scheme's auxiliary data set (by name).
    pub aux_data: Option<String>,
    /// Folder searched first for named data sets.
    pub data_dir: Option<PathBuf>,
    /// Training recipe (default: [`TrainConfig::default`], or [`TrainConfig::for_mode`] when
    /// fine-tuning); fitted to the architecture.
    pub train: TrainConfig,
    /// When the mark may be returned.
    pub proof: ProofPolicy,
    /// Shadow models that calibrate the key's null (for schemes whose analytic null is not
    /// exact; see [`crate::shadow`]).
    pub shadows: ShadowPlan,
    /// Seed of key generation; None (the default) draws a fresh one from the operating
    /// system, because a trigger set rebuilt from a guessable seed (the training seed, 1) is
    /// known to anyone and proves nothing. Give one only to reproduce a key.
    pub key_seed: Option<u64>,
}

impl<'a> EmbedJob<'a> {
    /// An embedding with the scheme's default parameters and the default recipe for `start`.
    pub fn new(
        scheme: &'static dyn Scheme,
        start: Start,
        split: &'a DataSplit,
        dataset_label: impl Into<String>,
    ) -> Self {
        let train = TrainConfig::for_mode(start.mode() == EmbedMode::FineTune);
        EmbedJob {
            scheme,
            params: serde_json::Value::Null,
            start,
            split,
            dataset_label: dataset_label.into(),
            aux_data: None,
            data_dir: None,
            train,
            proof: ProofPolicy::default(),
            shadows: ShadowPlan::default(),
            key_seed: None,
        }
    }
}

/// A mark embedded and judged provable (or allowed not to be), not yet written.
pub struct EmbedReport {
    /// Scheme name.
    pub scheme: &'static str,
    /// How it went in.
    pub mode: EmbedMode,
    /// The recipe as trained.
    pub config: TrainConfig,
    /// The marked model, its key and commitment, and how training went.
    pub embedded: Embedded,
    /// Test accuracy of the marked model.
    pub test_accuracy: f64,
    /// Whether the marked model proves its own key.
    pub provability: Provability,
    /// The shadow models' answers stored in the key, when it has them.
    pub calibration: Option<ShadowCalibration>,
    /// The null the key is judged against by default.
    pub null: NullModel,
    /// Whether the key seed was drawn from the operating system (true) or given.
    pub key_seed_drawn: bool,
}

/// Embeds a mark and checks that it is provable; refuses (an error saying what to change)
/// when it is not, unless the policy allows it.
pub fn embed(
    job: EmbedJob<'_>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<EmbedReport> {
    let scheme = job.scheme;
    let mode = job.start.mode();
    let config = job.train.fitted_to(job.start.architecture());
    config.validate()?;
    let train_data = &job.split.train;
    let aux = aux_data_for(
        scheme,
        &job.dataset_label,
        job.aux_data.as_deref(),
        job.data_dir.as_deref(),
    )?;
    job.shadows.validate()?;
    let key_seed_drawn = job.key_seed.is_none();
    let key_seed = match job.key_seed {
        Some(s) => s,
        None => watermark::fresh_key_seed()?,
    };
    let (base, teacher) = start_models(job.start, train_data, config.seed, device)?;
    let ctx = AttemptContext {
        scheme,
        mode,
        split: job.split,
        dataset_label: &job.dataset_label,
        aux: aux.as_ref(),
        config: &config,
        proof: &job.proof,
        shadows: &job.shadows,
        key_seed,
    };
    let mut params = job.params.clone();
    let attempt = loop {
        let a = embed_attempt(
            &ctx,
            params,
            base.clone(),
            teacher.clone(),
            device,
            observer,
        )?;
        let p = &a.provability;
        let no_full_match_proves = p.threshold + p.margin > p.queries;
        if !p.provable
            && no_full_match_proves
            && let Some(longer) = scheme.longer_key(&a.embedded.key.meta.params, &job.params)
        {
            tracing::info!(
                "{} key of {} items: {}; trying a longer key",
                scheme.name(),
                p.queries,
                p.advice()
            );
            params = longer;
            continue;
        }
        break a;
    };
    let Attempt {
        embedded,
        test_accuracy,
        calibration,
        null,
        provability,
    } = attempt;
    if !provability.provable {
        let advice = provability.advice();
        if !job.proof.allow_unprovable {
            return Err(Error::Unprovable(format!(
                "{advice}; nothing was written (--allow-unprovable writes it anyway)"
            )));
        }
        tracing::warn!("{advice}; returning it anyway (unprovable marks allowed)");
    }
    Ok(EmbedReport {
        scheme: scheme.name(),
        mode,
        config,
        embedded,
        test_accuracy,
        provability,
        calibration,
        null,
        key_seed_drawn,
    })
}

/// One embedding with its calibration and provability, before the refusal.
struct Attempt {
    embedded: Embedded,
    test_accuracy: f64,
    calibration: Option<ShadowCalibration>,
    null: NullModel,
    provability: Provability,
}

/// What stays the same between attempts at one embedding.
struct AttemptContext<'a> {
    scheme: &'static dyn Scheme,
    mode: EmbedMode,
    split: &'a DataSplit,
    dataset_label: &'a str,
    aux: Option<&'a Dataset>,
    config: &'a TrainConfig,
    proof: &'a ProofPolicy,
    shadows: &'a ShadowPlan,
    key_seed: u64,
}

/// Embeds with `params`, calibrates the key on shadow models where it needs them, and judges
/// whether the marked model proves it.
fn embed_attempt(
    job: &AttemptContext<'_>,
    params: serde_json::Value,
    base: Model,
    teacher: Option<Model>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Attempt> {
    let scheme = job.scheme;
    let train_data = &job.split.train;
    let mut embedded = watermark::embed(
        EmbedRequest {
            scheme,
            params,
            mode: job.mode,
            base,
            teacher,
            data: train_data,
            aux: job.aux,
            train: job.config.clone(),
            key_seed: job.key_seed,
            dataset_name: job.dataset_label.to_string(),
            shadow_cache: job.shadows.cache.clone(),
        },
        device,
        observer,
    )?;
    let test_accuracy = train::evaluate(&embedded.model, &job.split.test, 256)?.accuracy;
    let calibration = if job.shadows.applies_to(scheme, &embedded.key) {
        let c = shadow::calibrate_key(
            &embedded.key,
            scheme,
            job.shadows,
            train_data,
            Some(&job.split.test),
            device,
            observer,
        )?;
        c.store(&mut embedded.key);
        embedded.commitment = crate::commit::KeyCommitment::for_key(&embedded.key)?;
        Some(c)
    } else {
        None
    };
    let null = match watermark::key_null(&embedded.key, scheme) {
        Ok(null) => null,
        // No shadows for a key that needs them (`--shadows 0`): the mark cannot be judged.
        Err(e) if job.proof.allow_unprovable => {
            tracing::warn!(
                "{e}; writing it anyway (unprovable marks allowed), judged here by the analytic null"
            );
            scheme.analytic_null(&embedded.key)
        }
        Err(e) => {
            return Err(Error::Unprovable(format!(
                "{e}; nothing was written (train shadow models with --shadows N)"
            )));
        }
    };
    if embedded.extraction.queries > 0 {
        // The strongest evidence the key can give: every item matching, under its own null.
        let n = embedded.extraction.queries;
        let best = crate::verdict::Verdict::decide(n, n, null.clone(), job.proof.fpr)?;
        embedded
            .key
            .meta
            .notes
            .insert("strongest_p_value".into(), best.p_value.into());
    }
    let margin = job
        .proof
        .margin
        .unwrap_or_else(|| watermark::default_margin(embedded.extraction.queries));
    let provability =
        watermark::provability(null.clone(), &embedded.extraction, job.proof.fpr, margin)?;
    Ok(Attempt {
        embedded,
        test_accuracy,
        calibration,
        null,
        provability,
    })
}

/// Where a mark was written, with what it was.
pub struct WrittenMark<'a> {
    /// The embedding.
    pub report: &'a EmbedReport,
    /// The marked model file.
    pub out: PathBuf,
    /// The key file (mode 0600).
    pub key: PathBuf,
    /// The key's public commitment.
    pub commitment: PathBuf,
    /// SHA-256 of the key file.
    pub key_fingerprint: String,
}

impl EmbedReport {
    /// Writes the key, then the model, then the commitment (default: beside the key): a model
    /// without its key would be unprovable; a key without its model is only a wasted file.
    pub fn write(
        &self,
        out: &Path,
        key: &Path,
        commitment: Option<&Path>,
    ) -> Result<WrittenMark<'_>> {
        let e = &self.embedded;
        e.key.save(key)?;
        crate::io::write_atomic(out, &e.model_bytes, None)?;
        let commitment = commitment.map_or_else(|| default_commitment_path(key), Path::to_path_buf);
        e.commitment.save(&commitment)?;
        Ok(WrittenMark {
            report: self,
            out: out.to_path_buf(),
            key: key.to_path_buf(),
            commitment,
            key_fingerprint: e.key.fingerprint()?,
        })
    }
}

impl WrittenMark<'_> {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        let r = self.report;
        let e = &r.embedded;
        json!({
            "versions": super::render::versions(), "seed": r.config.seed,
            "key_seed": if r.key_seed_drawn { "drawn from the operating system (recorded in the key)" } else { "given" },
            "scheme": r.scheme,
            "mode": r.mode.name(), "params": e.key.meta.params, "config": r.config,
            "epochs": e.report.epochs, "test_accuracy": r.test_accuracy,
            "key_match_rate": e.extraction.match_rate(),
            "clean_key_match_rate": e.clean_extraction.as_ref().map(|c| c.match_rate()),
            "out": self.out, "model_sha256": e.key.meta.model_sha256,
            "key": self.key, "key_fingerprint": self.key_fingerprint,
            "commitment": self.commitment, "commitment_value": e.commitment.commitment,
            "provability": r.provability,
            "null": r.null, "null_rate": r.null.rate().ok(),
            "shadows": r.calibration.as_ref().map(|c| &c.shadows),
        })
    }
}

impl std::fmt::Display for WrittenMark<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.report;
        let (e, proof) = (&r.embedded, &r.provability);
        if let Some(c) = &e.clean_extraction {
            writeln!(
                f,
                "clean model matched {:.1}% of the key before embedding",
                c.match_rate() * 100.0
            )?;
        }
        writeln!(
            f,
            "{} ({}): marked model matches {}/{} key items, test accuracy {:.2}% ({} epochs, training seed {}, key seed {})",
            r.scheme,
            r.mode.name(),
            e.extraction.matches,
            e.extraction.queries,
            r.test_accuracy * 100.0,
            e.report.epochs.len(),
            r.config.seed,
            if r.key_seed_drawn {
                "drawn from the OS"
            } else {
                "given"
            }
        )?;
        if let Some(c) = &r.calibration {
            let m: Vec<String> = c.shadows.iter().map(|s| s.matches.to_string()).collect();
            writeln!(
                f,
                "{} shadow models (no mark) matched {} of {} key items",
                c.shadows.len(),
                m.join(", "),
                c.shadows.first().map_or(0, |s| s.queries)
            )?;
        }
        writeln!(
            f,
            "null match rate {:.4} ({})",
            r.null.rate().unwrap_or(f64::NAN),
            super::render::null_description(&r.null)
        )?;
        writeln!(
            f,
            "{} at fpr {:e}: {} matches against a threshold of {} (margin {} asked), p = {:.3e}",
            if proof.provable {
                "provable"
            } else {
                "NOT PROVABLE"
            },
            proof.fpr,
            proof.matches,
            proof.threshold,
            proof.margin,
            proof.p_value
        )?;
        writeln!(
            f,
            "wrote {} (sha256 {})",
            self.out.display(),
            e.key.meta.model_sha256
        )?;
        writeln!(
            f,
            "wrote key {} (mode 0600, fingerprint {}); keep it secret",
            self.key.display(),
            self.key_fingerprint
        )?;
        write!(
            f,
            "wrote key commitment {} ({}); publish it and timestamp it before the model ships: nnmark timestamp request --commitment {}",
            self.commitment.display(),
            e.commitment.commitment,
            self.commitment.display()
        )
    }
}
