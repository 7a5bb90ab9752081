//! Key commitments: one public, salted hash over everything that decides a key's verdict, for
//! every scheme, written at embedding time.
//!
//! commitment = SHA-256("nnmark-key-commitment-v1" ‖ salt ‖ decision digest), where the
//! decision digest ([`KeyFile::decision_digest`]) covers the scheme, its parameters, the model
//! spec and fingerprint, trigger images and labels, nonces, projection matrices and the
//! calibration note, and the salt is 32 random bytes kept in the key (so the commitment reveals
//! nothing, not even a guessable owner id). For Adi keys the file also names the verification
//! key's digest, so a judge holding only the public verification key can tie it to the same
//! timestamp.
//!
//! What gets timestamped is the *statement* digest ([`KeyCommitment::statement_digest`]):
//! SHA-256 over the scheme, the commitment and the verification key's digest. An RFC 3161
//! token over it (crate `nnmark-tsp`) proves the key existed, unchanged, at the token's time.
//!
//! Why it matters: a claimant who may try many keys (owner ids and seeds for Uchida's derived
//! matrix, trigger sets labelled with the suspect's own answers, Liu et al.'s "false claims")
//! will find one that passes any per-key false-positive rate. A key committed before the suspect
//! model existed cannot have been chosen by looking at it. What it cannot prevent: an owner who
//! commits many keys in advance and later shows only the one that fits (a judge should ask for
//! every commitment the owner timestamped, and count them), nor a key committed after the suspect
//! was published (the timestamp then shows exactly that).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::VerificationKey;
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, now_rfc3339};

/// The public commitment of one key, with any timestamp tokens attached to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCommitment {
    /// Always "nnmark-key-commitment".
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// Scheme of the key.
    pub scheme: String,
    /// SHA-256(tag ‖ salt ‖ decision digest), hex.
    pub commitment: String,
    /// Digest of the key's verification key ([`VerificationKey::digest`]), for keys with
    /// public verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vk_digest: Option<String>,
    /// When it was written (RFC 3339; the owner's clock, not a proof: see `rfc3161_tokens`).
    pub created: String,
    /// nnmark version that wrote it.
    pub nnmark_version: String,
    /// RFC 3161 time-stamp tokens (DER, base64) over [`KeyCommitment::statement_digest`].
    #[serde(default)]
    pub rfc3161_tokens: Vec<String>,
}

fn commitment_of(key: &KeyFile) -> Result<String> {
    let salt = key.meta.commitment_salt.as_deref().ok_or_else(|| {
        Error::invalid(
            "key",
            &key.meta.scheme,
            "has no commitment salt (it was written before key commitments existed); run `nnmark key commit` to add one",
        )
    })?;
    let salt = hex::decode(salt)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| Error::invalid("key commitment salt", salt, "is not 32 hex bytes"))?;
    let mut h = Sha256::new();
    h.update(b"nnmark-key-commitment-v1\0");
    h.update(&salt);
    h.update(key.decision_digest()?);
    Ok(hex::encode(h.finalize()))
}

impl KeyCommitment {
    /// The commitment of `key` (which must have a commitment salt).
    pub fn for_key(key: &KeyFile) -> Result<Self> {
        let vk_digest = match &key.nonces {
            Some(_) => Some(VerificationKey::from_key(key)?.digest()),
            None => None,
        };
        Ok(Self {
            format: "nnmark-key-commitment".into(),
            version: 1,
            scheme: key.meta.scheme.clone(),
            commitment: commitment_of(key)?,
            vk_digest,
            created: now_rfc3339(),
            nnmark_version: crate::VERSION.into(),
            rfc3161_tokens: Vec::new(),
        })
    }

    /// True when `key` is the key this commitment was made of.
    pub fn matches_key(&self, key: &KeyFile) -> Result<bool> {
        Ok(key.meta.scheme == self.scheme && commitment_of(key)? == self.commitment)
    }

