//! Shadow models: models that do not carry the mark, trained the way an honest third party
//! would train one for the owner's task, whose answers on the key calibrate the verdict.
//!
//! # Why
//!
//! A verdict is a test of "the suspect is an independent model". For some schemes the chance
//! that an independent model answers a key item as the key says is known exactly, whatever
//! that model is: Adi's labels are drawn uniformly at random, so any model that never saw the
//! key matches each item with probability 1/C, independently of the others (see
//! [`Scheme::null_is_exact`]). For the others it is not: Zhang's triggers all carry one target
//! class that some independent models predict for stamped or unrelated images, AIME's labels
//! are the marked model's own mistakes, which other models share, and frontier stitching's
//! true-label adversaries are answered "right" by most models (measured: an independent LeNet
//! matched 76 of 100 items of a fair-coin key). Those keys need a null measured on models
//! that are independent of the mark.
//!
//! # What is trained
//!
//! [`ShadowPlan::count`] models on the owner's training data (true labels), cycling through
//! [`recipes`]: the marked model's architecture and another one, SGD with momentum (cosine
//! and constant schedules) and Adam, each with its own seed (derived from the key's seed, never
//! the clean model's) and hence its own initialisation and data order. Each is asked every key
//! item; its answers and matches go into the key (`notes.calibration`, covered by the key's
//! commitment), so `verify` needs no flag and no data to judge with them.
//!
//! # The null they give, and its assumptions
//!
//! [`ShadowCalibration::null`] is [`NullModel::Calibrated`]: p0 is the largest one-sided
//! upper Clopper–Pearson bound (confidence [`ShadowPlan::confidence`], default 0.99) of any
//! single shadow's match rate, never below the scheme's analytic rate. The verdict then
//! tests matches against Binomial(n, p0). This holds when
//!
//! 1. an independent suspect's expected match rate on the key is no higher than that bound
//!    (it is trained for the same task no more similarly to the marked model than the
//!    shadows are), and
//! 2. given the suspect, its matches on different items are independent.
//!
//! Under (1) and (2) the number of matches is Poisson-binomial with mean at most n·p0, and
//! for any count above that mean its upper tail is at most the Binomial(n, p0) tail
//! (Hoeffding 1956), so items that differ in difficulty only make the test more conservative
//! (`tests/null_simulation.rs` checks it on uneven profiles).
//!
//! Assumption (1) is not certified by a handful of shadows. If unmarked models' match rates
//! vary across a population and the suspect is one more draw from it, the suspect beats the
//! worst of six shadows about one time in seven, and by enough to be accused more often than
//! the nominal rate: simulated with Beta populations, a nominal 1e-6 accused innocent models at
//! 1e-4 to 4e-4 with six shadows and 1e-5 to 1e-4 with twelve (numbers in BENCHMARKS.md). A
//! shadow-calibrated verdict is a guard against the gross failures of analytic nulls (a fair
//! coin that accuses every independent model), not a certified error rate; that is why every
//! scheme that allows it defaults to random labels, whose null is exact ([`Scheme::null_is_exact`]).
//! A suspect trained as a near copy of the marked model's parent (same data, architecture,
//! recipe and seed) is not independent of the mark in any sense.
//!
//! The calibration shadows are trained after key generation and play no part in choosing key
//! items, so the calibration is not biased by selection. Schemes that screen their items with
//! shadows (AIME's `screen`) train selection shadows of their own, seeded apart from these.
//!
//! # Why the count, not per-item rates
//!
//! Key items differ: an item every shadow answers "right" carries no evidence, one that no
//! shadow answers carries a lot, and a test with per-item null rates (a Poisson-binomial tail)
//! would use that. It needs a bound on each item's rate, and a handful of shadows gives a
//! useful bound on the *average* rate (every shadow answers every item: 6 × n observations)
//! but not on each item's (6 observations each). Measured on the default AIME key of a LeNet
//! on the MNIST sample (54 items, six default shadows; `python3 tools/per_item_rates.py KEY`):
//! the items were matched by 0, 1, …, 6 shadows 15, 7, 6, 8, 7, 6 and 5 times, so they do
//! differ. The chance that an unmarked model matches all 54 is at most
//!
//! - 5.2e-11 under the worst-shadow bound used here (p0 = 0.645 for every item);
//! - 9.7e-7 under per-item 99% Clopper–Pearson bounds (each item's rate bounded by its own six
//!   answers: 0 of 6 still allows 0.54), a valid per-item test that is weaker;
//! - 8.0e-30 under per-item point estimates ((k + 1/2)/7), which no assumption here justifies:
//!   an item no shadow matched gets a rate of 0.07 on six models' say-so, and the product over
//!   items multiplies those guesses.
//!
//! Strata formed from the same shadows' answers would be biased by that selection (the
//! "matched by none" stratum has rate 0 among them by construction), and splitting the shadows
//! into a stratifying half and a calibrating half leaves three to guard the null, which the
//! simulation above shows is the weak point already. So the verdict counts matches against
//! the worst shadow's bound, which Hoeffding's inequality makes conservative for items of any
//! difficulty, and the keys that need per-item power are avoided by default instead: random
//! labels make every item's rate exactly 1/(C−1).
//!
//! # Cache
//!
//! Training is deterministic given data, recipe and seed, so trained shadows are cached by
//! content: the file name is the SHA-256 of the data set's pixels and labels, the model spec,
//! the recipe, the seed and the nnmark and burn versions (`~/.cache/nnmark/shadows` unless
//! told otherwise). A second key for the same model and data reuses them.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::keyfile::KeyFile;
use crate::model::{Architecture, Model, ModelSpec, Normalization};
use crate::scheme::{Scheme, Suspect};
use crate::train::{self, LrSchedule, OptimizerConfig, TrainConfig, TrainObserver};
use crate::verdict::NullModel;
use crate::weights::{self, WeightsMeta};

