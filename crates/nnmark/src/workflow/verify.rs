//! Verifying a suspect as an owner or a judge does: the key and the null model it is judged
//! against, the key's public commitment, then a private check, a reveal with its public check,
//! or a judge's public check of a revealed bundle. Remote and ONNX suspects go through
//! `nnmark_remote`, which starts from the same [`PreparedKey`].

use std::fmt;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::Serialize;
use serde_json::json;

use crate::commit::{self, CommitmentReport, KeyCommitment, RevealBundle, VerificationKey};
use crate::data::{self, DataSource};
use crate::error::{Error, Result};
use crate::keyfile::KeyFile;
use crate::model::{Architecture, Model, ModelSpec, Normalization};
use crate::public::{PublicRequest, PublicVerification};
use crate::scheme::{Scheme, Suspect};
use crate::train::TrainConfig;
use crate::verdict::NullModel;
use crate::watermark::{self, Verification};

use super::render::{commitment_line, verdict_lines, versions};

/// Where a key's commitment lives unless the user says: beside the key
/// (`NAME.commitment.json`).
pub fn default_commitment_path(key: &Path) -> PathBuf {
    key.with_extension("commitment.json")
}

/// Time-stamping authority (or CA) certificates from PEM or DER files.
pub fn load_tsa_certs(paths: &[PathBuf]) -> Result<Vec<nnmark_tsp::Certificate>> {
    let mut certs = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        certs.extend(
            nnmark_tsp::load_certificates(&bytes).map_err(|e| Error::format(p, e.to_string()))?,
        );
    }
    Ok(certs)
}

/// A key commitment and what checking it showed.
#[derive(Debug, Clone, Serialize)]
pub struct CommitmentCheck {
    /// The commitment file's content.
    pub commitment: KeyCommitment,
    /// The check: key (or verification key) matches, timestamps verified.
    pub report: CommitmentReport,
}

/// The key's public commitment, checked against what the verifier holds: the one named, else
/// the one beside the key when it exists. Timestamp certificates without a commitment are an
/// error (they would silently check nothing).
pub fn check_commitment(
    explicit: Option<&Path>,
    beside_key: Option<&Path>,
    key: Option<&KeyFile>,
    vk: Option<&VerificationKey>,
    tsa_certs: &[PathBuf],
) -> Result<Option<CommitmentCheck>> {
    let path = match (explicit, beside_key) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(k)) if default_commitment_path(k).exists() => default_commitment_path(k),
        _ if !tsa_certs.is_empty() => {
            return Err(Error::invalid(
                "--tsa-cert",
                tsa_certs[0].display(),
                "timestamp certificates check a key commitment: give --commitment",
            ));
        }
        _ => return Ok(None),
    };
    let commitment = KeyCommitment::load(&path)?;
    let report = commitment
        .check(key, vk, &load_tsa_certs(tsa_certs)?)
        .map_err(|e| Error::format(&path, format!("checking key commitment: {e}")))?;
    Ok(Some(CommitmentCheck { commitment, report }))
}

/// The null model a verdict is judged against.
#[derive(Debug, Clone, Default)]
pub enum NullChoice {
    /// The key's own null (the default): the scheme's analytic null where it is exact, else
    /// the shadow models recorded in the key ([`watermark::key_null`]).
    #[default]
    Key,
    /// The scheme's analytic null: chance (1/classes) for labels, a fair coin for bits, even
    /// where it does not bound independent models (see [`Scheme::null_is_exact`]).
    Analytic,
    /// The largest upper confidence bound of independent reference models' match rates, never
    /// below the analytic rate.
    Calibrated(Calibration),
}

/// Where a calibrated null's reference models come from.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Reference model files, or folders of `.safetensors` files.
    pub reference_files: Vec<PathBuf>,
    /// Seeds of reference models to train (key's architecture, key's data set).
    pub reference_seeds: Vec<u64>,
    /// Epochs of each trained reference model.
    pub reference_epochs: usize,
    /// Confidence of each reference's upper bound.
    pub confidence: f64,
    /// Folder searched first for the key's data set (trained references).
    pub data_dir: Option<PathBuf>,
}

/// One reference model's matches on the key.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceRate {
    /// Its name (file, or architecture and seed).
    pub reference: String,
    /// Key items it matched.
    pub matches: u64,
    /// Key items it was asked.
    pub queries: u64,
}

/// A key ready to judge suspects with: its scheme, null model and commitment check.
pub struct PreparedKey {
    /// The key.
    pub key: KeyFile,
    /// Where it was read from (a reveal writes it back there).
    pub path: PathBuf,
    /// Its scheme.
    pub scheme: &'static dyn Scheme,
    /// The null model verdicts are judged against.
    pub null: NullModel,
    /// The reference models' matches, when calibrated.
    pub references: Vec<ReferenceRate>,
    /// Its public commitment, checked (when one is given or lies beside the key).
    pub commitment: Option<CommitmentCheck>,
}

