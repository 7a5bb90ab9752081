//! Hash commitments for public verification (Adi et al. 2018, section 5).
//!
//! For trigger item i the owner publishes c_i = SHA-256(nonce_i ‖ item_i), where item_i is the
//! canonical encoding of the 8-bit image and its label and nonce_i is 32 random bytes (so c_i
//! reveals nothing, and cannot be opened to another item). The verification key is the list of
//! commitments plus a Merkle root over them (rs_merkle, SHA-256), small enough to timestamp.
//!
//! To prove ownership publicly the owner reveals a subset (images, labels, nonces). Which items
//! are revealed is decided by a challenge string (e.g. given by the judge): items are ranked by
//! SHA-256(root ‖ challenge ‖ index) and the first unspent ones are taken, so the owner cannot
//! cherry-pick the items a suspect happens to match. Revealed items are marked spent in the key
//! and never used again.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rs_merkle::{MerkleTree, algorithms::Sha256 as MerkleSha256};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::ImageShape;
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, TriggerSet, now_rfc3339};

/// Canonical bytes of one trigger item: a domain tag, the shape, the pixels and the label.
fn item_bytes(shape: ImageShape, pixels: &[u8], label: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + pixels.len());
    b.extend_from_slice(b"nnmark-trigger-item-v1");
    for d in [shape.channels, shape.height, shape.width] {
        b.extend_from_slice(&(d as u32).to_le_bytes());
    }
    b.extend_from_slice(pixels);
    b.push(label);
    b
}

/// c = SHA-256(nonce ‖ item).
pub fn commitment(nonce: &[u8; 32], shape: ImageShape, pixels: &[u8], label: u8) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(item_bytes(shape, pixels, label));
    h.finalize().into()
}

/// Merkle root over the commitments (leaves in key order).
pub fn merkle_root(commitments: &[[u8; 32]]) -> [u8; 32] {
    MerkleTree::<MerkleSha256>::from_leaves(commitments)
        .root()
        .unwrap_or([0u8; 32])
}

/// Fresh nonces from the operating system's random source. They are the one part of a key not
/// derived from the seed, on purpose: a nonce derivable from a small seed would let anyone
/// open the commitments.
pub fn fresh_nonces(n: usize) -> Result<Vec<[u8; 32]>> {
    (0..n)
        .map(|_| {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b)
                .map_err(|e| Error::Unsupported(format!("no OS random source: {e}")))?;
            Ok(b)
        })
        .collect()
}

/// A random challenge (hex), for reveals where no one else supplied one.
pub fn random_challenge() -> Result<String> {
    Ok(hex::encode(fresh_nonces(1)?[0]))
}

/// The public verification key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationKey {
    /// Always "nnmark-vk".
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// Scheme of the key it was derived from.
    pub scheme: String,
    /// Shape of the trigger images.
    pub input: ImageShape,
    /// Classes of the marked model.
    pub num_classes: usize,
    /// SHA-256 of the marked model's weights file.
    pub model_sha256: String,
    /// Commitments, hex, in key order.
    pub commitments: Vec<String>,
    /// Merkle root over them, hex.
    pub merkle_root: String,
    /// When it was exported (RFC 3339).
    pub created: String,
    /// nnmark version that wrote it.
    pub nnmark_version: String,
}

fn parse_hash(path: &Path, what: &str, s: &str) -> Result<[u8; 32]> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::format(path, format!("{what} '{s}' is not a 32-byte hex hash")))
}

impl VerificationKey {
    /// Derives the verification key from a marking key with nonces.
    pub fn from_key(key: &KeyFile) -> Result<Self> {
        let triggers = key.trigger_set()?;
        let nonces = key.nonces.as_ref().ok_or_else(|| {
            Error::invalid(
                "key",
                &key.meta.scheme,
                "has no commitment nonces; only adi keys support public verification",
            )
        })?;
        let cs: Vec<[u8; 32]> = (0..triggers.len())
            .map(|i| {
                commitment(
                    &nonces[i],
                    triggers.shape,
                    triggers.image_u8(i),
                    triggers.labels[i],
                )
            })
            .collect();
        Ok(Self {
            format: "nnmark-vk".into(),
            version: 1,
            scheme: key.meta.scheme.clone(),
            input: triggers.shape,
            num_classes: key.meta.spec.num_classes,
            model_sha256: key.meta.model_sha256.clone(),
            merkle_root: hex::encode(merkle_root(&cs)),
            commitments: cs.iter().map(hex::encode).collect(),
            created: now_rfc3339(),
            nnmark_version: crate::VERSION.into(),
        })
    }

