//! AIME (Mehta, Mondol, Farahmandi, Tehranipoor 2022, "AIME: watermarking AI models by
//! leveraging errors"): the owner's signature is written into the model's natural
//! mispredictions. The signature (an ASCII string) becomes a digit string, one fixed-width
//! ASCII code per character; for each digit d an input of another class that the model
//! predicts as d is taken from the training data; the ordered list of those inputs is the key,
//! and fine-tuning on it with the mispredicted labels keeps the signature in place. Querying
//! the key in order and reading the predicted classes as digits gives the signature back.
//!
//! Improvement (optional, off by default): an interleaved repetition code. Each digit is put
//! into the key `repeat` times, the copies spread a whole signature apart
//! (d₀…dₙ₋₁ d₀…dₙ₋₁ …), and decoded by strict majority, so up to ⌊(repeat−1)/2⌋ flipped
//! predictions per digit are corrected. Reed–Solomon over GF(11) was considered and rejected:
//! a 10-class model cannot answer the eleventh symbol, so parity symbols equal to 10 could not
//! be embedded. The verification also reports the probability that an unmarked model
//! reproduces the whole signature by chance under the verdict's null rate p₀:
//! ∏ over digits of P(Binomial(repeat, p₀) > repeat/2).
//!
//! Which misprediction: the paper does not say. Measured on the MNIST sample (three LeNets,
//! seeds 1-3, 5 epochs): of seed 1's 64 training mispredictions, the ones it made with
//! probability ≥ 0.95 were repeated by both other models in 7 of 8 cases, those below 0.6 by
//! either of them in 8 of 27. So the default takes, for each digit, the misprediction the
//! model is least sure of (`pick = "least-confident"`); `"random"` is the seeded uniform choice.
//!
//! The null model: natural mispredictions transfer. Independent models trained on the same
//! data make many of the same errors, so the chance rate 1/C badly understates how often an
//! unmarked model answers a key item with its digit. Measured (`cargo run --release -p nnmark
//! --example aime_transfer`, LeNets seeds 1-7, 5 epochs, keys on seed 1): six independent
//! models matched a 15-item key (16180 ×3) in 4-6 items with least-confident picks and 6-7 with
//! random ones, a 30-item key in 6-10 and 8-11; the 1/10 chance null would accuse a model
//! matching 7 of 15 at p = 3e-4.
//!
//! Selection shadows (`screen`, default 3): models trained without the mark, with seeds of
//! their own (never the calibration shadows' of [`crate::shadow`], so the shadows that judge a
//! key did not choose it), whose predictions screen the candidates: a misprediction into d
//! that a selection shadow makes too, or a nearest confusion it calls a d, is taken only when
//! no unshared one is left. Measured on the default key of a LeNet on the MNIST sample (54
//! items; `tools/per_item_rates.py`): the six calibration shadows matched 131 of 324 items
//! unscreened, 102 screened (also screening the nearest confusions; 123 screening the natural
//! mispredictions only), so p₀ fell from 0.645 to 0.592 and the threshold at 1e-6 from 51 to
//! 49 of 54. The test `aime_screening_avoids_mispredictions_independent_models_share` checks
//! it on independent LeNets that are neither kind of shadow.
//! No formula bounds that rate, so AIME's null is not exact ([`Scheme::null_is_exact`](super::Scheme::null_is_exact)): keys
//! are judged against the shadow models `embed` stores in them ([`crate::shadow`]), never below
//! a fair coin, p₀ = 1/2 per key item (the key items are the model's own borderline errors, on
//! which an unrelated model may land either way). Six default shadows matched 13-26 of a
//! 54-item key on the MNIST sample, so p₀ = 0.645 and only a nearly complete match proves the
//! mark at 1e-6: the truth about this scheme's evidence.
//!
//! Where no training input of another class is predicted as d (or all are used), the key takes
//! the unused input of another class with the highest predicted probability of d (the nearest
//! confusion) and fine-tuning teaches it; the key notes record how many items needed that.
//!
//! Fine-tuning: the paper fine-tunes on the key with the mispredicted labels and reports
//! per-class accuracy within about 2 pp (its Table IV), but does not say what the rest of the
//! data is trained towards. Plain fine-tuning on the data's labels moved Fashion-MNIST's shirt
//! or coat class by up to 4.3 pp within 100 steps: the key items sit on that boundary, and the
//! labels pull the model away from the clean one everywhere. So by default (`anchor =
//! "clean-model"`) the data's targets are the clean model's own predicted probabilities: at the
//! start their gradient is exactly zero, only the key moves the model, and any drift elsewhere
//! is pulled back. Measured on Fashion-MNIST (`cargo run --release -p nnmark --example
//! aime_fashion`, six configurations, lr 0.002, 4 key items per batch): worst class drop
//! 0.9-1.3 pp against 1.3-4.3 pp with the labels at lr 0.0005, and every key still read after
//! 20% pruning. One key item per batch drifted even less (0.4-0.8 pp) but, against the anchor,
//! could not teach every nearest-confusion item: on the MNIST sample a 36-item key ("ACME" ×3)
//! stayed at 35/36 after 5 epochs, where 4 per batch learnt it in 2. `anchor = "labels"` is
//! plain fine-tuning.

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{EmbedContext, Extraction, KeyMaterial, KeygenContext, Suspect, TypedScheme, trigger};
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, KeyTensor, TriggerSet};
use crate::model::Model;
use crate::stats;
use crate::train::{TrainObserver, TrainReport, predict_proba};
use crate::verdict::NullModel;