/// The key note that holds a key's [`ShadowCalibration`].
pub const CALIBRATION_NOTE: &str = "calibration";

/// How many shadows to train, for how long, and where to cache them.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPlan {
    /// Shadow models for keys whose analytic null is not exact (0: none; such keys then
    /// cannot be verified without explicit reference models or an explicit analytic null).
    pub count: usize,
    /// Epochs each shadow trains.
    pub epochs: usize,
    /// Also train and record shadows for keys whose null is exact (a check, not used by the
    /// verdict).
    pub also_for_exact_nulls: bool,
    /// Confidence of each shadow's upper bound.
    pub confidence: f64,
    /// Folder of cached shadows (None: no cache).
    pub cache: Option<PathBuf>,
}

impl Default for ShadowPlan {
    /// Six shadows (two architectures × three recipes) of five epochs each, cached in
    /// [`default_cache_dir`].
    fn default() -> Self {
        ShadowPlan {
            count: 6,
            epochs: 5,
            also_for_exact_nulls: false,
            confidence: crate::watermark::DEFAULT_CALIBRATION_CONFIDENCE,
            cache: Some(default_cache_dir()),
        }
    }
}

impl ShadowPlan {
    /// No shadows.
    pub fn none() -> Self {
        ShadowPlan {
            count: 0,
            ..Default::default()
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.count > 0 && self.epochs == 0 {
            return Err(Error::invalid(
                "shadow epochs",
                0,
                "shadow models need at least one epoch",
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::invalid(
                "shadow confidence",
                self.confidence,
                "must be in (0, 1)",
            ));
        }
        Ok(())
    }

    /// Whether a key of `scheme` gets shadows under this plan.
    pub fn applies_to(&self, scheme: &dyn Scheme, key: &KeyFile) -> bool {
        self.count > 0 && (self.also_for_exact_nulls || !scheme.null_is_exact(key))
    }
}

/// `$XDG_CACHE_HOME/nnmark/shadows`, else `~/.cache/nnmark/shadows`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("nnmark/shadows");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/nnmark/shadows")
}

/// One shadow's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecipe {
    /// Its architecture.
    pub architecture: Architecture,
    /// How it trains (seed included).
    pub config: TrainConfig,
}

/// An architecture unlike `arch` that takes the same inputs: the MLP for convolutional and
/// recurrent models, LeNet for the MLP.
pub fn other_architecture(arch: Architecture) -> Architecture {
    match arch {
        Architecture::Mlp => Architecture::Lenet,
        _ => Architecture::Mlp,
    }
}

