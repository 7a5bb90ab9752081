//! Watermarking schemes: key generation → embedding → extraction → decision.
//!
//! Every scheme implements [`Scheme`] and has one line in [`REGISTRY`]; the CLI and the
//! evaluation matrix pick schemes by name. Black-box schemes see the suspect only through an
//! [`Oracle`]; white-box schemes declare [`Access::WhiteBox`] and get its weights.

mod abstract_art;
pub mod adi;
pub mod aime;
mod font;
pub mod frontier;
pub(crate) mod trigger;
pub mod uchida;
pub mod zhang;

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, KeyTensor, TriggerSet};
use crate::model::{Model, ModelSpec};
use crate::oracle::Oracle;
use crate::train::{TrainConfig, TrainObserver, TrainReport};
use crate::verdict::NullModel;

/// What a scheme needs from a suspect to extract its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Query access (labels) is enough.
    BlackBox,
    /// The suspect's weights are needed.
    WhiteBox,
}

/// How the mark goes into the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbedMode {
    /// Train a new model on the data and the key together.
    FromScratch,
    /// Start from a trained clean model and fine-tune it on the data and the key.
    FineTune,
    /// Train a new model on the data labelled by a trained teacher (its predictions, not the
    /// true labels) and the key: Uchida et al.'s distillation situation.
    Distillation,
}

impl std::str::FromStr for EmbedMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [
            EmbedMode::FromScratch,
            EmbedMode::FineTune,
            EmbedMode::Distillation,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            Error::invalid(
                "embedding mode",
                s,
                "known modes: from-scratch, fine-tune, distillation",
            )
        })
    }
}

impl EmbedMode {
    /// The name recorded in keys.
    pub fn name(&self) -> &'static str {
        match self {
            EmbedMode::FromScratch => "from-scratch",
            EmbedMode::FineTune => "fine-tune",
            EmbedMode::Distillation => "distillation",
        }
    }
}

/// A suspect model: a query interface, or weights for white-box schemes.
pub enum Suspect<'a> {
    /// Anything that answers queries.
    Oracle(&'a mut dyn Oracle),
    /// A model whose weights we hold (also answers queries).
    Model(&'a Model),
}

impl Suspect<'_> {
    /// The weights, when held.
    pub fn model(&self) -> Option<&Model> {
        match self {
            Suspect::Model(m) => Some(m),
            Suspect::Oracle(_) => None,
        }
    }

    /// Input shape and class count of the suspect.
    pub fn signature(&self) -> (crate::data::ImageShape, usize) {
        match self {
            Suspect::Model(m) => (m.spec.input, m.spec.num_classes),
            Suspect::Oracle(o) => (o.input_shape(), o.num_classes()),
        }
    }

    /// Rejects a suspect whose input shape or class count differs from the key's model.
    pub fn check_compatible(&self, key: &KeyFile) -> Result<()> {
        let (shape, classes) = self.signature();
        let spec = &key.meta.spec;
        if shape != spec.input {
            return Err(Error::invalid(
                "suspect",
                shape,
                format!(
                    "takes {shape} inputs but the key was made for {} inputs",
                    spec.input
                ),
            ));
        }
        if classes != spec.num_classes {
            return Err(Error::invalid(
                "suspect",
                format!("{classes} classes"),
                format!(
                    "answers with {classes} classes but the key was made for a {}-class model",
                    spec.num_classes
                ),
            ));
        }
        Ok(())
    }
}

/// Inputs to key generation.
pub struct KeygenContext<'a> {
    /// The owner's training data.
    pub data: &'a Dataset,
    /// The model to be marked (architecture, input, classes).
    pub spec: &'a ModelSpec,
    /// The trained clean model: the one being fine-tuned, or the teacher when distilling
    /// (model-dependent schemes need it).
    pub clean: Option<&'a Model>,
    /// The trained clean model when nnmark does not build it (a model marked in another
    /// framework): model-dependent schemes that support it query it instead of `clean`.
    pub external: Option<&'a dyn crate::external::ExternalModel>,
    /// Data from another distribution (Zhang's unrelated triggers).
    pub aux: Option<&'a Dataset>,
    /// The scheme's parameters, complete (see [`Scheme::params`]).
    pub params: &'a serde_json::Value,
    /// Seed for everything random in the key.
    pub seed: u64,
    /// Compute device, for schemes that run models while generating keys.
    pub device: &'a burn::prelude::Device,
    /// Folder of cached shadow models, for schemes that train selection shadows (None: train
    /// them afresh).
    pub shadow_cache: Option<&'a std::path::Path>,
}

