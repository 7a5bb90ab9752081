//! Public reveals: the owner opens the key items a judge's challenge selects, and anyone checks
//! them against the verification key published before the dispute.
//!
//! # Protocol
//!
//! Items are ranked by SHA-256(root ‖ challenge ‖ index); a reveal of `k` items opens the first
//! `k` in that order that earlier reveals have not spent. Spent items are skipped because they
//! are public: a thief may have trained them away. A bundle proves every item it skips: it
//! carries each earlier reveal (its challenge and openings), and [`RevealBundle::open`] replays
//! them in order, checking that each opened exactly the items its own challenge selected given
//! the reveals before it. A bundle that skips an item no carried reveal opened does not open.
//! All reveals together may open at most the verification key's `reveal_cap` items.
//!
//! # Threat model
//!
//! - **Dishonest owner** (wants an innocent model accused). Holds the key, sees the judge's
//!   challenge and can query the suspect. They can make "earlier" reveals at will, under
//!   challenges of their own choice, after seeing the judge's challenge: a proof of spending
//!   shows that an item is public, not that the owner did not choose it. So the verdict does not
//!   rely on the spending being honest. Given the judge's challenge, the ranking is fixed (it
//!   does not depend on the spending history, which would let the owner re-draw it by trying
//!   histories); whatever the owner spends, the `k` opened items lie among the first `k + s`
//!   ranked items, `s` the number skipped. The public verdict therefore counts every skipped item
//!   as a query the suspect missed, and multiplies the tail by the key's item count because the
//!   owner also chooses `k + s` after seeing the answers
//!   ([`crate::verdict::Verdict::decide_public`]). Under the chance null (labels drawn
//!   uniformly, independently of any unmarked model) this bounds the false-accusation rate by
//!   the requested one for every strategy the owner has.
//! - **Judge**: must issue the challenge fresh, after the suspect is named, and check that the
//!   bundle answers it (`verify --public --challenge`). A challenge the owner chose lets them try
//!   challenges until one ranks the items an innocent model happens to match first. The judge
//!   keeps the verification key as it was published (its digest, ideally timestamped: see
//!   [`super::key_commitment`]), the challenge, and the bundle.
//! - **Dishonest suspect**: learns the revealed items and may train them away in copies made
//!   afterwards; that is why they are spent, and why the cap keeps items secret for later
//!   disputes. A reveal cannot make an unmarked model look marked, nor a marked one unmarked.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{VerificationKey, commitment, parse_hash};
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, RevealRecord, TriggerSet, now_rfc3339};
use crate::verdict::{NullModel, Verdict};

/// Layout version of the bundles this build writes.
const BUNDLE_VERSION: u32 = 2;

/// One revealed trigger item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opening {
    /// Position in the key (and in the verification key's commitment list).
    pub index: usize,
    /// The label the marked model gives it.
    pub label: u8,
    /// The commitment nonce, hex.
    pub nonce: String,
    /// The 8-bit image, (C, H, W) bytes, base64.
    pub pixels: String,
}

/// An earlier reveal, carried by a later bundle as proof that its items are spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorReveal {
    /// The challenge that selected its items.
    pub challenge: String,
    /// Its openings, in selection order.
    pub items: Vec<Opening>,
    /// When it was made (RFC 3339; informative, not checked).
    pub created: String,
}

/// A revealed subset that anyone can check against the verification key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevealBundle {
    /// Always "nnmark-reveal".
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// Root of the verification key the openings belong to.
    pub merkle_root: String,
    /// The challenge that selected the items.
    pub challenge: String,
    /// Every earlier reveal of this key, oldest first: the proof for `previously_spent`.
    #[serde(default)]
    pub prior: Vec<PriorReveal>,
    /// Items spent by earlier reveals (skipped by the selection); must be exactly the items
    /// the `prior` reveals opened.
    pub previously_spent: Vec<usize>,
    /// The openings.
    pub items: Vec<Opening>,
    /// When it was made (RFC 3339).
    pub created: String,
    /// nnmark version.
    pub nnmark_version: String,
}

/// A bundle that opened: the items, and how the selection skipped spent ones.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedReveal {
    /// The opened items as a trigger set, in bundle order.
    pub items: TriggerSet,
    /// Their positions in the key.
    pub indices: Vec<usize>,
    /// Spent items the selection skipped: those the challenge ranks ahead of the last opened
    /// item (earlier reveals, proved in the bundle, spent them). The verdict counts them as
    /// misses.
    pub skipped: usize,
    /// Items spent by all earlier reveals together.
    pub spent: usize,
    /// The challenges of those earlier reveals, oldest first.
    pub earlier_challenges: Vec<String>,
    /// Items in the verification key.
    pub key_items: usize,
    /// Most items all reveals together may open.
    pub reveal_cap: usize,
}

impl OpenedReveal {
    /// The public verdict on `matches` among the opened items
    /// ([`Verdict::decide_public`]: skipped items count as misses, the tail is multiplied by
    /// the key's item count).
    pub fn decide(&self, matches: u64, null: NullModel, fpr: f64) -> Result<Verdict> {
        Verdict::decide_public(
            matches,
            self.indices.len() as u64,
            self.skipped as u64,
            self.spent as u64,
            self.earlier_challenges.len() as u64,
            self.key_items as u64,
            self.reveal_cap as u64,
            null,
            fpr,
        )
    }
}

