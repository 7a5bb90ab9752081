//! Signed evidence files and the owner's Ed25519 signing keys.
//!
//! An evidence file is `{"body": {...}, "signature": {...}}`. The signature covers the exact
//! bytes of `body` as they stand in the file (read back through serde_json's `RawValue`, so no
//! re-serialisation can change what was signed): flipping one byte anywhere in the body, the
//! verdict included, breaks it. `check` also recomputes every statistic from the logged answers
//! and, given the key, re-checks each logged match against it.

use std::path::Path;

use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use nnmark::commit::VerificationKey;
use nnmark::io::write_atomic;
use nnmark::keyfile::KeyFile;
use nnmark::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::verify::{EVIDENCE_FORMATS_READ, EvidenceBody, ItemKind, score};

/// The signature block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureBlock {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, raw 32 bytes, base64.
    pub public_key: String,
    /// Signature over the body's bytes, base64.
    pub signature: String,
}

#[derive(Serialize, Deserialize)]
struct EvidenceFile<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    #[serde(default)]
    signature: Option<SignatureBlock>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Creates an owner signing key: `PATH` (PKCS#8 PEM, mode 0600) and `PATH.pub` (SPKI PEM).
/// Refuses to overwrite an existing key.
pub fn generate_keypair(path: &Path) -> Result<(std::path::PathBuf, String)> {
    let public_path = std::path::PathBuf::from(format!("{}.pub", path.display()));
    for p in [path, public_path.as_path()] {
        if p.exists() {
            return Err(Error::invalid(
                "key file",
                p.display(),
                "exists already; nnmark never overwrites a signing key (move it away first)",
            ));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Unsupported(format!("no OS randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::format(path, format!("cannot encode key: {e}")))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::format(&public_path, format!("cannot encode key: {e}")))?;
    write_atomic(path, private.as_bytes(), Some(0o600))?;
    write_atomic(&public_path, public.as_bytes(), Some(0o644))?;
    Ok((public_path, fingerprint(&key.verifying_key())))
}

/// SHA-256 of the raw public key, hex: how logs name a signer.
pub fn fingerprint(key: &VerifyingKey) -> String {
    nnmark::io::sha256_hex(key.as_bytes())
}

/// Reads a PKCS#8 PEM signing key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|e| Error::format(path, format!("not an Ed25519 PKCS#8 PEM private key: {e}")))
}

/// Reads an SPKI PEM public key (or the private key, taking its public half).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    VerifyingKey::from_public_key_pem(&text)
        .or_else(|_| SigningKey::from_pkcs8_pem(&text).map(|k| k.verifying_key()))
        .map_err(|e| Error::format(path, format!("not an Ed25519 PEM public key: {e}")))
}

/// Serialises (and signs, when a key is given) an evidence body; writes it atomically.
pub fn write(path: &Path, body: &EvidenceBody, key: Option<&SigningKey>) -> Result<()> {
    let body_json = serde_json::to_string_pretty(body).expect("evidence serialises");
    let signature = key.map(|k| SignatureBlock {
        algorithm: "ed25519".into(),
        public_key: B64.encode(k.verifying_key().as_bytes()),
        signature: B64.encode(k.sign(body_json.as_bytes()).to_bytes()),
    });
    let file = format!(
        "{{\n\"body\": {body_json},\n\"signature\": {}\n}}\n",
        serde_json::to_string_pretty(&signature).expect("signature serialises")
    );
    write_atomic(path, file.as_bytes(), None)
}

/// What `check` established.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The signature verifies (false when unsigned).
    pub signed: bool,
    /// Fingerprint of the signer's public key.
    pub signer: Option<String>,
    /// Statistics recomputed from the logged answers equal the recorded ones.
    pub statistics_match: bool,
    /// The null rate was checked against the key's (or verification key's) analytic null.
    pub null_checked: bool,
    /// Logged matches re-checked against the key (when given).
    pub key_checked: bool,
    /// The logged key commitment, re-checked against the key or verification key given, its
    /// timestamps re-verified against the certificates given.
    pub key_commitment: Option<nnmark::commit::CommitmentReport>,
    /// Logged commitments matched against the verification key (given, or derived from the key).
    pub commitments_checked: bool,
    /// The recorded decision.
    pub watermarked: bool,
    /// Recomputed p-value of the decision.
    pub p_value: f64,
    /// Key items answered.
    pub key_answers: u64,
    /// Requests logged.
    pub requests: usize,
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_infinite() && b.is_infinite())
}

/// Verifies an evidence file: signature (required unless `allow_unsigned`), the signer against
/// `expected_signer` when given, the statistics recomputed from the logged answers, and with
/// `key` the fingerprint and every logged match. Any failure is an error naming what differs.
pub fn check(
    path: &Path,
    expected_signer: Option<&VerifyingKey>,
    key: Option<&KeyFile>,
    allow_unsigned: bool,
) -> Result<CheckReport> {
    check_with(path, expected_signer, key, None, &[], allow_unsigned)
}

/// [`check`], also matching the logged commitments against a published verification key
/// (given, or derived from `key` when it has commitments), and the logged key commitment's
/// timestamps against `tsa_certs` (when given).
///
/// The file's writer controls everything in it, so nothing in it is taken on trust where the
/// verifier can check it: the statistics are recomputed; the null rate is checked against the
/// key's analytic null (or the verification key's chance rate), since a smaller one counts
/// matches too easily; the key commitment is re-checked against the key or verification key,
/// and its timestamp re-verified.
pub fn check_with(
    path: &Path,
    expected_signer: Option<&VerifyingKey>,
    key: Option<&KeyFile>,
    vk: Option<&VerificationKey>,
    tsa_certs: &[nnmark_tsp::Certificate],
    allow_unsigned: bool,
) -> Result<CheckReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let file: EvidenceFile<'_> = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("not an nnmark evidence file: {e}")))?;
    let bad = |m: String| Error::format(path, m);
    let signer = check_signature(&file, expected_signer, allow_unsigned).map_err(bad)?;
    let body: EvidenceBody =
        serde_json::from_str(file.body.get()).map_err(|e| bad(format!("body: {e}")))?;
    if !EVIDENCE_FORMATS_READ.contains(&body.format.as_str()) {
        return Err(bad(format!(
            "format '{}' is not one of {}",
            body.format,
            EVIDENCE_FORMATS_READ.join(", ")
        )));
    }
    let decision = check_statistics(&body).map_err(bad)?;
    let floor = null_floor(key, vk)?;
    let p0 = body.null.rate().map_err(|e| bad(format!("null: {e}")))?;
    if let Some(f) = floor
        && p0 < f * (1.0 - 1e-12)
    {
        return Err(bad(format!(
            "the decision was taken against null match rate {p0} but the key's own null is {f}: a smaller null rate counts matches too easily"
        )));
    }
    let owned_vk = match (vk, key) {
        (None, Some(k)) if k.nonces.is_some() => Some(VerificationKey::from_key(k)?),
        _ => None,
    };
    let holder_vk = vk.or(owned_vk.as_ref());
    if let Some(vk) = holder_vk {
        check_logged_commitments(&body, vk).map_err(bad)?;
    }
    if let Some(key) = key {
        check_answers_against_key(&body, key)?.map_err(bad)?;
    }
    let mut key_commitment = None;
    if let Some(ec) = &body.key_commitment {
        let report = ec
            .commitment
            .check(key, holder_vk, tsa_certs)
            .map_err(|e| bad(e.to_string()))?;
        if key.is_some() || holder_vk.is_some() || !tsa_certs.is_empty() {
            key_commitment = Some(report);
        }
    }
    Ok(CheckReport {
        signed: signer.is_some(),
        signer,
        statistics_match: true,
        null_checked: floor.is_some(),
        key_checked: key.is_some(),
        commitments_checked: holder_vk.is_some(),
        key_commitment,
        watermarked: decision.watermarked,
        p_value: decision.p_value,
        key_answers: decision.key_answers,
        requests: body.queries.len(),
    })
}