/// AIME's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AimeParams {
    /// The owner's signature, printable ASCII (ignored when `digits` is given).
    pub signature: String,
    /// A raw digit signature instead of a text one (e.g. "70677").
    pub digits: Option<String>,
    /// Decimal digits per ASCII code: 3 (unambiguous, default) or 2 (the paper's "FCIS" →
    /// 70677383; codes 32-99 only).
    pub width: usize,
    /// Copies of each digit in the key (1: the paper; 3, 5, ...: the repetition code).
    /// Default 3: with one copy the default signature's 18 items cannot reach fpr 1e-6 even
    /// when all match (p = 3.8e-6 under the fair-coin null); with three, 54 items embedded on
    /// the MNIST sample in the default recipe all matched (p = 5.6e-17). Left unset, `embed`
    /// grows it by two (up to [`MAX_AUTO_REPEAT`]) while the key's shadows leave no full match
    /// provable: on an MLP, whose few mispredictions other MLPs share, three copies are not
    /// enough.
    pub repeat: usize,
    /// Key items appended to each fine-tuning batch.
    pub per_batch: usize,
    /// Which misprediction to take for a digit: `least-confident` (default) or `random`.
    pub pick: Pick,
    /// What the training data are fine-tuned towards beside the key: the `clean-model`'s own
    /// probabilities (default) or their `labels` (plain fine-tuning).
    pub anchor: Anchor,
    /// Selection shadows: models trained without the mark (seeds of their own, never those of
    /// the calibration shadows) whose shared mispredictions are not taken as key items. 0: no
    /// screening (keys written before the option).
    #[serde(default)]
    pub screen: usize,
}

/// The longest repetition code `embed` grows a default key to when its shadows leave the
/// default three copies unprovable.
pub const MAX_AUTO_REPEAT: usize = 9;

/// Epochs each selection shadow trains (as the calibration shadows' default).
const SCREEN_EPOCHS: usize = 5;

/// Keeps the selection shadows' seeds apart from the calibration shadows' (which are drawn
/// from the key seed itself): a shadow that chose the items must not also judge them.
const SCREEN_SEED_SALT: u64 = 0x5E1E_C7ED_0000_0001;

/// The targets of the training data while the key is fine-tuned in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// The data's own labels: ordinary fine-tuning.
    Labels,
    /// The clean model's predicted probabilities (cross-entropy against them, i.e. distilling
    /// the clean model into itself): the data pull the model back to what it was, so only the
    /// key moves, and per-class accuracy stays where it was.
    CleanModel,
}

/// How a key item is chosen among the model's mispredictions into a digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// The one the model predicts as the digit with the lowest probability: borderline
    /// errors are the model's own, confident ones are shared by independent models.
    LeastConfident,
    /// Uniformly at random (seeded).
    Random,
}

