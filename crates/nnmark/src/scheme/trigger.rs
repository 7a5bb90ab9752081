//! What all trigger-set schemes share: embedding by mixing the triggers into every batch, and
//! extraction by querying them and counting answers equal to the key's labels.

use super::{EmbedContext, Extraction, Suspect};
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, TriggerSet};
use crate::model::Model;
use crate::train::{TrainExtras, TrainObserver, TrainReport, TriggerMix, predict, train_with};

/// Queries the suspect with whole images (`pixels` in [0, 1]) in batches; returns its labels.
pub fn query_labels(suspect: &mut Suspect<'_>, pixels: &[f32]) -> Result<Vec<usize>> {
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
pub fn trigger_match(
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

/// Trains `ctx.base` on the data with `per_batch` trigger items appended to every batch.
pub(crate) fn embed_triggers(
    ctx: EmbedContext<'_>,
    triggers: &TriggerSet,
    per_batch: usize,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainReport)> {
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