/// The signer's fingerprint when the file is signed by the expected key (any key when none is
/// expected); None for an unsigned file when that is allowed. The error says what is wrong.
fn check_signature(
    file: &EvidenceFile<'_>,
    expected_signer: Option<&VerifyingKey>,
    allow_unsigned: bool,
) -> std::result::Result<Option<String>, String> {
    let Some(s) = &file.signature else {
        return if allow_unsigned {
            Ok(None)
        } else {
            Err("the evidence is not signed".into())
        };
    };
    if s.algorithm != "ed25519" {
        return Err(format!(
            "signature algorithm '{}' is not ed25519",
            s.algorithm
        ));
    }
    let pk: [u8; 32] = B64
        .decode(&s.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("signature.public_key is not a base64 32-byte key")?;
    let pk = VerifyingKey::from_bytes(&pk).map_err(|e| format!("signature.public_key: {e}"))?;
    let sig: [u8; 64] = B64
        .decode(&s.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("signature.signature is not a base64 64-byte signature")?;
    pk.verify(file.body.get().as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| "the signature does not match the body: the file was altered after signing")?;
    if let Some(expected) = expected_signer
        && expected != &pk
    {
        return Err(format!(
            "signed by key {} but the expected signer is {}",
            fingerprint(&pk),
            fingerprint(expected)
        ));
    }
    Ok(Some(fingerprint(&pk)))
}

/// Recomputes the statistics and the decision from the logged answers; they must be the ones
/// recorded. Returns the decision.
fn check_statistics(body: &EvidenceBody) -> std::result::Result<crate::verify::Decision, String> {
    let (test, verdict, decision) = score(
        &body.queries,
        &body.null,
        body.settings.fpr,
        body.decision.key_planned,
        body.settings.sequential,
    )
    .map_err(|e| e.to_string())?;
    let same = test.matches == body.sequential.matches
        && test.answers == body.sequential.answers
        && close(test.max_ln_ratio, body.sequential.max_ln_ratio)
        && verdict.matches == body.binomial.matches
        && verdict.queries == body.binomial.queries
        && verdict.threshold == body.binomial.threshold
        && close(verdict.p_value, body.binomial.p_value)
        && decision.watermarked == body.decision.watermarked
        && decision.key_answers == body.decision.key_answers
        && decision.sequential_state == body.decision.sequential_state
        && decision.method == body.decision.method
        && close(decision.p_value, body.decision.p_value);
    if !same {
        return Err(format!(
            "recorded statistics differ from those recomputed from the logged answers \
             (recomputed: {} of {} key items match, p = {:.3e}, watermarked = {}; recorded: {} of {}, p = {:.3e}, watermarked = {})",
            test.matches,
            test.answers,
            decision.p_value,
            decision.watermarked,
            body.binomial.matches,
            body.binomial.queries,
            body.decision.p_value,
            body.decision.watermarked
        ));
    }
    Ok(decision)
}

/// The lowest null match rate a decision may have been taken against: the key's own null
/// (exact, or its shadows) given the key, chance given only a verification key.
fn null_floor(key: Option<&KeyFile>, vk: Option<&VerificationKey>) -> Result<Option<f64>> {
    Ok(match (key, vk) {
        (Some(k), _) => {
            let scheme = nnmark::watermark::scheme_for_key(k, None)?;
            let null =
                nnmark::watermark::key_null(k, scheme).unwrap_or_else(|_| scheme.analytic_null(k));
            Some(null.rate()?)
        }
        (None, Some(v)) => Some(1.0 / v.num_classes as f64),
        (None, None) => None,
    })
}

/// Every logged key item's commitment must be the verification key's, under its Merkle root.
fn check_logged_commitments(
    body: &EvidenceBody,
    vk: &VerificationKey,
) -> std::result::Result<(), String> {
    let log = body
        .commitments
        .as_ref()
        .ok_or("the evidence logs no commitments to check against the verification key")?;
    if log.merkle_root != vk.merkle_root {
        return Err(format!(
            "commitments are under Merkle root {} but the verification key's is {}",
            log.merkle_root, vk.merkle_root
        ));
    }
    for q in &body.queries {
        for it in q.items.iter().filter(|it| it.kind == ItemKind::Key) {
            let logged = log.items.get(&it.item);
            if logged.is_none() || logged != vk.commitments.get(it.item) {
                return Err(format!(
                    "key item {} of query {}: its logged commitment is not the verification key's",
                    it.item, q.seq
                ));
            }
        }
    }
    Ok(())
}

/// The evidence was made with `key`, and every logged match agrees with the key's labels.
/// The outer error is the key's own (its fingerprint or trigger set); the inner one says what
/// in the evidence is wrong.
fn check_answers_against_key(
    body: &EvidenceBody,
    key: &KeyFile,
) -> Result<std::result::Result<(), String>> {
    let fp = key.fingerprint()?;
    if fp != body.key.fingerprint {
        return Ok(Err(format!(
            "made with key {} but the given key is {fp}",
            body.key.fingerprint
        )));
    }
    let triggers = key.trigger_set()?;
    for q in &body.queries {
        for it in q.items.iter().filter(|it| it.kind == ItemKind::Key) {
            let Some(&label) = triggers.labels.get(it.item) else {
                return Ok(Err(format!(
                    "query {} names key item {} beyond the key's {}",
                    q.seq,
                    it.item,
                    triggers.len()
                )));
            };
            let label = label as usize;
            if it.matched != Some(it.answer == label) {
                return Ok(Err(format!(
                    "query {} key item {}: logged as {} but the answer {} {} the key",
                    q.seq,
                    it.item,
                    if it.matched == Some(true) {
                        "a match"
                    } else {
                        "no match"
                    },
                    it.answer,
                    if it.answer == label {
                        "matches"
                    } else {
                        "does not match"
                    }
                )));
            }
        }
    }
    Ok(Ok(()))
}
