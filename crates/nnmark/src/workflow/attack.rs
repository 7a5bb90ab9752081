//! A removal attack as a thief runs it: on a model file, with the attacker's third of the
//! training data, the result written as a new model file.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde_json::json;

use crate::attack::{self, AttackContext, InputTransform};
use crate::data::DataSplit;
use crate::error::Result;
use crate::keyfile::KeyFile;
use crate::model::Model;
use crate::oracle::{LocalOracle, Reveal};
use crate::scheme::{Access, Suspect};
use crate::train;
use crate::verdict::{NullModel, Verdict};
use crate::watermark;
use crate::weights::{self, WeightsMeta};

use super::render::versions;

/// What to attack, how, and where the result goes.
pub struct AttackJob<'a> {
    /// The attack, `name[:value][,key=value...]`, stages joined by `+`.
    pub attack: &'a str,
    /// The model file attacked.
    pub model: &'a Path,
    /// The watermark key: the attack may be sized by it (adversarial fine-tuning) or need its
    /// scheme (overwriting), but nothing secret from it reaches the attack. The report shows the
    /// key's evidence in the model before and after the attack.
    pub key: Option<&'a Path>,
    /// The data set: the attacker gets the last third of its training split; the test split
    /// measures accuracy.
    pub split: &'a DataSplit,
    /// Seed of the attack.
    pub seed: u64,
    /// Where the attacked model goes.
    pub out: &'a Path,
}

/// How an attack went.
pub struct AttackReport {
    /// The attack as parsed.
    pub attack: String,
    /// The model attacked and its SHA-256.
    pub model: PathBuf,
    /// SHA-256 of the attacked file.
    pub model_sha256: String,
    /// Images the attacker trained with.
    pub attacker_examples: usize,
    /// Test accuracy before and after (through the filter, for a query filter).
    pub accuracy: (f64, f64),
    /// Test images.
    pub test_examples: usize,
    /// Seconds the attack took.
    pub seconds: f64,
    /// Seed.
    pub seed: u64,
    /// The attacked model file and its SHA-256.
    pub out: (PathBuf, String),
    /// The attack filters queries instead of changing weights.
    pub query_filter: bool,
    /// The key's evidence before and after the attack, when a key was given.
    pub watermark: Option<WatermarkEffect>,
    /// Why a key was given but its verdicts were not measured (a key without a default null:
    /// no shadow models where the scheme's null is not exact); the attack still ran.
    pub watermark_unmeasured: Option<String>,
}

/// What an attack did to a watermark: the key's verdict on the model before the attack and on
/// the attacked model (through the filter, for a query filter), both at the default
/// false-positive rate against the key's own null.
#[derive(Debug, Clone)]
pub struct WatermarkEffect {
    /// Verdict on the model attacked.
    pub before: Verdict,
    /// Verdict on the attacked model.
    pub after: Verdict,
}

/// The key's verdict on `model`. Behind a query filter the thief answers labels only; a
/// white-box key is still read from the weights, which the filter does not change.
fn key_verdict(
    key: &KeyFile,
    scheme: &dyn crate::scheme::Scheme,
    model: &Model,
    filter: Option<InputTransform>,
    guard: Option<&attack::QueryGuard>,
    null: &NullModel,
    name: &str,
) -> Result<Verdict> {
    let null = null.clone();
    let fpr = watermark::DEFAULT_FPR;
    let verification = match (guard, filter) {
        (Some(g), filter) if scheme.access() != Access::WhiteBox => {
            let mut served = attack::GuardedOracle::new(model.clone(), g.clone(), Reveal::Label);
            match filter {
                Some(t) => watermark::verify(
                    key,
                    scheme,
                    &mut Suspect::Oracle(&mut attack::TransformedOracle::new(&mut served, t)),
                    name,
                    null,
                    fpr,
                )?,
                None => watermark::verify(
                    key,
                    scheme,
                    &mut Suspect::Oracle(&mut served),
                    name,
                    null,
                    fpr,
                )?,
            }
        }
        (None, Some(t)) if scheme.access() != Access::WhiteBox => {
            let mut local = LocalOracle::new(model.clone(), Reveal::Label);
            let mut filtered = attack::TransformedOracle::new(&mut local, t);
            watermark::verify(
                key,
                scheme,
                &mut Suspect::Oracle(&mut filtered),
                name,
                null,
                fpr,
            )?
        }
        _ => watermark::verify(key, scheme, &mut Suspect::Model(model), name, null, fpr)?,
    };
    Ok(verification.verdict)
}

