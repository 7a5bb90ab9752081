//! `Oracle`: a classifier run in this process (a model, an ONNX file, a model behind a query
//! filter) answering a batch of images with labels and, when it can, class probabilities,
//! synchronously. Schemes' black-box extraction, the attacks that query a model and `serve`
//! see only this trait, never a model's weights.
//!
//! A suspect that the evidence-writing verifier queries is an `nnmark_remote::Endpoint`
//! instead: one async batch interface for local models, ONNX files and HTTP services alike,
//! which records each exchange for the evidence. HTTP services implement it directly and an
//! oracle through `OracleEndpoint`; the adapter runs one way only, so nothing synchronous ever
//! waits on a network.

use serde::{Deserialize, Serialize};

use crate::data::ImageShape;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::{predict, predict_proba};

/// What an oracle reveals per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reveal {
    /// The predicted label only (what most real services return).
    Label,
    /// The k most probable classes with their probabilities.
    TopK(usize),
    /// The full probability vector.
    Probabilities,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Predicted class.
    pub label: usize,
    /// (class, probability) pairs, most probable first; empty when only labels are revealed.
    pub scores: Vec<(usize, f32)>,
}

/// Anything that classifies images.
pub trait Oracle {
    /// Shape of the images it takes.
    fn input_shape(&self) -> ImageShape;
    /// Number of classes it answers with.
    fn num_classes(&self) -> usize;
    /// A short description for logs and evidence (never key material).
    fn describe(&self) -> String;
    /// Classifies `pixels` (whole images of `input_shape`, values in [0, 1]).
    fn query(&mut self, pixels: &[f32]) -> Result<Vec<Answer>>;
    /// Queries answered so far.
    fn queries_made(&self) -> u64;
}

/// Checks that `pixels` holds whole images of `shape`; returns how many.
pub fn check_batch(pixels: &[f32], shape: ImageShape) -> Result<usize> {
    let n = shape.numel();
    if pixels.is_empty() || !pixels.len().is_multiple_of(n) {
        return Err(Error::invalid(
            "query batch",
            pixels.len(),
            format!("must be a positive multiple of {n} values ({shape} images)"),
        ));
    }
    Ok(pixels.len() / n)
}

/// Share of `test` that `oracle` labels correctly, asked in batches of 256 images.
pub fn accuracy(oracle: &mut dyn Oracle, test: &crate::data::Dataset) -> Result<f64> {
    let n = test.shape.numel();
    let mut right = 0usize;
    for (chunk, labels) in test.pixels().chunks(256 * n).zip(test.labels().chunks(256)) {
        right += oracle
            .query(chunk)?
            .iter()
            .zip(labels)
            .filter(|(a, l)| a.label == **l as usize)
            .count();
    }
    Ok(right as f64 / test.len().max(1) as f64)
}

/// (class, probability) pairs, most probable first (ties: the lower class first).
pub(crate) fn ranked(probabilities: Vec<f32>) -> Vec<(usize, f32)> {
    let mut scores: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scores
}

/// The answer a service configured with `reveal` gives for ranked scores: the top class, and
/// none, the top k or all of the scores.
pub(crate) fn answer_from_ranked(mut scores: Vec<(usize, f32)>, reveal: Reveal) -> Answer {
    let label = scores.first().map_or(0, |s| s.0);
    match reveal {
        Reveal::Label => scores.clear(),
        Reveal::TopK(k) => scores.truncate(k.clamp(1, scores.len().max(1))),
        Reveal::Probabilities => {}
    }
    Answer { label, scores }
}

/// A model held in memory, answering as a service configured with `reveal` would.
pub struct LocalOracle {
    model: Model,
    reveal: Reveal,
    queries: u64,
}

impl LocalOracle {
    /// Wraps a model.
    pub fn new(model: Model, reveal: Reveal) -> Self {
        Self {
            model,
            reveal,
            queries: 0,
        }
    }
}

impl Oracle for LocalOracle {
    fn input_shape(&self) -> ImageShape {
        self.model.spec.input
    }

    fn num_classes(&self) -> usize {
        self.model.spec.num_classes
    }

    fn describe(&self) -> String {
        format!(
            "local {} model ({} classes)",
            self.model.spec.architecture, self.model.spec.num_classes
        )
    }

    fn query(&mut self, pixels: &[f32]) -> Result<Vec<Answer>> {
        let n = check_batch(pixels, self.model.spec.input)?;
        self.queries += n as u64;
        if self.reveal == Reveal::Label {
            return Ok(predict(&self.model, pixels, 256)
                .into_iter()
                .map(|label| Answer {
                    label,
                    scores: Vec::new(),
                })
                .collect());
        }
        Ok(predict_proba(&self.model, pixels, 256)
            .into_iter()
            .map(|p| answer_from_ranked(ranked(p), self.reveal))
            .collect())
    }

    fn queries_made(&self) -> u64 {
        self.queries
    }
}