/// The secret material a scheme generates.
#[derive(Debug, Clone, Default)]
pub struct KeyMaterial {
    /// Trigger items and their labels.
    pub triggers: Option<TriggerSet>,
    /// Commitment nonces (Adi et al.).
    pub nonces: Option<Vec<[u8; 32]>>,
    /// Scheme-specific arrays.
    pub extra: std::collections::BTreeMap<String, KeyTensor>,
    /// Parameters resolved during key generation (e.g. a default layer made explicit); they
    /// replace the requested ones in the key and in embedding.
    pub params: Option<serde_json::Value>,
}

/// Inputs to embedding.
pub struct EmbedContext<'a> {
    /// Fresh model (from scratch, distillation) or the clean model (fine-tune).
    pub base: Model,
    /// How the mark goes in.
    pub mode: EmbedMode,
    /// The owner's training data (labelled by the teacher when distilling).
    pub data: &'a Dataset,
    /// Training settings of the embedding run.
    pub train: &'a TrainConfig,
    /// The scheme's parameters, complete.
    pub params: &'a serde_json::Value,
    /// Compute device.
    pub device: &'a burn::prelude::Device,
}

/// What extraction read off a suspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// Key items queried (or bits read).
    pub queries: u64,
    /// Items answered as the key says (or bits equal).
    pub matches: u64,
    /// The suspect's answer per key item, in key order (labels or bits).
    pub answers: Vec<usize>,
    /// A decoded message, for schemes that carry one.
    pub decoded: Option<String>,
}

impl Extraction {
    /// matches / queries.
    pub fn match_rate(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.matches as f64 / self.queries as f64
        }
    }
}

