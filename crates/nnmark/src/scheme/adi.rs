//! Adi et al. 2018, "Turning your weakness into a strength: watermarking deep neural networks
//! by backdooring": a trigger set of abstract images with uniformly random labels, embedded by
//! appending trigger images to every training batch, with hash commitments so ownership can be
//! shown publicly (see [`crate::commit`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::abstract_art::abstract_image;
use super::{EmbedContext, Extraction, KeyMaterial, KeygenContext, Suspect, TypedScheme, trigger};
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, TriggerSet};
use crate::model::Model;
use crate::train::{TrainObserver, TrainReport};
use crate::verdict::NullModel;

/// Adi et al.'s parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdiParams {
    /// Trigger images (the paper: 100).
    pub items: usize,
    /// Trigger images appended to each training batch (the official code: 2); unset, enough
    /// for every item to be seen about 16 times an epoch (`auto_per_batch` in the trigger module: 2 on
    /// Fashion-MNIST, 13 on the 8,000-image MNIST sample).
    #[serde(default)]
    pub per_batch: Option<usize>,
}

impl Default for AdiParams {
    fn default() -> Self {
        Self {
            items: 100,
            per_batch: None,
        }
    }
}

/// The scheme.
pub struct Adi;

impl TypedScheme for Adi {
    type Params = AdiParams;

    fn name(&self) -> &'static str {
        "adi"
    }

    fn summary(&self) -> &'static str {
        "Adi et al. 2018: abstract images with random labels, hash commitments for public verification"
    }

    fn defaults(&self) -> AdiParams {
        AdiParams::default()
    }

    fn check(&self, p: &mut AdiParams) -> Result<()> {
        if p.items == 0 || p.per_batch == Some(0) {
            return Err(Error::invalid(
                "adi parameters",
                format!("items={} per_batch={:?}", p.items, p.per_batch),
                "items and per_batch must be at least 1",
            ));
        }
        Ok(())
    }

    fn keygen(&self, p: &AdiParams, ctx: &KeygenContext<'_>) -> Result<KeyMaterial> {
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0xAD1_2018);
        let shape = ctx.spec.input;
        let mut pixels = Vec::with_capacity(p.items * shape.numel());
        let mut labels = Vec::with_capacity(p.items);
        for _ in 0..p.items {
            pixels.extend(
                abstract_image(&mut rng, shape)
                    .into_iter()
                    .map(|v| (v * 255.0).round() as u8),
            );
            labels.push(rng.random_range(0..ctx.spec.num_classes) as u8);
        }
        Ok(KeyMaterial {
            triggers: Some(TriggerSet {
                shape,
                num_classes: ctx.spec.num_classes,
                pixels,
                labels,
            }),
            nonces: Some(crate::commit::fresh_nonces(p.items)?),
            extra: Default::default(),
            params: None,
        })
    }

    fn embed(
        &self,
        p: &AdiParams,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)> {
        let triggers = key.triggers.as_ref().expect("adi keys hold triggers");
        trigger::embed_triggers(ctx, triggers, p.per_batch, observer)
    }

    /// Queries the unspent items only: revealed items are public and an attacker may have
    /// trained them away.
    fn extract(
        &self,
        _p: &AdiParams,
        key: &KeyFile,
        suspect: &mut Suspect<'_>,
    ) -> Result<Extraction> {
        let unspent = self.key_items(key)?;
        trigger::trigger_match(key, suspect, Some(&unspent))
    }

    fn key_items(&self, key: &KeyFile) -> Result<Vec<usize>> {
        let n = key.trigger_set()?.len();
        let unspent: Vec<usize> = (0..n).filter(|i| !key.meta.spent.contains(i)).collect();
        if unspent.is_empty() {
            return Err(Error::invalid(
                "key",
                "adi",
                "every trigger item has been revealed; private verification needs unspent items",
            ));
        }
        Ok(unspent)
    }

    /// Labels are uniform over the classes, so an unrelated model matches with probability 1/C.
    fn analytic_null(&self, _p: &AdiParams, key: &KeyFile) -> NullModel {
        NullModel::Chance {
            classes: key.meta.spec.num_classes,
        }
    }

    /// Exact: each label is drawn uniformly and independently of the images, so whatever an
    /// independent model answers for an image, the label equals it with probability 1/C,
    /// independently across items.
    fn null_is_exact(&self, _p: &AdiParams, _key: &KeyFile) -> bool {
        true
    }
}
