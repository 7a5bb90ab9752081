//! The owner's workflows over any [`Scheme`]: embed a mark (key generation + embedding, producing
//! the marked model's bytes and the key file), verify a suspect against a key, and calibrate the
//! null model on independent reference models.

use std::collections::BTreeMap;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::keyfile::{KEY_FORMAT_VERSION, KeyFile, KeyMeta, now_rfc3339};
use crate::model::Model;
use crate::scheme::{self, EmbedContext, EmbedMode, Extraction, KeygenContext, Scheme, Suspect};
use crate::train::{self, TrainConfig, TrainObserver, TrainReport};
use crate::verdict::{NullModel, Verdict};
use crate::weights::{self, WeightsMeta};

/// Default false-positive rate of a verification.
pub const DEFAULT_FPR: f64 = 1e-6;
/// Default confidence of the calibrated null's upper bound.
pub const DEFAULT_CALIBRATION_CONFIDENCE: f64 = 0.99;

/// What to embed, into what, with what data.
pub struct EmbedRequest<'a> {
    /// The scheme.
    pub scheme: &'a dyn Scheme,
    /// Parameter overrides (a JSON object, or null for the paper's defaults).
    pub params: serde_json::Value,
    /// From scratch or by fine-tuning.
    pub mode: EmbedMode,
    /// A freshly initialised model (from scratch, distillation) or the trained clean model
    /// (fine-tune).
    pub base: Model,
    /// The trained clean model whose predictions label the data (distillation only).
    pub teacher: Option<Model>,
    /// The owner's training data.
    pub data: &'a Dataset,
    /// Data from another distribution, for schemes that need it (Zhang's unrelated triggers).
    pub aux: Option<&'a Dataset>,
    /// Training of the embedding run (initialisation, data order, dropout).
    pub train: TrainConfig,
    /// Seed of key generation: trigger images and labels, the scheme's random draws, the
    /// shadow models' recipes. Anyone who knows it and the public settings can rebuild the
    /// trigger set, so an owner's key takes a fresh one from [`fresh_key_seed`]; tests and
    /// the evaluation matrix fix it to be reproducible. Recorded in the key.
    pub key_seed: u64,
    /// Name of the data set, recorded in the model and the key.
    pub dataset_name: String,
    /// Folder of cached shadow models, for schemes that train selection shadows while
    /// generating keys (None: train them afresh).
    pub shadow_cache: Option<std::path::PathBuf>,
}

/// The result of embedding.
pub struct Embedded {
    /// The marked model.
    pub model: Model,
    /// Its weights file bytes (what the key's fingerprint refers to).
    pub model_bytes: Vec<u8>,
    /// The key (not yet written).
    pub key: KeyFile,
    /// The key's public commitment (not yet written): publish and timestamp it before the
    /// model ships.
    pub commitment: crate::commit::KeyCommitment,
    /// How the embedding run went.
    pub report: TrainReport,
    /// The marked model on its own key.
    pub extraction: Extraction,
    /// The clean model on the key before embedding (fine-tune mode).
    pub clean_extraction: Option<Extraction>,
}

/// A fresh key-generation seed from the operating system's random source (63 bits, so that
/// it survives JSON and Python integers unchanged).
pub fn fresh_key_seed() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| {
        Error::invalid(
            "key seed",
            "operating system random source",
            format!("unavailable: {e}"),
        )
    })?;
    Ok(u64::from_le_bytes(b) >> 1)
}

