//! Key commitments and their RFC 3161 timestamps, as an owner makes them: commit a key, ask a
//! time-stamping authority, attach its answer, and check the tokens offline.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::commit::{CommitmentReport, KeyCommitment, VerificationKey};
use crate::error::{Error, Result};
use crate::keyfile::KeyFile;

use super::render::versions;
use super::verify::{default_commitment_path, load_tsa_certs};

/// A key's commitment, written.
pub struct CommitmentWritten {
    /// The key, when a commitment salt had to be added to it (its fingerprint changed).
    pub salted: Option<PathBuf>,
    /// The commitment file.
    pub out: PathBuf,
    /// The commitment value.
    pub commitment: String,
}

/// Writes a key's public commitment (default: beside the key), adding a commitment salt to a
/// key that has none (the key file is rewritten; its material does not change).
pub fn commit_key(key_path: &Path, out: Option<&Path>) -> Result<CommitmentWritten> {
    let mut key = KeyFile::load(key_path)?;
    let salted = key.ensure_commitment_salt()?;
    if salted {
        key.save(key_path)?;
    }
    let c = KeyCommitment::for_key(&key)?;
    let out = out.map_or_else(|| default_commitment_path(key_path), Path::to_path_buf);
    c.save(&out)?;
    Ok(CommitmentWritten {
        salted: salted.then(|| key_path.to_path_buf()),
        out,
        commitment: c.commitment,
    })
}

impl fmt::Display for CommitmentWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(k) = &self.salted {
            writeln!(
                f,
                "added a commitment salt to {} (its fingerprint changes; the key's material does not)",
                k.display()
            )?;
        }
        write!(
            f,
            "wrote key commitment {} ({}); publish it and timestamp it: nnmark timestamp request --commitment {}",
            self.out.display(),
            self.commitment,
            self.out.display()
        )
    }
}

/// An RFC 3161 request, written.
pub struct TimestampRequestWritten {
    /// The commitment it asks a timestamp for.
    pub commitment: PathBuf,
    /// The DER request file.
    pub out: PathBuf,
    /// SHA-256 of the commitment statement (what the authority signs), hex.
    pub digest: String,
}

/// Writes an RFC 3161 time-stamp request (DER) for a commitment.
pub fn timestamp_request(commitment: &Path, out: &Path) -> Result<TimestampRequestWritten> {
    let c = KeyCommitment::load(commitment)?;
    let der = nnmark_tsp::request(&c.statement_digest())
        .map_err(|e| Error::Unsupported(format!("cannot make a time-stamp request: {e}")))?;
    crate::io::write_atomic(out, &der, Some(0o644))?;
    Ok(TimestampRequestWritten {
        commitment: commitment.to_path_buf(),
        out: out.to_path_buf(),
        digest: hex::encode(c.statement_digest()),
    })
}

impl fmt::Display for TimestampRequestWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote RFC 3161 request {} (SHA-256 of the commitment statement {}); send it to a time-stamping authority, then: nnmark timestamp attach --commitment {} --response RESPONSE.tsr --tsa-cert AUTHORITY.pem",
            self.out.display(),
            self.digest,
            self.commitment.display()
        )
    }
}

/// A token attached to a commitment.
pub struct TimestampAttached {
    /// The commitment file (rewritten with the token).
    pub commitment: PathBuf,
    /// What the token says, checked against the trusted certificates.
    pub token: nnmark_tsp::VerifiedTimestamp,
}

/// Checks an authority's response against trusted certificates and attaches its token to the
/// commitment file.
pub fn timestamp_attach(
    commitment: &Path,
    response: &Path,
    tsa_certs: &[PathBuf],
) -> Result<TimestampAttached> {
    let mut c = KeyCommitment::load(commitment)?;
    let resp = std::fs::read(response).map_err(|e| Error::io(response, e))?;
    let token = nnmark_tsp::token_from_response(&resp)
        .map_err(|e| Error::format(response, e.to_string()))?;
    let verified = c.attach_token(&token, &load_tsa_certs(tsa_certs)?)?;
    c.save(commitment)?;
    Ok(TimestampAttached {
        commitment: commitment.to_path_buf(),
        token: verified,
    })
}

impl fmt::Display for TimestampAttached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.token;
        write!(
            f,
            "attached a timestamp to {}: committed no later than {} (authority '{}', chain to '{}', serial {})",
            self.commitment.display(),
            v.gen_time,
            v.tsa,
            v.trusted,
            v.serial
        )
    }
}

/// A commitment's tokens, checked offline.
pub struct TimestampCheck {
    /// The commitment file.
    pub commitment: PathBuf,
    /// What the check established.
    pub report: CommitmentReport,
}

/// Verifies the tokens attached to a commitment against trusted certificates, and that the
/// key or verification key given is the committed one.
pub fn timestamp_verify(
    commitment: &Path,
    tsa_certs: &[PathBuf],
    key: Option<&Path>,
    vk: Option<&Path>,
) -> Result<TimestampCheck> {
    let c = KeyCommitment::load(commitment)?;
    let key = key.map(KeyFile::load).transpose()?;
    let vk = vk.map(VerificationKey::load).transpose()?;
    let report = c.check(key.as_ref(), vk.as_ref(), &load_tsa_certs(tsa_certs)?)?;
    Ok(TimestampCheck {
        commitment: commitment.to_path_buf(),
        report,
    })
}

impl TimestampCheck {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        json!({"versions": versions(), "commitment": self.commitment, "check": self.report})
    }
}

impl fmt::Display for TimestampCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.commitment.display(),
            self.report.summary()
        )
    }
}
