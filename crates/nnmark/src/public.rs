//! Public verification: a judge checks an owner's reveal bundle against the verification key
//! the owner published before the dispute, and queries the suspect with the opened items, all
//! without the marking key.
//!
//! The judge supplies the challenge (fresh, issued after the suspect was named) and may supply
//! reference models of their own choosing. The verdict then rests on:
//!
//! - the bundle opening against the verification key, answering the judge's challenge, and
//!   proving every item it skips ([`crate::commit::reveal`](mod@crate::commit::reveal));
//! - [`Verdict::decide_public`]: every skipped item counts as a miss, and the tail is multiplied
//!   by the key's item count, so neither spending items nor choosing how many to reveal after
//!   seeing the suspect's answers can make an innocent model look marked;
//! - the null match rate: 1/C when the key's labels were drawn uniformly at random,
//!   independently of any model (what nnmark's Adi keys do). The verification key cannot prove
//!   how the owner chose the labels: a dishonest owner could label the items the way a typical
//!   model answers them. Reference models the judge picks guard against that: their match rates
//!   on the opened items calibrate the null (the worst one's upper confidence bound, never below
//!   1/C), and only the judge, not the owner, chooses them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::commit::{RevealBundle, VerificationKey};
use crate::error::{Error, Result};
use crate::scheme::Suspect;
use crate::scheme::trigger::query_labels;
use crate::verdict::{NullModel, Verdict};

/// What a judge supplies besides the suspect.
pub struct PublicRequest<'a> {
    /// The owner's bundle.
    pub bundle: &'a RevealBundle,
    /// Where it was read from (for error messages).
    pub bundle_path: &'a Path,
    /// The verification key as published before the dispute.
    pub vk: &'a VerificationKey,
    /// The challenge the judge issued; the bundle must answer exactly this one.
    pub challenge: &'a str,
    /// False-positive rate of the decision.
    pub fpr: f64,
    /// Confidence of the upper bound on each reference model's match rate.
    pub confidence: f64,
}

/// A reference model's answers on the opened items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceMatch {
    /// Its name (file or description).
    pub name: String,
    /// Opened items it matched.
    pub matches: u64,
    /// Opened items it was asked.
    pub queries: u64,
}

/// The outcome of a public verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicVerification {
    /// Merkle root of the verification key.
    pub vk_root: String,
    /// Digest of the verification key (what a key commitment names).
    pub vk_digest: String,
    /// The challenge answered.
    pub challenge: String,
    /// Challenges of the earlier reveals the bundle proved.
    pub earlier_challenges: Vec<String>,
    /// Positions in the key of the opened items.
    pub opened: Vec<usize>,
    /// The judge's reference models on the opened items.
    pub references: Vec<ReferenceMatch>,
    /// The decision ([`Verdict::decide_public`]; its `reveal` says how items were counted).
    pub verdict: Verdict,
}

fn matches_on(suspect: &mut Suspect<'_>, pixels: &[f32], labels: &[u8]) -> Result<u64> {
    let answers = query_labels(suspect, pixels)?;
    Ok(answers
        .iter()
        .zip(labels)
        .filter(|&(&a, &l)| a == l as usize)
        .count() as u64)
}

fn check_signature(vk: &VerificationKey, name: &str, suspect: &Suspect<'_>) -> Result<()> {
    let (shape, classes) = suspect.signature();
    if shape != vk.input || classes != vk.num_classes {
        return Err(Error::invalid(
            "suspect",
            name,
            format!(
                "takes {shape} inputs with {classes} classes; the verification key is for {} inputs with {} classes",
                vk.input, vk.num_classes
            ),
        ));
    }
    Ok(())
}

/// Opens the bundle, queries the suspect (and the judge's references) with the opened items,
/// and decides.
pub fn verify_public<'a>(
    req: &PublicRequest<'_>,
    suspect_name: &str,
    suspect: &mut Suspect<'_>,
    references: impl IntoIterator<Item = (String, Suspect<'a>)>,
) -> Result<PublicVerification> {
    if req.bundle.challenge != req.challenge {
        return Err(Error::format(
            req.bundle_path,
            format!(
                "the bundle answers challenge '{}', not the one the judge issued ('{}'): a challenge the owner chose can be tried until it selects items an innocent model matches",
                req.bundle.challenge, req.challenge
            ),
        ));
    }
    let opened = req.bundle.open(req.vk, req.bundle_path)?;
    check_signature(req.vk, suspect_name, suspect)?;
    let all: Vec<usize> = (0..opened.items.len()).collect();
    let pixels = opened.items.query_pixels(&all);
    let matches = matches_on(suspect, &pixels, &opened.items.labels)?;
    let mut refs = Vec::new();
    for (name, mut r) in references {
        check_signature(req.vk, &name, &r)?;
        let m = matches_on(&mut r, &pixels, &opened.items.labels)?;
        refs.push(ReferenceMatch {
            name,
            matches: m,
            queries: all.len() as u64,
        });
    }
    let chance = NullModel::Chance {
        classes: req.vk.num_classes,
    };
    let null = if refs.is_empty() {
        chance
    } else {
        NullModel::Calibrated {
            matches: refs.iter().map(|r| r.matches).collect(),
            queries: refs.iter().map(|r| r.queries).collect(),
            confidence: req.confidence,
            references: refs.iter().map(|r| r.name.clone()).collect(),
            floor: chance.rate()?,
        }
    };
    let verdict = opened.decide(matches, null, req.fpr)?;
    Ok(PublicVerification {
        vk_root: req.vk.merkle_root.clone(),
        vk_digest: req.vk.digest(),
        challenge: req.challenge.into(),
        earlier_challenges: opened.earlier_challenges,
        opened: opened.indices,
        references: refs,
        verdict,
    })
}