/// A watermarking scheme, as the registry, the workflows and the evaluation matrix see it:
/// parameters as JSON (what keys store). Schemes implement [`TypedScheme`] instead.
pub trait Scheme: Sync {
    /// Registry name (`adi`, `zhang-content`, ...).
    fn name(&self) -> &'static str;
    /// One line for `--help` and reports.
    fn summary(&self) -> &'static str;
    /// What extraction needs from a suspect.
    fn access(&self) -> Access;
    /// The data set of other images key generation needs (by name), for an owner whose data
    /// set is `owner_dataset`; None when the scheme needs none. The workflow loads it and
    /// passes it as [`KeygenContext::aux`]; the user may name another.
    fn aux_data(&self, owner_dataset: &str) -> Option<&'static str>;
    /// The complete parameters: the paper's defaults with `overrides` (a JSON object) applied.
    /// Unknown or ill-typed fields are errors naming the field.
    fn params(&self, overrides: &serde_json::Value) -> Result<serde_json::Value>;
    /// Generates the secret key material.
    fn keygen(&self, ctx: &KeygenContext<'_>) -> Result<KeyMaterial>;
    /// Embeds the key into `ctx.base`; returns the marked model and how training went.
    fn embed(
        &self,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)>;
    /// Reads the mark off a suspect.
    fn extract(&self, key: &KeyFile, suspect: &mut Suspect<'_>) -> Result<Extraction>;
    /// The analytic null model: an unmarked model's chance of matching one key item.
    fn analytic_null(&self, key: &KeyFile) -> NullModel;
    /// Parameters for a longer key of this scheme, or None when the key cannot grow or its
    /// length was set by the user. `resolved` are the complete parameters of the key just made,
    /// `requested` the user's overrides. `embed` asks for it when the key's own null leaves
    /// no full match provable (unmarked models share too many items), and tries again.
    fn longer_key(
        &self,
        resolved: &serde_json::Value,
        requested: &serde_json::Value,
    ) -> Option<serde_json::Value>;
    /// True when [`Scheme::analytic_null`] bounds the match chance of *every* model trained
    /// without the key, whatever its architecture, data or training, with items matching
    /// independently: the key's labels (or bits) are drawn at random independently of
    /// anything such a model could depend on. False when the null has to be measured on shadow
    /// models (see [`crate::shadow`]).
    fn null_is_exact(&self, key: &KeyFile) -> bool;
    /// The trigger items a black-box check may query, each matching when the suspect answers
    /// the key's label (all of them unless the scheme says otherwise). Remote verification
    /// queries these one batch at a time; white-box schemes have none.
    fn key_items(&self, key: &KeyFile) -> Result<Vec<usize>>;
    /// The message the key carries (AIME's signature, Uchida's text), for schemes with one.
    fn message(&self, key: &KeyFile) -> Result<Option<String>>;
    /// The probability that an unmarked model, matching each key item with probability `p0`,
    /// reproduces the whole message; None for zero-bit schemes.
    fn message_chance(&self, key: &KeyFile, p0: f64) -> Result<Option<f64>>;
}

/// A scheme written against its own parameter struct. Every registered scheme implements this
/// trait; the registry sees it as a [`Scheme`] through the blanket implementation below, which
/// is the one place where parameters are read from JSON (the user's overrides, or the complete
/// parameters a key stores) into `Params`. A scheme's own code never sees JSON.
pub trait TypedScheme: Sync {
    /// The scheme's parameters, as stored in its keys (missing fields need a serde default, so
    /// older keys still load).
    type Params: Serialize + for<'de> Deserialize<'de>;
    /// Registry name (`adi`, `zhang-content`, ...).
    fn name(&self) -> &'static str;
    /// One line for `--help` and reports.
    fn summary(&self) -> &'static str;
    /// What extraction needs from a suspect.
    fn access(&self) -> Access {
        Access::BlackBox
    }
    /// See [`Scheme::aux_data`].
    fn aux_data(&self, _owner_dataset: &str) -> Option<&'static str> {
        None
    }
    /// The paper's parameters.
    fn defaults(&self) -> Self::Params;
    /// Fields of `Params` this scheme does not use (a struct shared by several schemes);
    /// overriding one is an error rather than silently ignored.
    fn inapplicable_params(&self) -> &'static [&'static str] {
        &[]
    }
    /// Checks complete parameters (ranges, combinations) before any work; may fill values
    /// derived from the others.
    fn check(&self, _params: &mut Self::Params) -> Result<()> {
        Ok(())
    }
    /// See [`Scheme::keygen`].
    fn keygen(&self, params: &Self::Params, ctx: &KeygenContext<'_>) -> Result<KeyMaterial>;
    /// See [`Scheme::embed`].
    fn embed(
        &self,
        params: &Self::Params,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)>;
    /// See [`Scheme::extract`].
    fn extract(
        &self,
        params: &Self::Params,
        key: &KeyFile,
        suspect: &mut Suspect<'_>,
    ) -> Result<Extraction>;
    /// See [`Scheme::analytic_null`].
    fn analytic_null(&self, params: &Self::Params, key: &KeyFile) -> NullModel;
    /// See [`Scheme::longer_key`]: the parameters of a longer key than `params`, or None.
    fn longer_key(
        &self,
        _params: &Self::Params,
        _requested: &serde_json::Value,
    ) -> Option<Self::Params> {
        None
    }
    /// See [`Scheme::null_is_exact`].
    fn null_is_exact(&self, _params: &Self::Params, _key: &KeyFile) -> bool {
        false
    }
    /// See [`Scheme::key_items`].
    fn key_items(&self, key: &KeyFile) -> Result<Vec<usize>> {
        if self.access() == Access::WhiteBox {
            return Err(Error::invalid(
                "scheme",
                self.name(),
                "is white-box: it reads weights and has no trigger items to query",
            ));
        }
        Ok((0..key.trigger_set()?.len()).collect())
    }
    /// See [`Scheme::message`].
    fn message(&self, _params: &Self::Params, _key: &KeyFile) -> Result<Option<String>> {
        Ok(None)
    }
    /// See [`Scheme::message_chance`].
    fn message_chance(
        &self,
        _params: &Self::Params,
        _key: &KeyFile,
        _p0: f64,
    ) -> Result<Option<f64>> {
        Ok(None)
    }
}

impl<T: TypedScheme> Scheme for T {
    fn name(&self) -> &'static str {
        TypedScheme::name(self)
    }
    fn summary(&self) -> &'static str {
        TypedScheme::summary(self)
    }
    fn access(&self) -> Access {
        TypedScheme::access(self)
    }
    fn aux_data(&self, owner_dataset: &str) -> Option<&'static str> {
        TypedScheme::aux_data(self, owner_dataset)
    }
    fn params(&self, overrides: &serde_json::Value) -> Result<serde_json::Value> {
        if let Some(o) = overrides.as_object()
            && let Some(k) = o
                .keys()
                .find(|k| self.inapplicable_params().contains(&k.as_str()))
        {
            return Err(Error::invalid(
                format!("{} parameter", TypedScheme::name(self)),
                k,
                "does not apply to this scheme",
            ));
        }
        let mut p = merge_params(TypedScheme::name(self), self.defaults(), overrides)?;
        self.check(&mut p)?;
        Ok(serde_json::to_value(p).expect("parameter structs serialise"))
    }
    fn keygen(&self, ctx: &KeygenContext<'_>) -> Result<KeyMaterial> {
        let mut p = parse_params(TypedScheme::name(self), ctx.params)?;
        self.check(&mut p)?;
        TypedScheme::keygen(self, &p, ctx)
    }
    fn embed(
        &self,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)> {
        let p = parse_params(TypedScheme::name(self), ctx.params)?;
        TypedScheme::embed(self, &p, ctx, key, observer)
    }
    fn extract(&self, key: &KeyFile, suspect: &mut Suspect<'_>) -> Result<Extraction> {
        let p = parse_params(TypedScheme::name(self), &key.meta.params)?;
        TypedScheme::extract(self, &p, key, suspect)
    }
    /// A key whose parameters do not parse gets the fair coin, the loosest null of any scheme
    /// here; no decision is made with it, because extraction refuses such a key first.
    fn analytic_null(&self, key: &KeyFile) -> NullModel {
        match parse_params(TypedScheme::name(self), &key.meta.params) {
            Ok(p) => TypedScheme::analytic_null(self, &p, key),
            Err(_) => NullModel::FairCoin,
        }
    }
    fn longer_key(
        &self,
        resolved: &serde_json::Value,
        requested: &serde_json::Value,
    ) -> Option<serde_json::Value> {
        let p = parse_params(TypedScheme::name(self), resolved).ok()?;
        let longer = TypedScheme::longer_key(self, &p, requested)?;
        serde_json::to_value(longer).ok()
    }
    /// Not exact when the key's parameters do not parse (the safe answer).
    fn null_is_exact(&self, key: &KeyFile) -> bool {
        parse_params(TypedScheme::name(self), &key.meta.params)
            .is_ok_and(|p| TypedScheme::null_is_exact(self, &p, key))
    }
    fn key_items(&self, key: &KeyFile) -> Result<Vec<usize>> {
        TypedScheme::key_items(self, key)
    }
    fn message(&self, key: &KeyFile) -> Result<Option<String>> {
        let p = parse_params(TypedScheme::name(self), &key.meta.params)?;
        TypedScheme::message(self, &p, key)
    }
    fn message_chance(&self, key: &KeyFile, p0: f64) -> Result<Option<f64>> {
        let p = parse_params(TypedScheme::name(self), &key.meta.params)?;
        TypedScheme::message_chance(self, &p, key, p0)
    }
}