impl Default for AimeParams {
    fn default() -> Self {
        Self {
            signature: "nnmark".into(),
            digits: None,
            width: 3,
            repeat: 3,
            per_batch: 4,
            pick: Pick::LeastConfident,
            anchor: Anchor::CleanModel,
            screen: 3,
        }
    }
}

/// Each selection shadow's predicted class for every training input.
fn selection_predictions(ctx: &KeygenContext<'_>, count: usize) -> Result<Vec<Vec<usize>>> {
    let digest = crate::shadow::dataset_digest(ctx.data);
    let recipes = crate::shadow::recipes(
        ctx.spec.architecture,
        count,
        SCREEN_EPOCHS,
        ctx.seed ^ SCREEN_SEED_SALT,
    );
    crate::shadow::train_shadows(&recipes, ctx.data, &digest, ctx.shadow_cache, ctx.device)?
        .iter()
        .map(|model| {
            Ok(predict_proba(model, ctx.data.pixels(), 256)
                .iter()
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i)
                })
                .collect())
        })
        .collect()
}

/// Text → digits, `width` digits per ASCII code.
pub(crate) fn encode_signature(text: &str, width: usize) -> Result<Vec<u8>> {
    if width != 2 && width != 3 {
        return Err(Error::invalid(
            "aime parameter width",
            width,
            "must be 2 or 3",
        ));
    }
    if text.is_empty() {
        return Err(Error::invalid(
            "aime signature",
            "\"\"",
            "must not be empty",
        ));
    }
    let mut digits = Vec::with_capacity(text.len() * width);
    for (i, c) in text.chars().enumerate() {
        if !c.is_ascii() || c.is_ascii_control() {
            return Err(Error::invalid(
                "aime signature",
                text,
                format!(
                    "character {c:?} at position {i} is not printable ASCII; signatures are ASCII text"
                ),
            ));
        }
        let code = c as u32;
        if width == 2 && code > 99 {
            return Err(Error::invalid(
                "aime signature",
                text,
                format!("character {c:?} has ASCII code {code}, which needs 3 digits; use width 3"),
            ));
        }
        let s = format!("{code:0width$}");
        digits.extend(s.bytes().map(|b| b - b'0'));
    }
    Ok(digits)
}

/// Digits → text, or None when they are not a sequence of printable ASCII codes.
pub(crate) fn decode_signature(digits: &[u8], width: usize) -> Option<String> {
    if digits.is_empty() || !digits.len().is_multiple_of(width) || digits.iter().any(|&d| d > 9) {
        return None;
    }
    digits
        .chunks(width)
        .map(|c| {
            let code = c.iter().fold(0u32, |a, &d| a * 10 + d as u32);
            char::from_u32(code).filter(|ch| ch.is_ascii() && !ch.is_ascii_control())
        })
        .collect()
}

/// Interleaved repetition: the digit sequence written `repeat` times in a row.
pub(crate) fn repetition_encode(digits: &[u8], repeat: usize) -> Vec<u8> {
    (0..repeat).flat_map(|_| digits.iter().copied()).collect()
}

/// Strict-majority decoding of [`repetition_encode`]: None for a digit without a majority.
pub(crate) fn repetition_decode(answers: &[usize], n: usize, repeat: usize) -> Vec<Option<u8>> {
    (0..n)
        .map(|i| {
            let mut counts = [0usize; 256];
            for r in 0..repeat {
                if let Some(&a) = answers.get(r * n + i) {
                    counts[a.min(255)] += 1;
                }
            }
            let (d, c) = counts
                .iter()
                .enumerate()
                .max_by_key(|&(_, c)| *c)
                .expect("non-empty");
            (2 * c > repeat).then_some(d as u8)
        })
        .collect()
}

/// The scheme.
pub struct Aime;

impl Aime {
    fn digits(p: &AimeParams) -> Result<Vec<u8>> {
        match &p.digits {
            Some(d) => {
                if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::invalid(
                        "aime parameter digits",
                        d,
                        "must be a non-empty string of decimal digits",
                    ));
                }
                Ok(d.bytes().map(|b| b - b'0').collect())
            }
            None => encode_signature(&p.signature, p.width),
        }
    }
}

impl TypedScheme for Aime {
    type Params = AimeParams;