/// Runs an attack and writes the attacked model (its metadata names the attack and the
/// attacked file).
pub fn attack(job: &AttackJob<'_>, device: &Device) -> Result<AttackReport> {
    // Parse (and so check) the attack before loading anything.
    let attack = attack::parse(job.attack)?;
    let (_, attacker) = attack::owner_attacker_split(&job.split.train)?;
    let loaded = weights::load(job.model, None, device)?;
    let key = job.key.map(KeyFile::load).transpose()?;
    let key_items = key
        .as_ref()
        .map(|k| k.triggers.as_ref().map_or(0, |t| t.labels.len()));
    let scheme = match &key {
        Some(k) => Some(crate::scheme::by_name(&k.meta.scheme)?),
        None => None,
    };
    let before = train::evaluate(&loaded.model, &job.split.test, 256)?;
    // The key's own null; a key without one (no shadows where they are needed) leaves the
    // attack to run unmeasured rather than refused.
    let null = key
        .as_ref()
        .zip(scheme)
        .map(|(k, scheme)| watermark::key_null(k, scheme).map_err(|e| e.to_string()));
    let verdict_before = match (&key, scheme, &null) {
        (Some(k), Some(scheme), Some(Ok(null))) => Some(key_verdict(
            k,
            scheme,
            &loaded.model,
            None,
            None,
            null,
            "before the attack",
        )?),
        _ => None,
    };
    let started = std::time::Instant::now();
    let ctx = AttackContext {
        data: Some(&attacker),
        device,
        seed: job.seed,
        key_items,
        scheme,
    };
    let model = attack.remove(loaded.model, &ctx)?;
    // A detector the thief serves the model behind; the weights file cannot carry it, so its
    // effect is measured here and the file's metadata names it.
    let guard = attack.query_guard(&model, &ctx)?;
    let seconds = started.elapsed().as_secs_f64();
    // What users of a filtered model get is the filter's answers.
    let accuracy_after = match (&guard, attack.query_transform()) {
        (Some(g), t) => {
            let mut served = attack::GuardedOracle::new(model.clone(), g.clone(), Reveal::Label);
            match t {
                Some(t) => crate::oracle::accuracy(
                    &mut attack::TransformedOracle::new(&mut served, t),
                    &job.split.test,
                )?,
                None => crate::oracle::accuracy(&mut served, &job.split.test)?,
            }
        }
        (None, Some(t)) => {
            let mut local = LocalOracle::new(model.clone(), Reveal::Label);
            crate::oracle::accuracy(
                &mut attack::TransformedOracle::new(&mut local, t),
                &job.split.test,
            )?
        }
        (None, None) => train::evaluate(&model, &job.split.test, 256)?.accuracy,
    };
    let mut meta = WeightsMeta::new(model.spec.clone(), loaded.meta.dataset.clone(), job.seed);
    meta.extra.insert("attack".into(), attack.describe());
    meta.extra
        .insert("attacked_model_sha256".into(), loaded.sha256.clone());
    if let Some(t) = attack.query_transform() {
        // The weights are unchanged; the filter is what the thief serves them behind.
        meta.extra
            .insert("query_transform".into(), format!("{t:?}"));
    }
    if guard.is_some() {
        meta.extra.insert(
            "query_guard".into(),
            "served behind a query detector (see `attack`); the file holds the weights only".into(),
        );
    }
    let sha = weights::save(&model, &meta, job.out)?;
    let watermark = match (&key, scheme, &null, verdict_before) {
        (Some(k), Some(scheme), Some(Ok(null)), Some(before)) => Some(WatermarkEffect {
            before,
            after: key_verdict(
                k,
                scheme,
                &model,
                attack.query_transform(),
                guard.as_ref(),
                null,
                "after the attack",
            )?,
        }),
        _ => None,
    };
    let watermark_unmeasured = match null {
        Some(Err(why)) => Some(why),
        _ => None,
    };
    Ok(AttackReport {
        attack: attack.describe(),
        model: job.model.to_path_buf(),
        model_sha256: loaded.sha256,
        attacker_examples: attacker.len(),
        accuracy: (before.accuracy, accuracy_after),
        test_examples: before.examples,
        seconds,
        seed: job.seed,
        out: (job.out.to_path_buf(), sha),
        query_filter: attack.query_transform().is_some() || guard.is_some(),
        watermark,
        watermark_unmeasured,
    })
}

impl AttackReport {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        let watermark = self
            .watermark
            .as_ref()
            .map(|w| json!({ "before": w.before, "after": w.after }));
        json!({ "versions": versions(), "seed": self.seed, "attack": self.attack, "model": self.model, "model_sha256": self.model_sha256, "attacker_examples": self.attacker_examples, "accuracy_before": self.accuracy.0, "accuracy_after": self.accuracy.1, "seconds": self.seconds, "out": self.out.0, "sha256": self.out.1, "watermark": watermark, "watermark_unmeasured": self.watermark_unmeasured })
    }
}

impl fmt::Display for AttackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: accuracy {:.2}% -> {:.2}% on {} test images ({:.1} s, attacker data {} images, seed {})",
            self.attack,
            self.accuracy.0 * 100.0,
            self.accuracy.1 * 100.0,
            self.test_examples,
            self.seconds,
            self.attacker_examples,
            self.seed
        )?;
        if self.query_filter {
            writeln!(
                f,
                "the weights are unchanged: this attack filters queries; verify through it with `nnmark verify --through {}`",
                self.attack
            )?;
        }
        if let Some(why) = &self.watermark_unmeasured {
            writeln!(f, "watermark: not measured: {why}")?;
        }
        if let Some(w) = &self.watermark {
            let proven = |v: &Verdict| {
                if v.watermarked {
                    "proven"
                } else {
                    "not proven"
                }
            };
            writeln!(
                f,
                "watermark: {}/{} -> {}/{} key items (threshold {} at false-positive rate {:e}): {} -> {}",
                w.before.matches,
                w.before.queries,
                w.after.matches,
                w.after.queries,
                w.after.threshold,
                w.after.fpr,
                proven(&w.before),
                proven(&w.after)
            )?;
        }
        write!(f, "wrote {} (sha256 {})", self.out.0.display(), self.out.1)
    }
}