/// Generates a key and embeds it.
pub fn embed(
    req: EmbedRequest<'_>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Embedded> {
    req.train.validate()?;
    req.base.check_data(req.data)?;
    let scheme = req.scheme;
    let params = scheme.params(&req.params)?;
    let spec = req.base.spec.clone();
    let seed = req.key_seed;
    // Distillation trains on the teacher's answers instead of the true labels.
    let distilled;
    let data = match (req.mode, &req.teacher) {
        (EmbedMode::Distillation, Some(teacher)) => {
            if teacher.spec.input != spec.input || teacher.spec.num_classes != spec.num_classes {
                return Err(Error::invalid(
                    "teacher model",
                    teacher.spec.architecture,
                    format!(
                        "takes {} inputs with {} classes; the student takes {} with {}",
                        teacher.spec.input, teacher.spec.num_classes, spec.input, spec.num_classes
                    ),
                ));
            }
            let labels = train::predict(teacher, req.data.pixels(), 256)
                .into_iter()
                .map(|l| l as u8)
                .collect();
            distilled = req
                .data
                .relabeled(format!("{} (teacher labels)", req.data.name), labels)?;
            &distilled
        }
        (EmbedMode::Distillation, None) => {
            return Err(Error::invalid(
                "embedding mode",
                "distillation",
                "needs the trained clean model as teacher",
            ));
        }
        _ => req.data,
    };
    let clean = match req.mode {
        EmbedMode::FineTune => Some(&req.base),
        EmbedMode::Distillation => req.teacher.as_ref(),
        EmbedMode::FromScratch => None,
    };
    let material = scheme.keygen(&KeygenContext {
        data,
        spec: &spec,
        clean,
        external: None,
        aux: req.aux,
        params: &params,
        seed,
        device,
        shadow_cache: req.shadow_cache.as_deref(),
    })?;
    let params = material.params.clone().unwrap_or(params);
    let mut key = KeyFile {
        meta: KeyMeta {
            format: "nnmark-key".into(),
            version: KEY_FORMAT_VERSION,
            scheme: scheme.name().into(),
            params: params.clone(),
            spec: spec.clone(),
            model_sha256: String::new(),
            dataset: req.dataset_name.clone(),
            embed_mode: req.mode.name().into(),
            seed,
            nnmark_version: crate::VERSION.into(),
            burn_version: crate::BURN_VERSION.into(),
            created: now_rfc3339(),
            spent: Vec::new(),
            reveals: Vec::new(),
            commitment_salt: None,
            notes: BTreeMap::new(),
        },
        triggers: material.triggers.clone(),
        nonces: material.nonces.clone(),
        extra: material.extra.clone(),
    };
    let clean_extraction = match clean {
        Some(c) => Some(scheme.extract(&key, &mut Suspect::Model(c))?),
        None => None,
    };
    let (model, report) = scheme.embed(
        EmbedContext {
            base: req.base,
            mode: req.mode,
            data,
            train: &req.train,
            params: &params,
            device,
        },
        &material,
        observer,
    )?;
    let mut wmeta = WeightsMeta::new(spec, req.dataset_name, req.train.seed);
    wmeta.extra.insert(
        "train_config".into(),
        serde_json::to_string(&req.train).expect("serialises"),
    );
    let model_bytes = weights::to_bytes(&model, &wmeta)?;
    key.meta.model_sha256 = crate::io::sha256_hex(&model_bytes);
    let extraction = scheme.extract(&key, &mut Suspect::Model(&model))?;
    let analytic_null = scheme.analytic_null(&key);
    let notes = &mut key.meta.notes;
    notes.insert("train_seed".into(), req.train.seed.into());
    notes.insert("embed_epochs".into(), report.epochs.len().into());
    notes.insert("embed_steps".into(), report.steps.into());
    notes.insert("key_match_rate".into(), extraction.match_rate().into());
    if let Some(c) = &clean_extraction {
        notes.insert("clean_key_match_rate".into(), c.match_rate().into());
    }
    // The strongest evidence this key can ever give: every item matching, under the scheme's
    // analytic null. A key too short to reach the default false-positive rate is worth
    // knowing about before the model ships, not in front of a court.
    if extraction.queries > 0 {
        let best = Verdict::decide(
            extraction.queries,
            extraction.queries,
            analytic_null,
            crate::verdict::DEFAULT_FPR,
        )?;
        notes.insert("strongest_p_value".into(), best.p_value.into());
        if !best.watermarked {
            tracing::warn!(
                items = extraction.queries,
                strongest_p_value = best.p_value,
                fpr = crate::verdict::DEFAULT_FPR,
                "the key is too short to reach the default false-positive rate even if every item matches; use a longer key (more items, a longer signature, or a repetition code)"
            );
        }
    }
    notes.insert(
        "train_config".into(),
        serde_json::to_value(&req.train).expect("serialises"),
    );
    // Last, once nothing decisive in the key changes any more.
    key.ensure_commitment_salt()?;
    let commitment = crate::commit::KeyCommitment::for_key(&key)?;
    Ok(Embedded {
        model,
        model_bytes,
        key,
        commitment,
        report,
        extraction,
        clean_extraction,
    })
}

