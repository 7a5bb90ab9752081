//! RFC 3161 trusted timestamps for nnmark's key commitments.
//!
//! A time-stamping authority (TSA) signs a statement "this SHA-256 digest existed at time T".
//! nnmark asks for one over a key commitment's statement digest, so an owner can later show that
//! the key was fixed before a suspect model existed. This crate:
//!
//! - writes the request ([`request`]): a DER `TimeStampReq` with the SHA-256 message imprint, a
//!   random nonce and `certReq` set (any RFC 3161 authority answers it; so does
//!   `openssl ts -reply`);
//! - takes the authority's answer ([`token_from_response`]): checks the status and keeps the
//!   token (a CMS `SignedData` over a `TSTInfo`);
//! - verifies a token offline ([`verify_token`]) against certificates the verifier trusts (the
//!   authority's own certificate or the CA that issued it): the imprint must equal the expected
//!   digest; the signed attributes must name the `TSTInfo` content type and carry its digest;
//!   the signature (RSA PKCS#1 v1.5 or ECDSA P-256/P-384, SHA-256/384/512) must verify under the
//!   signing certificate's key; that certificate must be marked for time stamping
//!   (extended key usage `timeStamping`) and valid at the token's time, and must chain, through
//!   certificates in the token if need be, to a trusted one, every issuer a CA valid at that
//!   time.
//!
//! What it does not do: revocation (CRL/OCSP) checks, which need the network; the ESS
//! signing-certificate attribute is not required (the signature check already binds the key).
//! The parsing is RustCrypto's (`x509-tsp`, `cms`, `x509-cert`, `der`); signatures are checked
//! with `rsa`, `p256` and `p384`.

pub mod local_authority;

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{Int, ObjectIdentifier, OctetString, OctetStringRef};
use der::{Any, Decode, Encode};
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifier;
pub use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// What can go wrong; every message says what was checked and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not what they claim to be (DER that does not parse, wrong content).
    #[error("{what}: {detail}")]
    Malformed {
        /// The object being read.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The authority did not grant the request.
    #[error("the time-stamping authority refused the request: status {0}")]
    Refused(String),
    /// A check on a well-formed token failed.
    #[error("timestamp token refused: {0}")]
    Invalid(String),
    /// No random source.
    #[error("no OS random source: {0}")]
    Random(String),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

fn malformed(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        what,
        detail: e.to_string(),
    }
}

const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

/// Longest certificate chain followed from the signer to a trusted certificate.
const MAX_CHAIN: usize = 6;

/// A DER `TimeStampReq` for a SHA-256 digest, with a random 64-bit nonce and `certReq` set.
pub fn request(digest: &[u8; 32]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
    nonce[0] &= 0x7f; // a positive INTEGER
    nonce[0] |= 0x01; // with no leading zero byte to strip
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifier {
                oid: OID_SHA256,
                parameters: Some(Any::null()),
            },
            hashed_message: OctetString::new(digest.to_vec())
                .map_err(|e| malformed("time-stamp request", e))?,
        },
        req_policy: None,
        nonce: Some(Int::new(&nonce).map_err(|e| malformed("time-stamp request", e))?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(|e| malformed("time-stamp request", e))
}

/// The token (DER `ContentInfo`) from an authority's DER `TimeStampResp`, after checking that
/// the request was granted.
pub fn token_from_response(response: &[u8]) -> Result<Vec<u8>> {
    let resp = TimeStampResp::from_der(response)
        .map_err(|e| malformed("time-stamp response (RFC 3161 TimeStampResp, DER)", e))?;
    use cmpv2::status::PkiStatus;
    match resp.status.status {
        PkiStatus::Accepted | PkiStatus::GrantedWithMods => {}
        other => return Err(Error::Refused(format!("{other:?}"))),
    }
    let token = resp.time_stamp_token.ok_or_else(|| Error::Malformed {
        what: "time-stamp response",
        detail: "the status says granted but there is no token".into(),
    })?;
    token.to_der().map_err(|e| malformed("time-stamp token", e))
}