    /// Reads a verification key and checks that its root matches its commitments.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let vk: Self = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a verification key: {e}")))?;
        if vk.format != "nnmark-vk" {
            return Err(Error::format(
                path,
                format!("format '{}' is not 'nnmark-vk'", vk.format),
            ));
        }
        let cs = vk.commitment_bytes(path)?;
        if hex::encode(merkle_root(&cs)) != vk.merkle_root {
            return Err(Error::format(
                path,
                "the Merkle root does not match the listed commitments (the file was altered)",
            ));
        }
        Ok(vk)
    }

    fn commitment_bytes(&self, path: &Path) -> Result<Vec<[u8; 32]>> {
        self.commitments
            .iter()
            .map(|c| parse_hash(path, "commitment", c))
            .collect()
    }

    /// Writes the verification key as JSON (atomically; it is public, mode 0644).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("vk serialises");
        crate::weights::write_atomic(path, text.as_bytes(), Some(0o644))
    }
}

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
    /// Items spent by earlier reveals (skipped by the selection).
    pub previously_spent: Vec<usize>,
    /// The openings.
    pub items: Vec<Opening>,
    /// When it was made (RFC 3339).
    pub created: String,
    /// nnmark version.
    pub nnmark_version: String,
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

/// Reveals `count` unspent items chosen by `challenge` and marks them spent in `key` (the
/// caller saves the key before publishing the bundle, so a crash can only waste items,
/// never reuse them).
pub fn reveal(key: &mut KeyFile, count: usize, challenge: &str) -> Result<RevealBundle> {
    let vk = VerificationKey::from_key(key)?;
    let triggers = key.trigger_set()?.clone();
    let nonces = key.nonces.clone().expect("checked by from_key");
    let unspent = triggers.len() - key.meta.spent.len();
    if count == 0 || count > unspent {
        return Err(Error::invalid(
            "reveal count",
            count,
            format!("{unspent} of {} items are unspent", triggers.len()),
        ));
    }
    let previously_spent = key.meta.spent.clone();
    let chosen = select(
        &vk.merkle_root,
        challenge,
        triggers.len(),
        &previously_spent,
        count,
    );
    let items = chosen
        .iter()
        .map(|&i| Opening {
            index: i,
            label: triggers.labels[i],
            nonce: hex::encode(nonces[i]),
            pixels: B64.encode(triggers.image_u8(i)),
        })
        .collect();
    key.meta.spent.extend(&chosen);
    key.meta.spent.sort_unstable();
    Ok(RevealBundle {
        format: "nnmark-reveal".into(),
        version: 1,
        merkle_root: vk.merkle_root,
        challenge: challenge.into(),
        previously_spent,
        items,
        created: now_rfc3339(),
        nnmark_version: crate::VERSION.into(),
    })
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
        Ok(b)
    }

    /// Writes the bundle as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("bundle serialises");
        crate::weights::write_atomic(path, text.as_bytes(), Some(0o644))
    }

    /// Checks every opening against the verification key and that the challenge selects
    /// exactly these items; returns the opened items as a trigger set (in bundle order).
    pub fn open(&self, vk: &VerificationKey, path: &Path) -> Result<TriggerSet> {
        if self.merkle_root != vk.merkle_root {
            return Err(Error::format(
                path,
                format!(
                    "the bundle belongs to verification key {} but the one given has root {}",
                    self.merkle_root, vk.merkle_root
                ),
            ));
        }
        let n = vk.commitments.len();
        let expected = select(
            &vk.merkle_root,
            &self.challenge,
            n,
            &self.previously_spent,
            self.items.len(),
        );
        let got: Vec<usize> = self.items.iter().map(|o| o.index).collect();
        if got != expected {
            return Err(Error::format(
                path,
                format!(
                    "the revealed items {got:?} are not the ones challenge '{}' selects ({expected:?}): the subset was cherry-picked or altered",
                    self.challenge
                ),
            ));
        }
        let shape = vk.input;
        let mut set = TriggerSet {
            shape,
            num_classes: vk.num_classes,
            pixels: Vec::new(),
            labels: Vec::new(),
        };
        for o in &self.items {
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
}