/// A key for a model trained outside nnmark (the Python package's owner workflow): the owner
/// trains the trigger items into their own network, then binds the key to the exported model
/// ([`bind_model`]) and publishes the commitment.
pub struct ExternalKeyRequest<'a> {
    /// The scheme: Adi and Zhang's three kinds (no model needed), frontier stitching (with
    /// `model`).
    pub scheme: &'static dyn Scheme,
    /// Parameter overrides (JSON object; null for the defaults).
    pub params: serde_json::Value,
    /// Shape of the model's input images.
    pub input: crate::data::ImageShape,
    /// Number of classes the model answers with.
    pub num_classes: usize,
    /// The owner's labelled images, for schemes that build triggers from them (Zhang's content
    /// and noise marks); None for schemes that need none (Adi).
    pub data: Option<&'a Dataset>,
    /// Images from another distribution (Zhang's unrelated triggers).
    pub aux: Option<&'a Dataset>,
    /// The trained clean model, for schemes whose key depends on it (frontier stitching:
    /// its predictions and input gradients on `data`).
    pub model: Option<&'a dyn crate::external::ExternalModel>,
    /// The data set's name, recorded in the key (remote verification draws decoys from it
    /// when nnmark knows it).
    pub dataset_name: String,
    /// Seed of everything random in the key.
    pub seed: u64,
}

/// Generates a key for an external model. Only keys whose null is exact are made: with no
/// model of nnmark's own, no shadow models can calibrate a key whose labels are not drawn at
/// random, and a key nobody can judge is no use to its owner.
pub fn external_key(req: ExternalKeyRequest<'_>, device: &Device) -> Result<KeyFile> {
    let spec = crate::model::ModelSpec {
        architecture: crate::model::Architecture::External,
        input: req.input,
        num_classes: req.num_classes,
        normalization: crate::model::Normalization::identity(req.input.channels),
    };
    if !(2..=256).contains(&req.num_classes) {
        return Err(Error::invalid(
            "classes",
            req.num_classes,
            "must be between 2 and 256",
        ));
    }
    let params = req.scheme.params(&req.params)?;
    let empty;
    let data = match req.data {
        Some(d) => {
            if d.shape != req.input {
                return Err(Error::invalid(
                    "images",
                    &d.name,
                    format!("hold {} images; the model takes {}", d.shape, req.input),
                ));
            }
            d
        }
        None => {
            empty = Dataset::new(
                "no images",
                req.input,
                req.num_classes,
                Vec::new(),
                Vec::new(),
            )?;
            &empty
        }
    };
    let material = req.scheme.keygen(&KeygenContext {
        data,
        spec: &spec,
        clean: None,
        external: req.model,
        aux: req.aux,
        params: &params,
        seed: req.seed,
        device,
        shadow_cache: None,
    })?;
    let params = material.params.clone().unwrap_or(params);
    let mut key = KeyFile {
        meta: KeyMeta {
            format: "nnmark-key".into(),
            version: KEY_FORMAT_VERSION,
            scheme: req.scheme.name().into(),
            params,
            spec,
            model_sha256: String::new(),
            dataset: req.dataset_name,
            embed_mode: "external".into(),
            seed: req.seed,
            nnmark_version: crate::VERSION.into(),
            burn_version: crate::BURN_VERSION.into(),
            created: now_rfc3339(),
            spent: Vec::new(),
            reveals: Vec::new(),
            commitment_salt: None,
            notes: BTreeMap::new(),
        },
        triggers: material.triggers,
        nonces: material.nonces,
        extra: material.extra,
    };
    if !req.scheme.null_is_exact(&key) {
        return Err(Error::invalid(
            "scheme parameters",
            req.scheme.name(),
            "this key's null is not exact (labels not drawn at random), and a model trained outside nnmark has no shadow models to calibrate it; keep the default random labels",
        ));
    }
    key.ensure_commitment_salt()?;
    Ok(key)
}

/// Binds a key to the marked model's file (its SHA-256, e.g. of the exported ONNX file) and
/// returns the key's commitment to publish. Call it once the model is final: the commitment
/// covers the fingerprint.
pub fn bind_model(key: &mut KeyFile, model_bytes: &[u8]) -> Result<crate::commit::KeyCommitment> {
    key.meta.model_sha256 = crate::io::sha256_hex(model_bytes);
    crate::commit::KeyCommitment::for_key(key)
}