/// Loads a key, checks the scheme and its commitment, and builds the null model.
pub fn prepare_key(
    key_path: &Path,
    scheme: Option<&str>,
    null: &NullChoice,
    commitment: Option<&Path>,
    tsa_certs: &[PathBuf],
    device: &Device,
) -> Result<PreparedKey> {
    let key = KeyFile::load(key_path)?;
    let scheme = watermark::scheme_for_key(&key, scheme)?;
    let commitment = check_commitment(commitment, Some(key_path), Some(&key), None, tsa_certs)?;
    let (null, references) = match null {
        NullChoice::Key => (
            watermark::key_null(&key, scheme)?,
            shadow_rates(&key, scheme)?,
        ),
        NullChoice::Analytic => {
            if !scheme.null_is_exact(&key) {
                tracing::warn!(
                    scheme = scheme.name(),
                    "judging by the analytic null, which does not bound independent models for this key: an independent model may be accused"
                );
            }
            (scheme.analytic_null(&key), Vec::new())
        }
        NullChoice::Calibrated(c) => calibrated_null(&key, scheme, c, device)?,
    };
    Ok(PreparedKey {
        key,
        path: key_path.to_path_buf(),
        scheme,
        null,
        references,
        commitment,
    })
}

/// The key's shadows' matches, when its null is calibrated by them.
fn shadow_rates(key: &KeyFile, scheme: &dyn Scheme) -> Result<Vec<ReferenceRate>> {
    if scheme.null_is_exact(key) {
        return Ok(Vec::new());
    }
    Ok(crate::shadow::ShadowCalibration::of_key(key)?
        .map(|c| {
            c.shadows
                .iter()
                .map(|s| ReferenceRate {
                    reference: format!("shadow {}", s.name),
                    matches: s.matches,
                    queries: s.queries,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn calibrated_null(
    key: &KeyFile,
    scheme: &dyn Scheme,
    c: &Calibration,
    device: &Device,
) -> Result<(NullModel, Vec<ReferenceRate>)> {
    let mut refs = if c.reference_files.is_empty() && !c.reference_seeds.is_empty() {
        Vec::new()
    } else {
        watermark::load_references(&c.reference_files, device)?
    };
    if !c.reference_seeds.is_empty() {
        let dataset = &key.meta.dataset;
        let split = data::load(&DataSource::Named(dataset.clone()), c.data_dir.as_deref())
            .map_err(|e| {
                Error::invalid(
                    "the key's data set",
                    dataset,
                    format!("needed to train reference models: {e}"),
                )
            })?;
        let cfg = TrainConfig {
            epochs: c.reference_epochs,
            ..Default::default()
        };
        let spec = &key.meta.spec;
        let models =
            watermark::train_references(spec, &split.train, &cfg, &c.reference_seeds, device)?;
        refs.extend(
            c.reference_seeds
                .iter()
                .zip(models)
                .map(|(s, m)| (format!("{} seed {s}", spec.architecture), m)),
        );
    }
    let mut null = watermark::calibrate(
        key,
        scheme,
        refs.iter().map(|(n, m)| (n.clone(), Suspect::Model(m))),
        c.confidence,
    )?;
    // The judge's references can only make the key's own null stricter, never looser.
    if let (Ok(own), NullModel::Calibrated { floor, .. }) =
        (watermark::key_null(key, scheme), &mut null)
    {
        *floor = floor.max(own.rate()?);
    }
    let mut rates = Vec::new();
    if let NullModel::Calibrated {
        matches,
        queries,
        references,
        ..
    } = &null
    {
        for ((n, k), q) in references.iter().zip(matches).zip(queries) {
            rates.push(ReferenceRate {
                reference: n.clone(),
                matches: *k,
                queries: *q,
            });
        }
    }
    Ok((null, rates))
}

/// Loads a suspect's weights: nnmark files describe themselves; a foreign state_dict needs
/// `arch`, and takes the input and classes of `like` (the key's model).
pub fn load_suspect(
    path: &Path,
    arch: Option<Architecture>,
    like: &ModelSpec,
    device: &Device,
) -> Result<Model> {
    let spec = arch.map(|architecture| ModelSpec {
        architecture,
        input: like.input,
        num_classes: like.num_classes,
        normalization: Normalization::identity(like.input.channels),
    });
    Ok(crate::weights::load(path, spec.as_ref(), device)?.model)
}

/// A private verification's report.
pub struct VerifyReport {
    /// What was read and decided.
    pub verification: Verification,
    /// Reference models' matches, when the null was calibrated.
    pub references: Vec<ReferenceRate>,
    /// The key commitment's check.
    pub commitment: Option<CommitmentReport>,
}

/// Verifies a suspect whose weights are held, optionally queried through a query-time input
/// filter (`blur:1.0`, `noise:0.1`, `pixel-quantize:4`), as a thief might serve it.
pub fn verify_local(
    p: &PreparedKey,
    suspect: Model,
    suspect_name: &str,
    fpr: f64,
    through: Option<&str>,
) -> Result<VerifyReport> {
    let verification = match through {
        None => watermark::verify(
            &p.key,
            p.scheme,
            &mut Suspect::Model(&suspect),
            suspect_name,
            p.null.clone(),
            fpr,
        )?,
        Some(filter) => {
            // The suspect as a thief serves it: behind the filter, answering labels only.
            let transform = crate::attack::parse(filter)?
                .query_transform()
                .ok_or_else(|| {
                    Error::invalid(
                        "--through",
                        filter,
                        "not a query filter (blur, noise, pixel-quantize, jpeg)",
                    )
                })?;
            let mut local = crate::oracle::LocalOracle::new(suspect, crate::oracle::Reveal::Label);
            let mut filtered = crate::attack::TransformedOracle::new(&mut local, transform);
            watermark::verify(
                &p.key,
                p.scheme,
                &mut Suspect::Oracle(&mut filtered),
                &format!("{suspect_name} through {filter}"),
                p.null.clone(),
                fpr,
            )?
        }
    };
    Ok(VerifyReport {
        verification,
        references: p.references.clone(),
        commitment: p.commitment.as_ref().map(|c| c.report.clone()),
    })
}

impl VerifyReport {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        let v = &self.verification;
        json!({"versions": versions(), "suspect": v.suspect, "key_fingerprint": v.key_fingerprint,
               "references": self.references, "key_commitment": self.commitment,
               "verdict": v.verdict, "message": v.message})
    }
}

fn commitment_report_line(c: Option<&CommitmentReport>) -> String {
    match c {
        Some(r) => format!("key commitment: {}", r.summary()),
        None => commitment_line(None),
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verification;
        if let Some(m) = &v.message {
            writeln!(
                f,
                "message: expected {:?}, read {:?} ({}); an unmarked model would produce it with probability {:.3e}",
                m.expected,
                m.decoded,
                if m.exact { "exact" } else { "differs" },
                m.chance
            )?;
        }
        for r in &self.references {
            writeln!(
                f,
                "reference {}: {}/{} key items match",
                r.reference, r.matches, r.queries
            )?;
        }
        writeln!(f, "{}", commitment_report_line(self.commitment.as_ref()))?;
        write!(f, "{}", verdict_lines(&v.verdict, &v.suspect))
    }
}

/// A public check's report (a judge's, or the owner's own right after revealing).
pub struct PublicReport {
    /// What the openings showed and the verdict.
    pub public: PublicVerification,
    /// The bundle checked.
    pub bundle: PathBuf,
    /// The suspect's name.
    pub suspect: String,
    /// The key commitment's check.
    pub commitment: Option<CommitmentReport>,
    /// When this run revealed the items: how many, under which challenge, spent in which key.
    pub revealed: Option<(usize, String, PathBuf)>,
}

impl PublicReport {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        let p = &self.public;
        json!({"versions": versions(), "public": true, "bundle": self.bundle,
               "suspect": self.suspect, "vk_root": p.vk_root, "vk_digest": p.vk_digest,
               "challenge": p.challenge, "earlier_challenges": p.earlier_challenges,
               "openings_verified": p.opened.len(), "references": p.references,
               "key_commitment": self.commitment, "verdict": p.verdict})
    }
}

impl fmt::Display for PublicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.public;
        writeln!(
            f,
            "{} openings match the commitments of verification key {} (challenge '{}' selects exactly these items{})",
            p.opened.len(),
            p.vk_root,
            p.challenge,
            if p.earlier_challenges.is_empty() {
                String::new()
            } else {
                format!(
                    ", skipping the items of {} earlier reveals the bundle proves: {:?}",
                    p.earlier_challenges.len(),
                    p.earlier_challenges
                )
            }
        )?;
        for r in &p.references {
            writeln!(
                f,
                "reference {}: {}/{} opened items match",
                r.name, r.matches, r.queries
            )?;
        }
        writeln!(f, "{}", commitment_report_line(self.commitment.as_ref()))?;
        write!(f, "{}", verdict_lines(&p.verdict, &self.suspect))?;
        if let Some((count, challenge, key)) = &self.revealed {
            write!(
                f,
                "\nrevealed {count} items (challenge '{challenge}') into {}; they are now spent in {}",
                self.bundle.display(),
                key.display()
            )?;
        }
        Ok(())
    }
}

/// The owner's reveal: which items, under which challenge, into which bundle.
pub struct RevealJob {
    /// Unspent trigger items to reveal.
    pub count: usize,
    /// The judge's challenge (default: a random one).
    pub challenge: Option<String>,
    /// Where the bundle is written.
    pub bundle: PathBuf,
    /// False-positive rate of the public verdict.
    pub fpr: f64,
    /// Confidence of a calibrated null's bound.
    pub confidence: f64,
}

/// Reveals `count` unspent items into a public bundle, spends them in the key file (first:
/// if publishing fails afterwards the items are wasted, never reused), and checks the suspect
/// publicly against the bundle as a judge would.
pub fn reveal_and_verify(
    p: &mut PreparedKey,
    job: &RevealJob,
    suspect: &Model,
    suspect_name: &str,
) -> Result<PublicReport> {
    let challenge = match &job.challenge {
        Some(c) => c.clone(),
        None => commit::random_challenge()?,
    };
    let bundle = commit::reveal(&mut p.key, job.count, &challenge)?;
    p.key.save(&p.path)?;
    bundle.save(&job.bundle)?;
    let vk = VerificationKey::from_key(&p.key)?;
    let public = crate::public::verify_public(
        &PublicRequest {
            bundle: &bundle,
            bundle_path: &job.bundle,
            vk: &vk,
            challenge: &challenge,
            fpr: job.fpr,
            confidence: job.confidence,
        },
        suspect_name,
        &mut Suspect::Model(suspect),
        std::iter::empty(),
    )?;
    Ok(PublicReport {
        public,
        bundle: job.bundle.clone(),
        suspect: suspect_name.to_string(),
        commitment: p.commitment.as_ref().map(|c| c.report.clone()),
        revealed: Some((job.count, challenge, p.path.clone())),
    })
}

/// A judge's check of a revealed bundle: everything comes from files the judge holds.
pub struct PublicCheck {
    /// The owner's bundle.
    pub bundle: PathBuf,
    /// The verification key the owner published before the dispute.
    pub vk: PathBuf,
    /// The challenge the judge issued.
    pub challenge: String,
    /// The suspect's weights.
    pub model: PathBuf,
    /// Architecture of a foreign suspect file.
    pub arch: Option<Architecture>,
    /// Analytic, or calibrated on the judge's own reference model files.
    pub null: NullChoice,
    /// The key's public commitment, when the judge has it.
    pub commitment: Option<PathBuf>,
    /// Trusted time-stamping authority certificates.
    pub tsa_certs: Vec<PathBuf>,
    /// False-positive rate of the verdict.
    pub fpr: f64,
}

/// Checks a revealed bundle against a suspect's weights.
pub fn verify_public_files(c: &PublicCheck, device: &Device) -> Result<PublicReport> {
    let vk = VerificationKey::load(&c.vk)?;
    let bundle = RevealBundle::load(&c.bundle)?;
    let commitment =
        check_commitment(c.commitment.as_deref(), None, None, Some(&vk), &c.tsa_certs)?;
    let like = ModelSpec {
        architecture: Architecture::Lenet,
        input: vk.input,
        num_classes: vk.num_classes,
        normalization: Normalization::identity(vk.input.channels),
    };
    let suspect = load_suspect(&c.model, c.arch, &like, device)?;
    let (references, confidence) = match &c.null {
        // Public verification is Adi's (uniformly random labels): its chance null is exact.
        NullChoice::Key | NullChoice::Analytic => {
            (Vec::new(), watermark::DEFAULT_CALIBRATION_CONFIDENCE)
        }
        NullChoice::Calibrated(cal) => {
            if cal.reference_files.is_empty() || !cal.reference_seeds.is_empty() {
                return Err(Error::invalid(
                    "--null calibrated",
                    "public",
                    "a public check calibrates on reference model files the judge chose: give --reference MODELS",
                ));
            }
            (
                watermark::load_references(&cal.reference_files, device)?,
                cal.confidence,
            )
        }
    };
    let suspect_name = c.model.display().to_string();
    let public = crate::public::verify_public(
        &PublicRequest {
            bundle: &bundle,
            bundle_path: &c.bundle,
            vk: &vk,
            challenge: &c.challenge,
            fpr: c.fpr,
            confidence,
        },
        &suspect_name,
        &mut Suspect::Model(&suspect),
        references
            .iter()
            .map(|(n, m)| (n.clone(), Suspect::Model(m))),
    )?;
    Ok(PublicReport {
        public,
        bundle: c.bundle.clone(),
        suspect: suspect_name,
        commitment: commitment.map(|c| c.report),
        revealed: None,
    })
}