fn shadow_seed(key_seed: u64, index: usize) -> u64 {
    // SplitMix64 of the key seed and index: far from any seed a user would type.
    let mut z = key_seed ^ 0x5EAD_0000_0000_0000u64.wrapping_add(index as u64);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The recipes of `count` shadows for a model of `arch`, seeded from `key_seed`: the
/// architecture alternates between `arch` and [`other_architecture`]; the optimiser cycles
/// through SGD (lr 0.03, momentum 0.9, cosine), Adam (lr 0.001, constant) and SGD (lr 0.01,
/// momentum 0.9, constant, batch 128).
pub fn recipes(
    arch: Architecture,
    count: usize,
    epochs: usize,
    key_seed: u64,
) -> Vec<ShadowRecipe> {
    (0..count)
        .map(|j| {
            let architecture = if j % 2 == 0 {
                arch
            } else {
                other_architecture(arch)
            };
            let seed = shadow_seed(key_seed, j);
            let base = TrainConfig {
                epochs,
                seed,
                ..Default::default()
            };
            let config = match (j / 2) % 3 {
                0 => base,
                1 => TrainConfig {
                    optimizer: OptimizerConfig::Adam {
                        lr: OptimizerConfig::ADAM_LR,
                        weight_decay: 0.0,
                    },
                    schedule: LrSchedule::Constant,
                    ..base
                },
                _ => TrainConfig {
                    optimizer: OptimizerConfig::sgd_momentum(0.01),
                    schedule: LrSchedule::Constant,
                    batch_size: 128,
                    ..base
                },
            };
            ShadowRecipe {
                config: config.fitted_to(architecture),
                architecture,
            }
        })
        .collect()
}

/// SHA-256 of a data set's shape, pixels and labels: what a cached shadow was trained on.
pub fn dataset_digest(data: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update(b"nnmark-dataset-v1\0");
    h.update(data.shape.to_string().as_bytes());
    h.update((data.num_classes as u64).to_le_bytes());
    h.update(data.labels());
    for v in data.pixels() {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

fn cache_name(spec: &ModelSpec, recipe: &ShadowRecipe, data_digest: &str) -> String {
    let id = serde_json::json!({
        "data": data_digest, "spec": spec, "config": recipe.config,
        "nnmark": crate::VERSION, "burn": crate::BURN_VERSION,
    })
    .to_string();
    format!("{}.safetensors", crate::io::sha256_hex(id.as_bytes()))
}

/// Trains shadows, or loads them from `cache` where they were trained before: cached ones
/// are loaded (a damaged file is retrained and replaced, not trusted), the others trained
/// together ([`train::train_many`]: bit for bit what training each alone gives) and cached.
pub fn train_shadows(
    recipes: &[ShadowRecipe],
    data: &Dataset,
    data_digest: &str,
    cache: Option<&Path>,
    device: &Device,
) -> Result<Vec<Model>> {
    let spec_of = |recipe: &ShadowRecipe| ModelSpec {
        architecture: recipe.architecture,
        input: data.shape,
        num_classes: data.num_classes,
        normalization: Normalization::from_dataset(data),
    };
    let mut models: Vec<Option<Model>> = Vec::with_capacity(recipes.len());
    let mut missing = Vec::new();
    for (i, recipe) in recipes.iter().enumerate() {
        let spec = spec_of(recipe);
        let path = cache.map(|dir| dir.join(cache_name(&spec, recipe, data_digest)));
        let loaded = match &path {
            Some(p) if p.exists() => match weights::load(p, Some(&spec), device) {
                Ok(l) => Some(l.model),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "retraining a shadow model whose cache file does not load");
                    None
                }
            },
            _ => None,
        };
        if loaded.is_none() {
            missing.push(i);
        }
        models.push(loaded);
    }
    if !missing.is_empty() {
        tracing::info!(
            count = missing.len(),
            of = recipes.len(),
            "training shadow models together"
        );
        let jobs = missing
            .iter()
            .map(|&i| {
                let r = &recipes[i];
                Ok((
                    Model::seeded(spec_of(r), r.config.seed, device)?,
                    r.config.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        for (&i, (model, _)) in missing.iter().zip(train::train_many(jobs, data, device)?) {
            let recipe = &recipes[i];
            let spec = spec_of(recipe);
            if let Some(dir) = cache {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let mut meta =
                    WeightsMeta::new(spec.clone(), data.name.clone(), recipe.config.seed);
                meta.extra.insert(
                    "train_config".into(),
                    serde_json::to_string(&recipe.config).expect("serialises"),
                );
                weights::save(
                    &model,
                    &meta,
                    &dir.join(cache_name(&spec, recipe, data_digest)),
                )?;
            }
            models[i] = Some(model);
        }
    }
    models
        .into_iter()
        .map(|m| {
            m.ok_or_else(|| {
                Error::invalid("shadow models", "training", "a shadow model is missing")
            })
        })
        .collect()
}

/// One shadow model's answers on a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// Architecture and optimiser, for people.
    pub name: String,
    /// How it was trained.
    pub recipe: ShadowRecipe,
    /// Its accuracy on the owner's test split, when one was given.
    #[serde(default)]
    pub test_accuracy: Option<f64>,
    /// Key items it answered as the key says.
    pub matches: u64,
    /// Key items it was asked.
    pub queries: u64,
    /// Its answer per key item, in the order the scheme queries them.
    pub answers: Vec<usize>,
}

/// Shadow models' answers on a key: the measured null a verdict is judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowCalibration {
    /// Confidence of each shadow's upper bound.
    pub confidence: f64,
    /// The shadows.
    pub shadows: Vec<ShadowRecord>,
    /// SHA-256 of the data they were trained on ([`dataset_digest`]).
    pub data_digest: String,
}

impl ShadowCalibration {
    /// The calibrated null, never below `floor` (the scheme's analytic rate).
    pub fn null(&self, floor: f64) -> NullModel {
        NullModel::Calibrated {
            matches: self.shadows.iter().map(|s| s.matches).collect(),
            queries: self.shadows.iter().map(|s| s.queries).collect(),
            confidence: self.confidence,
            references: self
                .shadows
                .iter()
                .map(|s| format!("shadow {}", s.name))
                .collect(),
            floor,
        }
    }

    /// The key's calibration, when it has one.
    pub fn of_key(key: &KeyFile) -> Result<Option<Self>> {
        match key.meta.notes.get(CALIBRATION_NOTE) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                Error::invalid(
                    "key note calibration",
                    &key.meta.scheme,
                    format!("is not a shadow calibration: {e}"),
                )
            }),
        }
    }

    /// Stores it in the key (the key's commitment must be made afterwards).
    pub fn store(&self, key: &mut KeyFile) {
        key.meta.notes.insert(
            CALIBRATION_NOTE.into(),
            serde_json::to_value(self).expect("serialises"),
        );
    }
}