    /// What a timestamp covers: SHA-256 over the scheme, the commitment and the verification
    /// key's digest (empty when there is none).
    pub fn statement_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"nnmark-key-commitment-statement-v1\0");
        for field in [
            self.scheme.as_str(),
            &self.commitment,
            self.vk_digest.as_deref().unwrap_or(""),
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        h.finalize().into()
    }

    /// Verifies an RFC 3161 token (DER) over this commitment's statement against `trusted`
    /// certificates and, if it holds, attaches it.
    pub fn attach_token(
        &mut self,
        token: &[u8],
        trusted: &[nnmark_tsp::Certificate],
    ) -> Result<nnmark_tsp::VerifiedTimestamp> {
        let v = nnmark_tsp::verify_token(token, &self.statement_digest(), trusted)
            .map_err(|e| Error::invalid("timestamp token", "", e.to_string()))?;
        let b64 = B64.encode(token);
        if !self.rfc3161_tokens.contains(&b64) {
            self.rfc3161_tokens.push(b64);
        }
        Ok(v)
    }

    /// Checks the commitment against whatever the verifier holds: the key (private
    /// verification), the verification key (public verification) and the certificates of the
    /// time-stamping authorities it trusts. A key or verification key that does not match is
    /// an error; a token that does not verify is reported, not fatal.
    pub fn check(
        &self,
        key: Option<&KeyFile>,
        vk: Option<&VerificationKey>,
        trusted: &[nnmark_tsp::Certificate],
    ) -> Result<CommitmentReport> {
        if let Some(key) = key
            && !self.matches_key(key)?
        {
            return Err(Error::invalid(
                "key commitment",
                &self.commitment,
                "does not match the key: this is not the key that was committed (or it was changed since)",
            ));
        }
        if let Some(vk) = vk
            && self.vk_digest.as_deref() != Some(vk.digest().as_str())
        {
            return Err(Error::invalid(
                "key commitment",
                &self.commitment,
                format!(
                    "names verification key digest {:?} but the verification key given has digest {}",
                    self.vk_digest,
                    vk.digest()
                ),
            ));
        }
        let mut timestamps = Vec::new();
        let mut refused = Vec::new();
        for (i, t) in self.rfc3161_tokens.iter().enumerate() {
            let checked = B64
                .decode(t)
                .map_err(|e| e.to_string())
                .and_then(|der| {
                    if trusted.is_empty() {
                        return Err("not checked: no time-stamping authority certificate was given (--tsa-cert)".into());
                    }
                    nnmark_tsp::verify_token(&der, &self.statement_digest(), trusted)
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok(v) => timestamps.push(v),
                Err(e) => refused.push(format!("token {}: {e}", i + 1)),
            }
        }
        let earliest = timestamps.iter().min_by_key(|v| v.unix_seconds);
        Ok(CommitmentReport {
            commitment: self.commitment.clone(),
            key_checked: key.is_some(),
            vk_checked: vk.is_some(),
            committed_no_later_than: earliest.map(|v| v.gen_time.clone()),
            timestamp_authority: earliest.map(|v| v.tsa.clone()),
            timestamps: timestamps
                .iter()
                .map(|v| TimestampReport {
                    gen_time: v.gen_time.clone(),
                    tsa: v.tsa.clone(),
                    trusted: v.trusted.clone(),
                    serial: v.serial.clone(),
                })
                .collect(),
            refused_timestamps: refused,
        })
    }

    /// Reads a commitment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: Self = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a key commitment: {e}")))?;
        if c.format != "nnmark-key-commitment" {
            return Err(Error::format(
                path,
                format!("format '{}' is not 'nnmark-key-commitment'", c.format),
            ));
        }
        let hex32 = |s: &str| hex::decode(s).is_ok_and(|b| b.len() == 32);
        if !hex32(&c.commitment) {
            return Err(Error::format(
                path,
                format!("commitment '{}' is not a 32-byte hex hash", c.commitment),
            ));
        }
        if let Some(d) = &c.vk_digest
            && !hex32(d)
        {
            return Err(Error::format(
                path,
                format!("vk_digest '{d}' is not a 32-byte hex hash"),
            ));
        }
        Ok(c)
    }

    /// Writes the commitment as JSON, atomically (it is public, mode 0644).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("commitment serialises");
        crate::io::write_atomic(path, text.as_bytes(), Some(0o644))
    }
}

/// What a verification established about a key's commitment: that the key (or verification
/// key) is the committed one, and when, at the latest, it was committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitmentReport {
    /// The commitment, hex.
    pub commitment: String,
    /// The marking key was checked against it (private verification).
    pub key_checked: bool,
    /// The verification key was checked against it (public verification).
    pub vk_checked: bool,
    /// The earliest time a verified timestamp vouches for (RFC 3339); none without one.
    pub committed_no_later_than: Option<String>,
    /// The authority that vouched for that time.
    pub timestamp_authority: Option<String>,
    /// Every token that verified.
    pub timestamps: Vec<TimestampReport>,
    /// Tokens that did not verify, with the reason.
    pub refused_timestamps: Vec<String>,
}

/// One verified timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimestampReport {
    /// The time vouched for (RFC 3339).
    pub gen_time: String,
    /// The signing authority's certificate subject.
    pub tsa: String,
    /// The trusted certificate its chain ended at.
    pub trusted: String,
    /// The token's serial number, hex.
    pub serial: String,
}

impl CommitmentReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        let what = match (self.key_checked, self.vk_checked) {
            (true, _) => "the key matches its commitment",
            (false, true) => "the verification key matches its commitment",
            _ => "commitment read",
        };
        let when = match (&self.committed_no_later_than, &self.timestamp_authority) {
            (Some(t), Some(tsa)) => {
                format!("committed no later than {t} (RFC 3161 timestamp by {tsa})")
            }
            _ => "no verified timestamp: nothing shows when it was committed".into(),
        };
        let refused = if self.refused_timestamps.is_empty() {
            String::new()
        } else {
            format!(
                "; {} token(s) refused: {}",
                self.refused_timestamps.len(),
                self.refused_timestamps.join("; ")
            )
        };
        format!("{what} {}; {when}{refused}", self.commitment)
    }
}