/// Item indices ranked by SHA-256(root ‖ challenge ‖ index).
fn ranking(root: &str, challenge: &str, n: usize) -> Vec<usize> {
    let mut keyed: Vec<([u8; 32], usize)> = (0..n)
        .map(|i| {
            let mut h = Sha256::new();
            h.update(root.as_bytes());
            h.update([0]);
            h.update(challenge.as_bytes());
            h.update([0]);
            h.update((i as u64).to_le_bytes());
            (h.finalize().into(), i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// The items a challenge selects: the first `count` in rank order that are not spent.
pub fn select(root: &str, challenge: &str, n: usize, spent: &[usize], count: usize) -> Vec<usize> {
    ranking(root, challenge, n)
        .into_iter()
        .filter(|i| !spent.contains(i))
        .take(count)
        .collect()
}

fn opening(triggers: &TriggerSet, nonces: &[[u8; 32]], i: usize) -> Opening {
    Opening {
        index: i,
        label: triggers.labels[i],
        nonce: hex::encode(nonces[i]),
        pixels: B64.encode(triggers.image_u8(i)),
    }
}

/// Reveals `count` unspent items chosen by `challenge`, records the reveal in `key` and returns
/// the bundle, which carries every earlier reveal of the key as proof of what it skips. The
/// caller saves the key before publishing the bundle, so a crash can only waste items, never
/// reuse them.
pub fn reveal(key: &mut KeyFile, count: usize, challenge: &str) -> Result<RevealBundle> {
    let vk = VerificationKey::from_key(key)?;
    let triggers = key.trigger_set()?.clone();
    let nonces = key.nonces.clone().expect("checked by from_key");
    let n = triggers.len();
    let mut spent: Vec<usize> = key
        .meta
        .reveals
        .iter()
        .flat_map(|r| r.items.clone())
        .collect();
    spent.sort_unstable();
    let mut recorded = key.meta.spent.clone();
    recorded.sort_unstable();
    if recorded != spent {
        return Err(Error::invalid(
            "key",
            &key.meta.scheme,
            format!(
                "{} items are marked spent but the key records reveals for {}: a reveal must carry the earlier reveals that spent them, and this key (written before reveals were recorded) cannot; make new reveals with a new key",
                recorded.len(),
                spent.len()
            ),
        ));
    }
    let cap = vk.cap();
    let unspent = n - spent.len();
    if count == 0 || count > unspent {
        return Err(Error::invalid(
            "reveal count",
            count,
            format!("{unspent} of {n} items are unspent"),
        ));
    }
    if spent.len() + count > cap {
        return Err(Error::invalid(
            "reveal count",
            count,
            format!(
                "the verification key lets at most {cap} of {n} items be revealed in all and {} are spent, so at most {} more",
                spent.len(),
                cap - spent.len()
            ),
        ));
    }
    let chosen = select(&vk.merkle_root, challenge, n, &spent, count);
    let prior = key
        .meta
        .reveals
        .iter()
        .map(|r| PriorReveal {
            challenge: r.challenge.clone(),
            items: r
                .items
                .iter()
                .map(|&i| opening(&triggers, &nonces, i))
                .collect(),
            created: r.created.clone(),
        })
        .collect();
    let items = chosen
        .iter()
        .map(|&i| opening(&triggers, &nonces, i))
        .collect();
    let created = now_rfc3339();
    key.meta.reveals.push(RevealRecord {
        challenge: challenge.into(),
        items: chosen.clone(),
        created: created.clone(),
    });
    key.meta.spent.extend(&chosen);
    key.meta.spent.sort_unstable();
    Ok(RevealBundle {
        format: "nnmark-reveal".into(),
        version: BUNDLE_VERSION,
        merkle_root: vk.merkle_root,
        challenge: challenge.into(),
        prior,
        previously_spent: spent,
        items,
        created,
        nnmark_version: crate::VERSION.into(),
    })
}

/// Checks that `items` are exactly what `challenge` selects with `spent` skipped.
fn check_selection(
    vk: &VerificationKey,
    challenge: &str,
    spent: &[usize],
    items: &[Opening],
    what: &str,
    path: &Path,
) -> Result<()> {
    let expected = select(
        &vk.merkle_root,
        challenge,
        vk.commitments.len(),
        spent,
        items.len(),
    );
    let got: Vec<usize> = items.iter().map(|o| o.index).collect();
    if got != expected {
        return Err(Error::format(
            path,
            format!(
                "{what}: the revealed items {got:?} are not the ones challenge '{challenge}' selects ({expected:?}): the subset was cherry-picked or altered"
            ),
        ));
    }
    Ok(())
}

/// Checks each opening against its commitment; returns the items as a trigger set.
fn open_items(vk: &VerificationKey, items: &[Opening], path: &Path) -> Result<TriggerSet> {
    let shape = vk.input;
    let mut set = TriggerSet {
        shape,
        num_classes: vk.num_classes,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for o in items {
        if o.index >= vk.commitments.len() {
            return Err(Error::format(
                path,
                format!(
                    "item {} is beyond the verification key's {} commitments",
                    o.index,
                    vk.commitments.len()
                ),
            ));
        }
        let nonce = parse_hash(path, &format!("nonce of item {}", o.index), &o.nonce)?;
        let px = B64.decode(&o.pixels).map_err(|e| {
            Error::format(
                path,
                format!("pixels of item {} are not base64: {e}", o.index),
            )
        })?;
        if px.len() != shape.numel() {
            return Err(Error::format(
                path,
                format!(
                    "item {} has {} pixel bytes, {} expected for {shape}",
                    o.index,
                    px.len(),
                    shape.numel()
                ),
            ));
        }
        if o.label as usize >= vk.num_classes {
            return Err(Error::format(
                path,
                format!(
                    "item {} has label {} of {} classes",
                    o.index, o.label, vk.num_classes
                ),
            ));
        }
        let c = commitment(&nonce, shape, &px, o.label);
        if hex::encode(c) != vk.commitments[o.index] {
            return Err(Error::format(
                path,
                format!(
                    "opening of item {} does not match its commitment: its image, label or nonce was altered",
                    o.index
                ),
            ));
        }
        set.pixels.extend_from_slice(&px);
        set.labels.push(o.label);
    }
    Ok(set)
}

impl RevealBundle {
    /// Reads a bundle.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let b: Self = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a reveal bundle: {e}")))?;
        if b.format != "nnmark-reveal" {
            return Err(Error::format(
                path,
                format!("format '{}' is not 'nnmark-reveal'", b.format),
            ));
        }
        if b.version > BUNDLE_VERSION {
            return Err(Error::format(
                path,
                format!(
                    "bundle version {} is newer than this nnmark understands ({BUNDLE_VERSION})",
                    b.version
                ),
            ));
        }
        Ok(b)
    }

    /// Writes the bundle as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("bundle serialises");
        crate::io::write_atomic(path, text.as_bytes(), Some(0o644))
    }

    /// Opens the bundle against the verification key: replays every earlier reveal it carries
    /// (each must open and be its own challenge's selection), checks that it skips exactly the
    /// items those reveals spent and stays within the reveal cap, that the challenge selects
    /// exactly its items, and that every opening matches its commitment.
    pub fn open(&self, vk: &VerificationKey, path: &Path) -> Result<OpenedReveal> {
        if self.merkle_root != vk.merkle_root {
            return Err(Error::format(
                path,
                format!(
                    "the bundle belongs to verification key {} but the one given has root {}",
                    self.merkle_root, vk.merkle_root
                ),
            ));
        }
        if self.items.is_empty() {
            return Err(Error::format(path, "the bundle reveals no items"));
        }
        let mut spent: Vec<usize> = Vec::new();
        for (j, p) in self.prior.iter().enumerate() {
            let what = format!("earlier reveal {} (challenge '{}')", j + 1, p.challenge);
            check_selection(vk, &p.challenge, &spent, &p.items, &what, path)?;
            open_items(vk, &p.items, path)?;
            spent.extend(p.items.iter().map(|o| o.index));
        }
        spent.sort_unstable();
        let mut listed = self.previously_spent.clone();
        listed.sort_unstable();
        listed.dedup();
        if let Some(unproved) = listed.iter().find(|i| spent.binary_search(i).is_err()) {
            return Err(Error::format(
                path,
                format!(
                    "previously_spent lists item {unproved} (and {} items in all) but no earlier reveal carried in the bundle opened it: a bundle may skip only items whose earlier public reveal it carries",
                    listed.len()
                ),
            ));
        }
        if listed != spent {
            return Err(Error::format(
                path,
                format!(
                    "the {} earlier reveals carried in the bundle spent {} items but previously_spent lists {}: the bundle was altered",
                    self.prior.len(),
                    spent.len(),
                    listed.len()
                ),
            ));
        }
        let cap = vk.cap();
        if spent.len() + self.items.len() > cap {
            return Err(Error::format(
                path,
                format!(
                    "the reveals open {} items in all but the verification key allows at most {cap}",
                    spent.len() + self.items.len()
                ),
            ));
        }
        check_selection(
            vk,
            &self.challenge,
            &spent,
            &self.items,
            "this reveal",
            path,
        )?;
        let items = open_items(vk, &self.items, path)?;
        // The opened items fill the ranking's first `prefix` places, but for the spent ones.
        let last = self.items.last().map(|o| o.index);
        let prefix = ranking(&vk.merkle_root, &self.challenge, vk.commitments.len())
            .iter()
            .position(|&i| Some(i) == last)
            .map_or(0, |p| p + 1);
        Ok(OpenedReveal {
            items,
            indices: self.items.iter().map(|o| o.index).collect(),
            skipped: prefix - self.items.len(),
            spent: spent.len(),
            earlier_challenges: self.prior.iter().map(|p| p.challenge.clone()).collect(),
            key_items: vk.commitments.len(),
            reveal_cap: cap,
        })
    }
}