/// Reads certificates from PEM (one or more `CERTIFICATE` blocks) or a single DER certificate.
pub fn load_certificates(bytes: &[u8]) -> Result<Vec<Certificate>> {
    if bytes.starts_with(b"-----") || bytes.iter().take(64).all(|b| b.is_ascii()) {
        let certs =
            Certificate::load_pem_chain(bytes).map_err(|e| malformed("PEM certificate", e))?;
        if certs.is_empty() {
            return Err(malformed("PEM certificate", "no CERTIFICATE block"));
        }
        return Ok(certs);
    }
    Ok(vec![
        Certificate::from_der(bytes).map_err(|e| malformed("DER certificate", e))?,
    ])
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedTimestamp {
    /// The time the authority vouches for, RFC 3339 (UTC).
    pub gen_time: String,
    /// The same, in seconds since the Unix epoch.
    pub unix_seconds: u64,
    /// Subject of the signing certificate.
    pub tsa: String,
    /// Subject of the trusted certificate the chain ended at.
    pub trusted: String,
    /// The authority's serial number of the token, hex.
    pub serial: String,
    /// The authority's policy.
    pub policy: String,
}

fn hash(oid: &ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>> {
    Ok(match *oid {
        OID_SHA256 => Sha256::digest(data).to_vec(),
        OID_SHA384 => Sha384::digest(data).to_vec(),
        OID_SHA512 => Sha512::digest(data).to_vec(),
        other => {
            return Err(Error::Invalid(format!(
                "digest algorithm {other} is not supported (SHA-256, SHA-384, SHA-512 are)"
            )));
        }
    })
}

/// Checks `signature` over `message` with the key in `cert`, for the signature algorithm
/// `sig_alg` (with `digest_alg` where the algorithm names only the key type, as CMS allows).
fn verify_signature(
    cert: &Certificate,
    sig_alg: &ObjectIdentifier,
    digest_alg: Option<&ObjectIdentifier>,
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = spki
        .to_der()
        .map_err(|e| malformed("certificate public key", e))?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::Invalid(format!(
            "the signature does not verify under the key of '{}': {e}",
            cert.tbs_certificate.subject
        ))
    };
    let digest = match (*sig_alg, digest_alg) {
        (OID_RSA_SHA256 | OID_ECDSA_SHA256, _) => OID_SHA256,
        (OID_RSA_SHA384 | OID_ECDSA_SHA384, _) => OID_SHA384,
        (OID_RSA_SHA512, _) => OID_SHA512,
        (OID_RSA, Some(d)) => *d,
        (other, _) => {
            return Err(Error::Invalid(format!(
                "signature algorithm {other} is not supported (RSA PKCS#1 v1.5 and ECDSA P-256/P-384 are)"
            )));
        }
    };
    match spki.algorithm.oid {
        OID_RSA => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::signature::Verifier;
            let key = rsa::RsaPublicKey::from_public_key_der(&spki_der)
                .map_err(|e| malformed("RSA public key", e))?;
            let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|e| bad(&e))?;
            match digest {
                OID_SHA256 => rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key).verify(message, &sig),
                OID_SHA384 => rsa::pkcs1v15::VerifyingKey::<Sha384>::new(key).verify(message, &sig),
                _ => rsa::pkcs1v15::VerifyingKey::<Sha512>::new(key).verify(message, &sig),
            }
            .map_err(|e| bad(&e))
        }
        OID_EC_PUBLIC_KEY => {
            let curve: Option<ObjectIdentifier> = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok());
            let prehash = hash(&digest, message)?;
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            match curve {
                Some(OID_P256) => {
                    use p256::pkcs8::DecodePublicKey;
                    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki_der)
                        .map_err(|e| malformed("P-256 public key", e))?;
                    let sig = p256::ecdsa::Signature::from_der(signature).map_err(|e| bad(&e))?;
                    key.verify_prehash(&prehash, &sig).map_err(|e| bad(&e))
                }
                Some(OID_P384) => {
                    use p384::pkcs8::DecodePublicKey;
                    let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki_der)
                        .map_err(|e| malformed("P-384 public key", e))?;
                    let sig = p384::ecdsa::Signature::from_der(signature).map_err(|e| bad(&e))?;
                    key.verify_prehash(&prehash, &sig).map_err(|e| bad(&e))
                }
                other => Err(Error::Invalid(format!(
                    "elliptic curve {other:?} is not supported (P-256 and P-384 are)"
                ))),
            }
        }
        other => Err(Error::Invalid(format!(
            "public key algorithm {other} is not supported (RSA and ECDSA are)"
        ))),
    }
}