    fn name(&self) -> &'static str {
        "aime"
    }

    fn summary(&self) -> &'static str {
        "AIME: an owner signature written in the model's natural mispredictions (optional repetition code)"
    }

    fn defaults(&self) -> AimeParams {
        AimeParams::default()
    }

    fn check(&self, p: &mut AimeParams) -> Result<()> {
        if p.repeat == 0 || p.repeat.is_multiple_of(2) {
            return Err(Error::invalid(
                "aime parameter repeat",
                p.repeat,
                "must be odd (1 for the paper's scheme, 3 or 5 for the repetition code)",
            ));
        }
        if p.per_batch == 0 {
            return Err(Error::invalid(
                "aime parameter per_batch",
                0,
                "must be at least 1",
            ));
        }
        if p.width != 2 && p.width != 3 {
            return Err(Error::invalid(
                "aime parameter width",
                p.width,
                "must be 2 or 3",
            ));
        }
        Self::digits(p)?;
        Ok(())
    }

    fn keygen(&self, p: &AimeParams, ctx: &KeygenContext<'_>) -> Result<KeyMaterial> {
        let digits = Self::digits(p)?;
        let classes = ctx.spec.num_classes;
        if classes < 10 {
            return Err(Error::invalid(
                "model",
                format!("{classes} classes"),
                "AIME writes decimal digits as classes and needs a model with at least 10 classes",
            ));
        }
        let clean = ctx.clean.ok_or_else(|| {
            if ctx.external.is_some() {
                Error::invalid(
                    "scheme",
                    "aime",
                    "AIME keys are made for nnmark's own models only: their null is measured on shadow models nnmark trains; use frontier stitching or a trigger-set scheme for an outside model",
                )
            } else {
                Error::invalid(
                    "embedding mode",
                    "from-scratch",
                    "AIME reads its key off the trained model's mispredictions; embed by fine-tuning (--model)",
                )
            }
        })?;
        let data = ctx.data;
        let code = repetition_encode(&digits, p.repeat);
        let proba = predict_proba(clean, data.pixels(), 256);
        let preds: Vec<usize> = proba
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
                    .unwrap_or(0)
            })
            .collect();
        let labels = data.labels();
        // Confusion matrix: rows true class, columns predicted class.
        let mut confusion = vec![0f32; classes * classes];
        let mut by_pred: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, (&l, &p)) in labels.iter().zip(&preds).enumerate() {
            confusion[l as usize * classes + p] += 1.0;
            if l as usize != p {
                by_pred[p].push(i);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0xA1_4E);
        let mut used = vec![false; data.len()];
        let mut chosen = Vec::with_capacity(code.len());
        let mut fallbacks = 0usize;
        // Mispredictions the selection shadows share transfer to independent models: they
        // are skipped while any unshared one into the same digit is left.
        let screen = selection_predictions(ctx, p.screen)?;
        let shared = |i: usize, d: usize| screen.iter().any(|preds| preds[i] == d);
        let mut unscreened = 0usize;
        for &d in &code {
            let d = d as usize;
            let mut natural: Vec<usize> = by_pred[d]
                .iter()
                .copied()
                .filter(|&i| !used[i] && !shared(i, d))
                .collect();
            if natural.is_empty() {
                natural = by_pred[d].iter().copied().filter(|&i| !used[i]).collect();
                unscreened += usize::from(!natural.is_empty());
            }
            let found = match p.pick {
                Pick::Random => natural.choose(&mut rng).copied(),
                Pick::LeastConfident => natural
                    .iter()
                    .copied()
                    .min_by(|&a, &b| proba[a][d].total_cmp(&proba[b][d])),
            };
            let pick = match found {
                Some(i) => i,
                None => {
                    // Nearest confusion: the unused input of another class the model finds
                    // most like a d, among those no selection shadow calls a d (one they do
                    // is a confusion independent models share).
                    fallbacks += 1;
                    let nearest = |screened: bool| {
                        (0..data.len())
                            .filter(|&i| !used[i] && labels[i] as usize != d)
                            .filter(|&i| !screened || !shared(i, d))
                            .max_by(|&a, &b| proba[a][d].total_cmp(&proba[b][d]))
                    };
                    nearest(true).or_else(|| nearest(false)).ok_or_else(|| {
                        Error::invalid(
                            "aime key",
                            code.len(),
                            "the training data has too few inputs for this signature",
                        )
                    })?
                }
            };
            used[pick] = true;
            chosen.push(pick);
        }
        if fallbacks > 0 {
            tracing::warn!(
                fallbacks,
                "AIME: no unused natural misprediction for some key digits; took the nearest confusion instead (fine-tuning teaches them)"
            );
        }
        let n = data.shape.numel();
        let mut pixels = Vec::with_capacity(chosen.len() * n);
        for &i in &chosen {
            pixels.extend(
                data.image(i)
                    .iter()
                    .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
            );
        }
        let mut extra = std::collections::BTreeMap::new();
        extra.insert(
            "confusion".to_string(),
            KeyTensor {
                shape: vec![classes, classes],
                values: confusion,
            },
        );
        extra.insert(
            "true_labels".to_string(),
            KeyTensor {
                shape: vec![chosen.len()],
                values: chosen.iter().map(|&i| labels[i] as f32).collect(),
            },
        );
        extra.insert(
            "source_index".to_string(),
            KeyTensor {
                shape: vec![chosen.len()],
                values: chosen.iter().map(|&i| i as f32).collect(),
            },
        );
        extra.insert(
            "shared_with_selection_shadows".to_string(),
            KeyTensor {
                shape: vec![1],
                values: vec![unscreened as f32],
            },
        );
        extra.insert(
            "nearest_confusion".to_string(),
            KeyTensor {
                shape: vec![1],
                values: vec![fallbacks as f32],
            },
        );
        Ok(KeyMaterial {
            triggers: Some(TriggerSet {
                shape: data.shape,
                num_classes: classes,
                pixels,
                labels: code,
            }),
            nonces: None,
            extra,
            params: None,
        })
    }

    /// Fine-tunes on the data with key items (labelled with their signature digits) in every
    /// batch, until the whole key answers the signature or the epochs run out.
    fn embed(
        &self,
        p: &AimeParams,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)> {
        let triggers = key.triggers.as_ref().expect("aime keys hold triggers");
        // The key's inputs come from the training data with their true labels; fine-tuning on
        // both labels at once would fight itself, so they leave the training data.
        let data = match key.extra.get("source_index") {
            Some(src) => {
                let mut drop = vec![false; ctx.data.len()];
                for &i in &src.values {
                    if let Some(d) = drop.get_mut(i as usize) {
                        *d = true;
                    }
                }
                let keep: Vec<usize> = (0..ctx.data.len()).filter(|&i| !drop[i]).collect();
                ctx.data.subset(&keep)
            }
            None => ctx.data.clone(),
        };
        let soft = match p.anchor {
            Anchor::Labels => None,
            Anchor::CleanModel => Some(
                predict_proba(&ctx.base, data.pixels(), 256)
                    .into_iter()
                    .flatten()
                    .collect::<Vec<f32>>(),
            ),
        };
        trigger::fine_tune_until_learnt(
            &ctx,
            &data,
            triggers,
            p.per_batch,
            soft.as_deref(),
            "AIME",
            observer,
        )
    }

    /// Queries the key in order and decodes the signature (majority per digit when repeated).
    fn extract(
        &self,
        p: &AimeParams,
        key: &KeyFile,
        suspect: &mut Suspect<'_>,
    ) -> Result<Extraction> {
        let digits = Self::digits(p)?;
        let mut x = trigger::trigger_match(key, suspect, None)?;
        let decoded = repetition_decode(&x.answers, digits.len(), p.repeat);
        let text: String = decoded
            .iter()
            .map(|d| d.map_or('?', |d| (b'0' + d.min(9)) as char))
            .collect();
        x.decoded = Some(match (&p.digits, decoded.iter().all(|d| d.is_some())) {
            (None, true) => {
                let ds: Vec<u8> = decoded.iter().map(|d| d.unwrap_or(0)).collect();
                decode_signature(&ds, p.width).unwrap_or(text)
            }
            _ => text,
        });
        Ok(x)
    }

    /// A fair coin per key item, not the chance rate 1/C: independent models repeat natural
    /// mispredictions (see the module notes for the measurements).
    /// Two more copies of each digit, up to [`MAX_AUTO_REPEAT`], unless the user set `repeat`:
    /// a longer repetition code is the same signature with more evidence.
    fn longer_key(&self, p: &AimeParams, requested: &serde_json::Value) -> Option<AimeParams> {
        if requested.get("repeat").is_some() || p.repeat + 2 > MAX_AUTO_REPEAT {
            return None;
        }
        Some(AimeParams {
            repeat: p.repeat + 2,
            ..p.clone()
        })
    }

    fn analytic_null(&self, _p: &AimeParams, _key: &KeyFile) -> NullModel {
        NullModel::FairCoin
    }

    fn message(&self, p: &AimeParams, _key: &KeyFile) -> Result<Option<String>> {
        Ok(Some(
            p.digits.clone().unwrap_or_else(|| p.signature.clone()),
        ))
    }

    /// ∏ over digits of P(strict majority of its `repeat` copies matches) at rate `p0`.
    fn message_chance(&self, p: &AimeParams, _key: &KeyFile, p0: f64) -> Result<Option<f64>> {
        let n = Self::digits(p)?.len();
        let per_digit = stats::binomial_upper_tail((p.repeat / 2 + 1) as u64, p.repeat as u64, p0)?;
        Ok(Some(per_digit.powi(n as i32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{Scheme, parse_params};

    #[test]
    fn signatures_encode_and_decode() {
        assert_eq!(
            encode_signature("FCIS", 2).unwrap(),
            vec![7, 0, 6, 7, 7, 3, 8, 3]
        );
        assert_eq!(
            decode_signature(&[7, 0, 6, 7, 7, 3, 8, 3], 2).unwrap(),
            "FCIS"
        );
        let d = encode_signature("nnmark~", 3).unwrap();
        assert_eq!(&d[..3], &[1, 1, 0]);
        assert_eq!(decode_signature(&d, 3).unwrap(), "nnmark~");
        assert!(
            encode_signature("café", 3)
                .unwrap_err()
                .to_string()
                .contains("'é'")
        );
        assert!(
            encode_signature("owner", 2)
                .unwrap_err()
                .to_string()
                .contains("width 3")
        );
        assert!(encode_signature("", 3).is_err());
        assert!(decode_signature(&[0, 0, 7], 3).is_none()); // control character
    }

    #[test]
    fn a_default_key_grows_by_two_copies_up_to_the_cap_and_a_chosen_one_never() {
        let defaults = Scheme::params(&Aime, &serde_json::Value::Null).unwrap();
        let mut resolved = defaults.clone();
        let mut seen = vec![3];
        while let Some(longer) = Scheme::longer_key(&Aime, &resolved, &serde_json::Value::Null) {
            let p: AimeParams = parse_params("aime", &longer).unwrap();
            seen.push(p.repeat);
            resolved = longer;
        }
        assert_eq!(seen, vec![3, 5, 7, 9]);
        // Everything but the length stays.
        let last: AimeParams = parse_params("aime", &resolved).unwrap();
        assert_eq!(
            last,
            AimeParams {
                repeat: MAX_AUTO_REPEAT,
                ..AimeParams::default()
            }
        );
        // A repeat the user chose is theirs.
        let chosen = serde_json::json!({ "repeat": 3 });
        let resolved = Scheme::params(&Aime, &chosen).unwrap();
        assert!(Scheme::longer_key(&Aime, &resolved, &chosen).is_none());
    }

    #[test]
    fn repetition_code_corrects_minority_flips() {
        let digits = [3u8, 1, 4, 1, 5];
        let code = repetition_encode(&digits, 3);
        assert_eq!(code.len(), 15);
        let mut answers: Vec<usize> = code.iter().map(|&d| d as usize).collect();
        answers[0] = 9; // one copy of digit 0
        answers[5 + 4] = 0; // one copy of digit 4
        let decoded = repetition_decode(&answers, 5, 3);
        assert_eq!(decoded, digits.map(Some).to_vec());
        answers[10] = 9; // a second copy of digit 0: no majority left
        assert_eq!(repetition_decode(&answers, 5, 3)[0], Some(9));
        answers[10] = 8;
        assert_eq!(repetition_decode(&answers, 5, 3)[0], None);
    }
}