/// Whether a marked model proves its own key, before anything is written: its matches under
/// the key's analytic null against the threshold at a false-positive rate, with a margin, so
/// that a little drift (a fine-tuning step, a quantised copy) does not leave the owner with a
/// mark nobody can prove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provability {
    /// Key items the marked model answers as the key says.
    pub matches: u64,
    /// Key items.
    pub queries: u64,
    /// Fewest matches that prove ownership at `fpr`.
    pub threshold: u64,
    /// Matches required beyond the threshold.
    pub margin: u64,
    /// The false-positive rate it was judged at.
    pub fpr: f64,
    /// The marked model's own p-value.
    pub p_value: f64,
    /// matches ≥ threshold + margin.
    pub provable: bool,
    /// The null match rate it was judged against (the key's own null).
    #[serde(default)]
    pub null_rate: f64,
}

impl Provability {
    /// What an unprovable mark lacks and what to change.
    pub fn advice(&self) -> String {
        if self.threshold + self.margin > self.queries {
            return format!(
                "no mark on this key can be proved at fpr {:e} with a margin of {}: models without the mark match its items at a rate up to {:.3}, so it takes {} of {} items matching (threshold {} + margin); use a scheme whose labels are drawn at random (adi, zhang-*, or frontier-stitching with labels=random), a longer key, or a higher --fpr",
                self.fpr,
                self.margin,
                self.null_rate,
                self.threshold + self.margin,
                self.queries,
                self.threshold
            );
        }
        format!(
            "the marked model matches {}/{} key items but proving ownership at fpr {:e} takes {} (threshold {} + margin {}); train longer (--epochs), put more key items in each batch (--param per_batch=N), use a longer key, or another scheme",
            self.matches,
            self.queries,
            self.fpr,
            self.threshold + self.margin,
            self.threshold,
            self.margin
        )
    }
}

/// The margin [`provability`] asks for unless told otherwise: 5% of the key's items (at least
/// one).
pub fn default_margin(queries: u64) -> u64 {
    queries.div_ceil(20).max(1)
}

/// The null a key is judged against by default: the scheme's analytic null when it is exact
/// ([`Scheme::null_is_exact`]), else the key's shadow calibration (see [`crate::shadow`]),
/// never below the analytic rate. A key with neither is an error: judging it by an analytic
/// null that does not hold could accuse an independent model.
pub fn key_null(key: &KeyFile, scheme: &dyn Scheme) -> Result<NullModel> {
    let analytic = scheme.analytic_null(key);
    if scheme.null_is_exact(key) {
        return Ok(analytic);
    }
    match crate::shadow::ShadowCalibration::of_key(key)? {
        Some(c) => Ok(c.null(analytic.rate()?)),
        None => Err(Error::invalid(
            "key",
            format!("{} key", key.meta.scheme),
            "records no shadow models, and this scheme's analytic null does not bound the match rate of independent models (they can match far more often); calibrate with reference models (--null calibrated with --reference or --reference-seeds), make a new key (embed trains shadow models), or accept the analytic null knowingly (--null analytic)",
        )),
    }
}

/// Judges whether the marked model (its `extraction` on its own key) proves the key at `fpr`
/// with `margin` matches to spare, against `null` (the key's own: [`key_null`]).
pub fn provability(
    null: NullModel,
    extraction: &Extraction,
    fpr: f64,
    margin: u64,
) -> Result<Provability> {
    let v = Verdict::decide(extraction.matches, extraction.queries.max(1), null, fpr)?;
    Ok(Provability {
        matches: extraction.matches,
        queries: extraction.queries,
        threshold: v.threshold,
        margin,
        fpr,
        p_value: v.p_value,
        provable: extraction.queries > 0 && extraction.matches >= v.threshold + margin,
        null_rate: v.null_rate,
    })
}

/// One verification's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    /// Scheme of the key.
    pub scheme: String,
    /// SHA-256 of the key file (names the key without revealing it).
    pub key_fingerprint: String,
    /// The suspect, as described by its oracle or file.
    pub suspect: String,
    /// What was read off the suspect.
    pub extraction: Extraction,
    /// The decision.
    pub verdict: Verdict,
    /// For schemes that carry a message: what was expected, what was read, and how likely an
    /// unmarked model would be to produce it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageCheck>,
}

/// A carried message checked against the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageCheck {
    /// The message in the key.
    pub expected: String,
    /// The message read off the suspect ('?' where a symbol had no majority).
    pub decoded: String,
    /// True when they are equal.
    pub exact: bool,
    /// P(an unmarked model decodes exactly the expected message), at the verdict's null rate.
    pub chance: f64,
}