fn extension<'a>(cert: &'a Certificate, oid: &ObjectIdentifier) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == *oid)
        .map(|e| e.extn_value.as_bytes())
}

fn valid_at(cert: &Certificate, unix: u64) -> Result<()> {
    let v = &cert.tbs_certificate.validity;
    let from = v.not_before.to_unix_duration().as_secs();
    let to = v.not_after.to_unix_duration().as_secs();
    if unix < from || unix > to {
        return Err(Error::Invalid(format!(
            "certificate '{}' was not valid at the token's time {} (valid from {} to {}): expired or not yet valid",
            cert.tbs_certificate.subject,
            rfc3339(unix),
            rfc3339(from),
            rfc3339(to)
        )));
    }
    Ok(())
}

fn is_ca(cert: &Certificate) -> bool {
    extension(cert, &OID_BASIC_CONSTRAINTS)
        .and_then(|b| BasicConstraints::from_der(b).ok())
        .is_some_and(|b| b.ca)
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix} s after 1970"))
}

fn signer_matches(cert: &Certificate, sid: &SignerIdentifier) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            cert.tbs_certificate.issuer == is.issuer
                && cert.tbs_certificate.serial_number == is.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
            extension(cert, &OID_SKI)
                .and_then(|b| OctetString::from_der(b).ok())
                .is_some_and(|o| o.as_bytes() == ski.0.as_bytes())
        }
    }
}

/// Follows issuers from `leaf` to a certificate in `trusted`, through `pool`; returns the
/// trusted certificate's subject.
fn chain_to_trusted(
    leaf: &Certificate,
    pool: &[Certificate],
    trusted: &[Certificate],
    unix: u64,
) -> Result<String> {
    let mut cert = leaf.clone();
    for _ in 0..MAX_CHAIN {
        if trusted.iter().any(|t| t == &cert) {
            return Ok(cert.tbs_certificate.subject.to_string());
        }
        let tbs = cert
            .tbs_certificate
            .to_der()
            .map_err(|e| malformed("certificate", e))?;
        let sig = cert.signature.raw_bytes();
        let issued_by = |c: &&Certificate| {
            c.tbs_certificate.subject == cert.tbs_certificate.issuer
                && is_ca(c)
                && verify_signature(c, &cert.signature_algorithm.oid, None, &tbs, sig).is_ok()
        };
        if let Some(anchor) = trusted.iter().find(issued_by) {
            valid_at(anchor, unix)?;
            return Ok(anchor.tbs_certificate.subject.to_string());
        }
        let Some(next) = pool.iter().find(issued_by) else {
            return Err(Error::Invalid(format!(
                "certificate '{}' (issued by '{}') does not chain to a trusted certificate: a foreign authority, or the wrong --tsa-cert",
                cert.tbs_certificate.subject, cert.tbs_certificate.issuer
            )));
        };
        valid_at(next, unix)?;
        cert = next.clone();
    }
    Err(Error::Invalid(format!(
        "no trusted certificate within {MAX_CHAIN} links of the signer"
    )))
}

fn attribute<'a>(si: &'a SignerInfo, oid: &ObjectIdentifier) -> Result<&'a Any> {
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| {
        Error::Invalid("the signer info has no signed attributes (RFC 3161 requires them)".into())
    })?;
    let attr = attrs
        .iter()
        .find(|a| a.oid == *oid)
        .ok_or_else(|| Error::Invalid(format!("the signed attributes lack {oid}")))?;
    match attr.values.as_slice() {
        [one] => Ok(one),
        _ => Err(Error::Invalid(format!(
            "signed attribute {oid} must have exactly one value"
        ))),
    }
}

