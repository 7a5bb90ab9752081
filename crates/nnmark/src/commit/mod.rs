//! Commitments: what an owner publishes before any dispute, so that a judge need not trust
//! the owner later.
//!
//! Two kinds, for two purposes:
//!
//! - **Item commitments and the verification key** (Adi et al. 2018, section 5; this module and
//!   [`reveal()`]). For trigger item i the owner publishes c_i = SHA-256(nonce_i ‖ item_i), where
//!   item_i is the canonical encoding of the 8-bit image and its label and nonce_i is 32 random
//!   bytes (so c_i reveals nothing, and cannot be opened to another item). The verification key
//!   is the list of commitments plus a Merkle root over them (rs_merkle, SHA-256) and the cap on
//!   how many items may ever be revealed. In a dispute the owner reveals the items a judge's
//!   challenge selects; [`reveal`](mod@reveal) says how that stays sound against a dishonest owner.
//! - **Key commitments** ([`key_commitment`]): one salted hash over everything that decides a
//!   key's verdict, for every scheme, small enough to timestamp (RFC 3161, crate
//!   `nnmark-tsp`). A claimant who may try many keys (seeds, owner ids, trigger sets built from
//!   a suspect's own answers) finds one that passes any per-key false-positive rate; a key whose
//!   commitment was timestamped before the suspect existed cannot have been chosen that way.

pub mod key_commitment;
pub mod reveal;

use std::path::Path;

use rs_merkle::{MerkleTree, algorithms::Sha256 as MerkleSha256};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::ImageShape;
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, now_rfc3339};

pub use key_commitment::{CommitmentReport, KeyCommitment, TimestampReport};
pub use reveal::{OpenedReveal, Opening, PriorReveal, RevealBundle, reveal, select};

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
pub(crate) fn random_challenge() -> Result<String> {
    Ok(hex::encode(fresh_nonces(1)?[0]))
}

/// The share of a key's items that may ever be revealed, unless the verification key says
/// otherwise: 7 in 10, so a 100-item key allows two reveals of 30 and keeps 30 items secret
/// for private verification.
pub const DEFAULT_REVEAL_CAP_FRACTION: f64 = 0.7;

/// The default cap for a key of `n` items (at least one item).
pub fn default_reveal_cap(n: usize) -> usize {
    ((n as f64 * DEFAULT_REVEAL_CAP_FRACTION).floor() as usize).clamp(1.min(n), n)
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
    /// Most items that may ever be revealed, all reveals together. Verification keys written
    /// before the cap existed lack it and get [`default_reveal_cap`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal_cap: Option<usize>,
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
    /// Derives the verification key from a marking key with nonces, with the default reveal
    /// cap.
    pub fn from_key(key: &KeyFile) -> Result<Self> {
        let triggers = key.trigger_set()?;
        let nonces = key.nonces.as_ref().ok_or_else(|| {
            Error::invalid(
                "key",
                &key.meta.scheme,
                "has no commitment nonces; only adi keys support public verification (every key can still export a key commitment)",
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
            version: 2,
            scheme: key.meta.scheme.clone(),
            input: triggers.shape,
            num_classes: key.meta.spec.num_classes,
            model_sha256: key.meta.model_sha256.clone(),
            merkle_root: hex::encode(merkle_root(&cs)),
            reveal_cap: Some(default_reveal_cap(cs.len())),
            commitments: cs.iter().map(hex::encode).collect(),
            created: now_rfc3339(),
            nnmark_version: crate::VERSION.into(),
        })
    }

    /// Most items that may ever be revealed.
    pub fn cap(&self) -> usize {
        self.reveal_cap
            .unwrap_or_else(|| default_reveal_cap(self.commitments.len()))
    }

    /// SHA-256 over everything in the verification key that decides a public verdict (scheme,
    /// shape, classes, model fingerprint, root, item count and cap; not the export time).
    /// This is what a key commitment binds and what a timestamp covers.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"nnmark-vk-digest-v1\0");
        for field in [
            self.scheme.as_str(),
            &self.input.to_string(),
            &self.num_classes.to_string(),
            &self.model_sha256,
            &self.merkle_root,
            &self.commitments.len().to_string(),
            &self.cap().to_string(),
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        hex::encode(h.finalize())
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
        if vk.num_classes < 2 {
            return Err(Error::format(
                path,
                format!(
                    "num_classes {} (a verdict needs at least 2)",
                    vk.num_classes
                ),
            ));
        }
        if let Some(cap) = vk.reveal_cap
            && (cap == 0 || cap > cs.len())
        {
            return Err(Error::format(
                path,
                format!(
                    "reveal_cap {cap} is not between 1 and the {} committed items",
                    cs.len()
                ),
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
        crate::io::write_atomic(path, text.as_bytes(), Some(0o644))
    }
}