/// The scheme that made `key`, checked against an explicitly requested one.
pub fn scheme_for_key(key: &KeyFile, requested: Option<&str>) -> Result<&'static dyn Scheme> {
    let scheme = match requested {
        Some(name) => scheme::by_name(name)?,
        None => scheme::by_name(&key.meta.scheme)?,
    };
    scheme::check_key_scheme(scheme, key)?;
    Ok(scheme)
}

/// Extracts the mark from `suspect` and decides at false-positive rate `fpr` against `null`.
pub fn verify(
    key: &KeyFile,
    scheme: &dyn Scheme,
    suspect: &mut Suspect<'_>,
    suspect_name: &str,
    null: NullModel,
    fpr: f64,
) -> Result<Verification> {
    scheme::check_key_scheme(scheme, key)?;
    if scheme.access() == scheme::Access::WhiteBox && suspect.model().is_none() {
        return Err(Error::invalid(
            "suspect",
            suspect_name,
            format!(
                "scheme '{}' is white-box and needs the suspect's weights, not a query interface",
                scheme.name()
            ),
        ));
    }
    suspect.check_compatible(key)?;
    let extraction = scheme.extract(key, suspect)?;
    let verdict = Verdict::decide(extraction.matches, extraction.queries, null, fpr)?;
    let message = match (
        scheme.message(key)?,
        scheme.message_chance(key, verdict.null_rate)?,
    ) {
        (Some(expected), Some(chance)) => {
            let decoded = extraction.decoded.clone().unwrap_or_default();
            Some(MessageCheck {
                exact: decoded == expected,
                expected,
                decoded,
                chance,
            })
        }
        _ => None,
    };
    Ok(Verification {
        scheme: scheme.name().into(),
        key_fingerprint: key.fingerprint()?,
        suspect: suspect_name.into(),
        extraction,
        verdict,
        message,
    })
}

/// A calibrated null from independent reference models: each is queried with the key; p0 is
/// the largest one-sided upper Clopper–Pearson bound (at `confidence`) of a single reference's
/// match rate, and never below the scheme's analytic null (see [`NullModel::Calibrated`]).
pub fn calibrate<'a>(
    key: &KeyFile,
    scheme: &dyn Scheme,
    references: impl IntoIterator<Item = (String, Suspect<'a>)>,
    confidence: f64,
) -> Result<NullModel> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(Error::invalid(
            "confidence",
            confidence,
            "must be in (0, 1)",
        ));
    }
    let (mut matches, mut queries, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for (name, mut suspect) in references {
        suspect
            .check_compatible(key)
            .map_err(|e| Error::invalid("reference model", &name, e.to_string()))?;
        let x = scheme.extract(key, &mut suspect)?;
        matches.push(x.matches);
        queries.push(x.queries);
        names.push(name);
    }
    if names.is_empty() {
        return Err(Error::invalid(
            "reference models",
            0,
            "a calibrated null needs at least one independent reference model",
        ));
    }
    Ok(NullModel::Calibrated {
        matches,
        queries,
        confidence,
        references: names,
        floor: scheme.analytic_null(key).rate()?,
    })
}

/// Trains independent reference models (same architecture and recipe, other seeds) for
/// [`calibrate`].
pub fn train_references(
    spec: &crate::model::ModelSpec,
    data: &Dataset,
    cfg: &TrainConfig,
    seeds: &[u64],
    device: &Device,
) -> Result<Vec<Model>> {
    let jobs = seeds
        .iter()
        .map(|&seed| {
            let model = Model::seeded(spec.clone(), seed, device)?;
            let cfg = TrainConfig {
                seed,
                ..cfg.clone()
            }
            .fitted_to(spec.architecture);
            Ok((model, cfg))
        })
        .collect::<Result<Vec<_>>>()?;
    // Together where the architecture allows: the same models as one by one.
    Ok(train::train_many(jobs, data, device)?
        .into_iter()
        .map(|(m, _)| m)
        .collect())
}

/// Loads reference models: files, or every `.safetensors` file in a folder (sorted by name).
pub(crate) fn load_references(
    paths: &[std::path::PathBuf],
    device: &Device,
) -> Result<Vec<(String, Model)>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(Error::invalid(
            "reference",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            "no reference model files found (give model files or folders of .safetensors files)",
        ));
    }
    files
        .into_iter()
        .map(|f| {
            Ok((
                f.display().to_string(),
                weights::load(&f, None, device)?.model,
            ))
        })
        .collect()
}