/// Verifies a token (DER `ContentInfo`) over `digest` against `trusted` certificates.
pub fn verify_token(
    token: &[u8],
    digest: &[u8; 32],
    trusted: &[Certificate],
) -> Result<VerifiedTimestamp> {
    let ci = ContentInfo::from_der(token).map_err(|e| malformed("time-stamp token", e))?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(malformed(
            "time-stamp token",
            format!("content type {} is not CMS SignedData", ci.content_type),
        ));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e| malformed("time-stamp token's SignedData", e))?;
    let eci = &sd.encap_content_info;
    if eci.econtent_type != OID_TST_INFO {
        return Err(malformed(
            "time-stamp token",
            format!("it signs {}, not a TSTInfo", eci.econtent_type),
        ));
    }
    let econtent = eci
        .econtent
        .as_ref()
        .ok_or_else(|| malformed("time-stamp token", "no TSTInfo content"))?;
    let tst_der = econtent
        .decode_as::<OctetStringRef<'_>>()
        .map_err(|e| malformed("time-stamp token's content", e))?
        .as_bytes()
        .to_vec();
    let tst = TstInfo::from_der(&tst_der).map_err(|e| malformed("TSTInfo", e))?;
    let imprint = &tst.message_imprint;
    if imprint.hash_algorithm.oid != OID_SHA256 || imprint.hashed_message.as_bytes() != digest {
        return Err(Error::Invalid(format!(
            "it stamps {} digest {}, not this commitment's SHA-256 {}: a token for other bytes",
            imprint.hash_algorithm.oid,
            hex(imprint.hashed_message.as_bytes()),
            hex(digest)
        )));
    }
    let unix = tst.gen_time.to_unix_duration().as_secs();
    let signers: Vec<&SignerInfo> = sd.signer_infos.0.iter().collect();
    let [si] = signers.as_slice() else {
        return Err(Error::Invalid(format!(
            "{} signer infos, exactly one expected",
            signers.len()
        )));
    };
    let content_type: ObjectIdentifier = attribute(si, &OID_CONTENT_TYPE)?
        .decode_as()
        .map_err(|e| malformed("content-type attribute", e))?;
    if content_type != OID_TST_INFO {
        return Err(Error::Invalid(format!(
            "the signed content-type attribute is {content_type}, not TSTInfo"
        )));
    }
    let md = attribute(si, &OID_MESSAGE_DIGEST)?
        .decode_as::<OctetStringRef<'_>>()
        .map_err(|e| malformed("message-digest attribute", e))?;
    if md.as_bytes() != hash(&si.digest_alg.oid, &tst_der)?.as_slice() {
        return Err(Error::Invalid(
            "the signed message digest does not match the TSTInfo: the token was altered".into(),
        ));
    }
    let pool: Vec<Certificate> = sd
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(cert) => Some(cert.clone()),
            _ => None,
        })
        .collect();
    let signer = pool
        .iter()
        .chain(trusted)
        .find(|c| signer_matches(c, &si.sid))
        .ok_or_else(|| {
            Error::Invalid(
                "the signing certificate is neither in the token nor among the trusted ones (pass the authority's certificate)".into(),
            )
        })?
        .clone();
    let signed_attrs = si
        .signed_attrs
        .as_ref()
        .expect("checked by attribute()")
        .to_der()
        .map_err(|e| malformed("signed attributes", e))?;
    verify_signature(
        &signer,
        &si.signature_algorithm.oid,
        Some(&si.digest_alg.oid),
        &signed_attrs,
        si.signature.as_bytes(),
    )?;
    let eku = extension(&signer, &OID_EXT_KEY_USAGE)
        .and_then(|b| ExtendedKeyUsage::from_der(b).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "signing certificate '{}' has no extended key usage: RFC 3161 requires timeStamping",
                signer.tbs_certificate.subject
            ))
        })?;
    if !eku.0.contains(&OID_KP_TIME_STAMPING) {
        return Err(Error::Invalid(format!(
            "signing certificate '{}' is not marked for time stamping",
            signer.tbs_certificate.subject
        )));
    }
    valid_at(&signer, unix)?;
    let trusted_subject = chain_to_trusted(&signer, &pool, trusted, unix)?;
    Ok(VerifiedTimestamp {
        gen_time: rfc3339(unix),
        unix_seconds: unix,
        tsa: signer.tbs_certificate.subject.to_string(),
        trusted: trusted_subject,
        serial: hex(tst.serial_number.as_bytes()),
        policy: tst.policy.to_string(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
