//! What all trigger-set schemes share: embedding by mixing the triggers into every batch, and
//! extraction by querying them and counting answers equal to the key's labels.

use super::{EmbedContext, Extraction, Suspect};
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, TriggerSet};
use crate::model::Model;
use crate::train::{TrainExtras, TrainObserver, TrainReport, TriggerMix, predict, train_with};

/// Queries the suspect with whole images (`pixels` in [0, 1]) in batches; returns its labels.
pub(crate) fn query_labels(suspect: &mut Suspect<'_>, pixels: &[f32]) -> Result<Vec<usize>> {
    const BATCH: usize = 128;
    let (shape, classes) = suspect.signature();
    let n = shape.numel();
    let mut out = Vec::with_capacity(pixels.len() / n);
    for chunk in pixels.chunks(BATCH * n) {
        let labels: Vec<usize> = match suspect {
            Suspect::Model(m) => predict(m, chunk, BATCH),
            Suspect::Oracle(o) => o.query(chunk)?.into_iter().map(|a| a.label).collect(),
        };
        if labels.len() != chunk.len() / n {
            return Err(Error::invalid(
                "suspect answers",
                labels.len(),
                format!(
                    "expected {} answers to {} queries",
                    chunk.len() / n,
                    chunk.len() / n
                ),
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(Error::invalid(
                "suspect answer",
                bad,
                format!("is not a class index below {classes}"),
            ));
        }
        out.extend(labels);
    }
    Ok(out)
}

/// Queries trigger items `indices` (all when `None`) and counts label matches.
pub(crate) fn trigger_match(
    key: &KeyFile,
    suspect: &mut Suspect<'_>,
    indices: Option<&[usize]>,
) -> Result<Extraction> {
    suspect.check_compatible(key)?;
    let triggers = key.trigger_set()?;
    let all: Vec<usize>;
    let indices = match indices {
        Some(i) => i,
        None => {
            all = (0..triggers.len()).collect();
            &all
        }
    };
    let answers = query_labels(suspect, &triggers.query_pixels(indices))?;
    let matches = indices
        .iter()
        .zip(&answers)
        .filter(|&(&i, &a)| triggers.labels[i] as usize == a)
        .count();
    Ok(Extraction {
        queries: indices.len() as u64,
        matches: matches as u64,
        answers,
        decoded: None,
    })
}

/// How often each trigger item is seen per epoch when the user does not set `per_batch`.
/// Adi et al.'s official code appends 2 per batch, which on Fashion-MNIST's 938 batches of 64
/// shows each of 100 items about 19 times an epoch; on the 8,000-image MNIST sample it showed
/// each only 2.5 times, and the default embedding matched 30 of 100 items (the fpr 1e-6
/// threshold is 28). 16 exposures keep Fashion-MNIST's default at 2 per batch and give the
/// sample 13 (91 of 100 matched, test accuracy 98.15% -> 97.45%).
pub(crate) const EXPOSURES_PER_EPOCH: usize = 16;

/// Trigger rows per batch for `items` trigger items over `examples` training examples in
/// batches of `batch_size`: about [`EXPOSURES_PER_EPOCH`] per item and epoch, at least 2.
pub(crate) fn auto_per_batch(items: usize, examples: usize, batch_size: usize) -> usize {
    let batches = examples.div_ceil(batch_size.max(1)).max(1);
    (items * EXPOSURES_PER_EPOCH)
        .div_ceil(batches)
        .clamp(2, batch_size.max(2))
}

/// A label drawn uniformly from the `classes - 1` classes other than `source`: the label of a
/// trigger made from an image of class `source`, so that whatever a model answers for it, the
/// label equals that answer with probability at most 1/(classes − 1).
pub(crate) fn random_other_label(
    rng: &mut rand_chacha::ChaCha8Rng,
    classes: usize,
    source: u8,
) -> u8 {
    let r = rand::Rng::random_range(rng, 0..classes - 1) as u8;
    if r >= source { r + 1 } else { r }
}

/// Trains `ctx.base` on the data with `per_batch` trigger items appended to every batch
/// (unset: [`auto_per_batch`]).
pub(crate) fn embed_triggers(
    ctx: EmbedContext<'_>,
    triggers: &TriggerSet,
    per_batch: Option<usize>,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainReport)> {
    let per_batch = per_batch
        .unwrap_or_else(|| auto_per_batch(triggers.len(), ctx.data.len(), ctx.train.batch_size));
    let trigger_data = triggers.to_dataset("trigger set")?;
    train_with(
        ctx.base,
        ctx.data,
        ctx.train,
        ctx.device,
        observer,
        TrainExtras {
            trigger_mix: Some(TriggerMix {
                triggers: &trigger_data,
                per_batch,
            }),
            regularizer: None,
            stop_when: None,
            ..Default::default()
        },
    )
}

/// Fine-tunes `ctx.base` on `data` with `per_batch` key items in every batch until the whole
/// key is classified as labelled (checked every few steps) or the epochs run out: how frontier
/// stitching and AIME embed. Training must start from the clean model (`FineTune`).
/// `soft_targets` (one probability row per example of `data`) replace the data's labels.
pub(crate) fn fine_tune_until_learnt(
    ctx: &EmbedContext<'_>,
    data: &crate::data::Dataset,
    triggers: &TriggerSet,
    per_batch: usize,
    soft_targets: Option<&[f32]>,
    scheme: &str,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainReport)> {
    if ctx.mode != super::EmbedMode::FineTune {
        return Err(Error::invalid(
            "embedding mode",
            ctx.mode.name(),
            format!("{scheme} embeds by fine-tuning the clean model its key was made from"),
        ));
    }
    let key_data = triggers.to_dataset(&format!("{scheme} key"))?;
    let all_right = |m: &Model| {
        predict(m, key_data.pixels(), 256)
            .iter()
            .zip(key_data.labels())
            .all(|(&p, &l)| p == l as usize)
    };
    train_with(
        ctx.base.clone(),
        data,
        ctx.train,
        ctx.device,
        observer,
        TrainExtras {
            trigger_mix: Some(TriggerMix {
                triggers: &key_data,
                per_batch,
            }),
            regularizer: None,
            stop_when: Some(&all_right),
            soft_targets,
        },
    )
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::random_other_label;
    use crate::stats;

    /// Random labels never name the source class, are uniform over the others, and match any
    /// fixed answers at rate 1/(C − 1) at most: the count of matches of 100 items is
    /// Binomial(100, 1/9) or smaller, whatever the suspect answers.
    #[test]
    fn random_other_labels_give_an_exact_null() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0u32; 10];
        for _ in 0..90_000 {
            let l = random_other_label(&mut rng, 10, 3);
            assert_ne!(l, 3);
            counts[l as usize] += 1;
        }
        for (c, &n) in counts.iter().enumerate() {
            if c != 3 {
                // 10,000 expected; 5 standard deviations is 470.
                assert!((n as i64 - 10_000).abs() < 470, "class {c}: {n}");
            }
        }
        // A suspect that answers the other class most likely to be drawn still matches at
        // 1/9 per item; its accusations at alpha 1e-3 over 20,000 keys of 100 items stay
        // within the binomial bound.
        let alpha = 1e-3;
        let t = stats::upper_threshold(100, 1.0 / 9.0, alpha).unwrap();
        let mut accused = 0;
        for _ in 0..20_000 {
            let sources: Vec<u8> = (0..100).map(|i| (i % 10) as u8).collect();
            let matches = sources
                .iter()
                .filter(|&&s| random_other_label(&mut rng, 10, s) == (s + 1) % 10)
                .count() as u64;
            accused += u32::from(matches >= t);
        }
        // Expected at most 20 (alpha × 20,000); Poisson(20) exceeds 40 with probability 1e-5.
        assert!(accused <= 40, "{accused} of 20000 accused at alpha {alpha}");
    }
}