/// Trains (or loads) the plan's shadows on `data` and asks each the key: the calibration to
/// store in it. `test` (the owner's test split) only adds each shadow's accuracy to the record.
pub fn calibrate_key(
    key: &KeyFile,
    scheme: &dyn Scheme,
    plan: &ShadowPlan,
    data: &Dataset,
    test: Option<&Dataset>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<ShadowCalibration> {
    plan.validate()?;
    let digest = dataset_digest(data);
    let recipes = recipes(
        key.meta.spec.architecture,
        plan.count,
        plan.epochs,
        key.meta.seed,
    );
    // Trained together where the architectures allow: the same models as one by one.
    let _ = observer;
    let models = train_shadows(&recipes, data, &digest, plan.cache.as_deref(), device)?;
    let mut shadows = Vec::with_capacity(plan.count);
    for (j, (recipe, model)) in recipes.into_iter().zip(models).enumerate() {
        let name = format!(
            "{} {} #{}",
            recipe.architecture,
            match recipe.config.optimizer {
                OptimizerConfig::Sgd { lr, .. } => format!("sgd lr {lr}"),
                OptimizerConfig::Adam { lr, .. } => format!("adam lr {lr}"),
            },
            j + 1
        );
        tracing::info!(shadow = %name, of = plan.count, "shadow model");
        let x = scheme.extract(key, &mut Suspect::Model(&model))?;
        let test_accuracy = match test {
            Some(t) => Some(train::evaluate(&model, t, 256)?.accuracy),
            None => None,
        };
        shadows.push(ShadowRecord {
            name,
            recipe,
            test_accuracy,
            matches: x.matches,
            queries: x.queries,
            answers: x.answers,
        });
    }
    Ok(ShadowCalibration {
        confidence: plan.confidence,
        shadows,
        data_digest: digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_vary_architecture_optimiser_and_seed() {
        let r = recipes(Architecture::Lenet, 6, 3, 1);
        let archs: Vec<_> = r.iter().map(|x| x.architecture).collect();
        assert_eq!(
            archs.iter().filter(|&&a| a == Architecture::Lenet).count(),
            3
        );
        assert_eq!(archs.iter().filter(|&&a| a == Architecture::Mlp).count(), 3);
        let adam = r
            .iter()
            .filter(|x| matches!(x.config.optimizer, OptimizerConfig::Adam { .. }))
            .count();
        assert_eq!(adam, 2);
        let mut seeds: Vec<u64> = r.iter().map(|x| x.config.seed).collect();
        seeds.sort();
        seeds.dedup();
        assert_eq!(seeds.len(), 6);
        // No shadow reuses a small seed a user would give the clean model.
        assert!(seeds.iter().all(|&s| s > 1_000_000));
        assert!(r.iter().all(|x| x.config.epochs == 3));
    }
}