/// Every scheme nnmark knows, by name. Adding a scheme: one file and one line here.
pub static REGISTRY: &[&dyn Scheme] = &[
    &adi::Adi,
    &zhang::Zhang(zhang::TriggerKind::Content),
    &zhang::Zhang(zhang::TriggerKind::Noise),
    &zhang::Zhang(zhang::TriggerKind::Unrelated),
    &frontier::FrontierStitching,
    &aime::Aime,
    &uchida::Uchida,
];

/// Looks a scheme up by name.
pub fn by_name(name: &str) -> Result<&'static dyn Scheme> {
    REGISTRY
        .iter()
        .copied()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            Error::invalid(
                "scheme",
                name,
                format!("known schemes: {}", names().join(", ")),
            )
        })
}

/// Names of all registered schemes.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name()).collect()
}

/// Checks that `key` was made by `scheme`.
pub fn check_key_scheme(scheme: &dyn Scheme, key: &KeyFile) -> Result<()> {
    if key.meta.scheme != scheme.name() {
        return Err(Error::invalid(
            "scheme",
            scheme.name(),
            format!(
                "the key was made by scheme '{}'; verify it with that scheme",
                key.meta.scheme
            ),
        ));
    }
    Ok(())
}

/// Merges JSON `overrides` into the serialised `defaults` of a parameter struct `P`, rejecting
/// unknown fields, and returns the completed parameters.
pub(crate) fn merge_params<P>(scheme: &str, defaults: P, overrides: &serde_json::Value) -> Result<P>
where
    P: Serialize + for<'de> Deserialize<'de>,
{
    let mut v = serde_json::to_value(defaults).expect("parameter structs serialise");
    match overrides {
        serde_json::Value::Null => {}
        serde_json::Value::Object(o) => {
            let obj = v.as_object_mut().expect("parameter structs are objects");
            for (k, val) in o {
                if !obj.contains_key(k) {
                    let known: Vec<&str> = obj.keys().map(|s| s.as_str()).collect();
                    return Err(Error::invalid(
                        format!("{scheme} parameter"),
                        k,
                        format!("unknown; known parameters: {}", known.join(", ")),
                    ));
                }
                obj.insert(k.clone(), val.clone());
            }
        }
        other => {
            return Err(Error::invalid(
                format!("{scheme} parameters"),
                other,
                "must be a JSON object",
            ));
        }
    }
    serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid(format!("{scheme} parameters"), v, e.to_string()))
}

/// Parses a complete parameter object of type `P` (as stored in a key).
pub(crate) fn parse_params<P>(scheme: &str, params: &serde_json::Value) -> Result<P>
where
    P: for<'de> Deserialize<'de>,
{
    serde_json::from_value(params.clone())
        .map_err(|e| Error::invalid(format!("{scheme} parameters"), params, e.to_string()))
}
