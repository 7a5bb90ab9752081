//! Verifying a suspect served over HTTP, or given as an ONNX file, from a key prepared by
//! [`nnmark::workflow::prepare_key`]: decoys from the key's data set, the queries, the
//! decision, and the evidence file (signed when a signing key is given).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nnmark::data::{self, DataSource, Dataset};
use nnmark::oracle::Reveal;
use nnmark::sequential::SequentialState;
use nnmark::verdict::Verdict;
use nnmark::workflow::{PreparedKey, commitment_line, verdict_lines, versions};
use nnmark::{Error, Result};
use serde_json::json;

use crate::client::{EndpointConfig, HttpEndpoint, OracleEndpoint};
use crate::evidence;
use crate::protocol::{Protocol, class_names_for};
use crate::verify::{EvidenceBody, EvidenceCommitment, RemoteVerifyOptions, verify_endpoint};

/// Where the suspect is.
pub enum RemoteSuspect {
    /// An inference server.
    Endpoint {
        /// Base URL (`http://host:port`).
        url: String,
        /// Its protocol (None: probe).
        protocol: Option<Protocol>,
        /// Model name in its URLs (None: discover it).
        model_name: Option<String>,
        /// Bearer token.
        token: Option<String>,
        /// How it names classes (`indices`, `fashion`, `digits`, or a file of names; default:
        /// the key's data set's names).
        labels: Option<String>,
        /// Ask a v2 server for its top-k classification.
        top_k: Option<usize>,
        /// Resize the key's images to the size the service declares.
        resize: bool,
        /// Time allowed per attempt.
        timeout: Duration,
        /// Retries of a failed request.
        retries: u32,
    },
    /// An ONNX file, run locally with tract (answers labels only).
    Onnx(PathBuf),
}

/// A remote verification.
pub struct RemoteJob {
    /// The suspect.
    pub suspect: RemoteSuspect,
    /// Batching, decoys, budget, stopping rule, seed.
    pub options: RemoteVerifyOptions,
    /// Folder searched first for the key's data set (the decoys).
    pub data_dir: Option<PathBuf>,
    /// Decoy images of the caller's own (None: the key's data set's test images); for keys
    /// of data sets nnmark does not know, such as an external model's.
    pub decoys: Option<Dataset>,
    /// Where the evidence file goes.
    pub evidence: PathBuf,
    /// The owner's Ed25519 key that signs it.
    pub signing_key: Option<PathBuf>,
}

/// What a remote verification found and where its evidence is.
pub struct RemoteReport {
    /// The evidence as written.
    pub body: EvidenceBody,
    /// The evidence file.
    pub evidence: PathBuf,
    /// Fingerprint of the signer, when signed.
    pub signer: Option<String>,
    /// The false-positive rate asked for.
    pub fpr: f64,
    /// The seed of the shuffle and decoys.
    pub seed: u64,
}

/// The key's data set's test images, the decoys (none when the ratio is 0).
fn decoys(p: &PreparedKey, ratio: f64, data_dir: Option<&Path>) -> Result<Dataset> {
    let spec = &p.key.meta.spec;
    if ratio == 0.0 {
        return Dataset::new(
            "no decoys",
            spec.input,
            spec.num_classes,
            Vec::new(),
            Vec::new(),
        );
    }
    let dataset = &p.key.meta.dataset;
    let split = data::load(&DataSource::Named(dataset.clone()), data_dir).map_err(|e| {
        Error::invalid(
            "decoy data set (the key's)",
            dataset,
            format!("{e} (give --data-dir, or --decoys 0)"),
        )
    })?;
    Ok(split.test)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Unsupported(format!("cannot start the async runtime: {e}")))
}

/// Queries the suspect with the key's items among decoys, decides, and writes the evidence.
pub fn verify_remote(p: &PreparedKey, job: &RemoteJob) -> Result<RemoteReport> {
    let spec = &p.key.meta.spec;
    // Load the signing key first: a typo should not cost a whole run of queries.
    let signing = job
        .signing_key
        .as_deref()
        .map(evidence::load_signing_key)
        .transpose()?;
    let decoys = match &job.decoys {
        Some(own) => own.clone(),
        None => decoys(p, job.options.decoy_ratio, job.data_dir.as_deref())?,
    };
    let null = Some(p.null.clone());
    let opts = &job.options;
    let mut body = runtime()?.block_on(async {
        match &job.suspect {
            RemoteSuspect::Endpoint {
                url,
                protocol,
                model_name,
                token,
                labels,
                top_k,
                resize,
                timeout,
                retries,
            } => {
                let mut cfg = EndpointConfig::new(url, spec.num_classes);
                cfg.protocol = *protocol;
                cfg.model_name = model_name.clone();
                cfg.token = token.clone();
                cfg.timeout = *timeout;
                cfg.retries = *retries;
                cfg.class_names =
                    class_names_for(labels.as_deref(), &p.key.meta.dataset, spec.num_classes)?;
                cfg.top_k = *top_k;
                cfg.resize = *resize;
                let ep = HttpEndpoint::connect(cfg, spec.input, opts.batch).await?;
                verify_endpoint(&ep, &p.key, p.scheme, &decoys, null, opts).await
            }
            RemoteSuspect::Onnx(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let oracle = crate::onnx::OnnxOracle::load(path, Some(spec.input), Reveal::Label)?;
                let meta =
                    json!({"sha256": nnmark::io::sha256_hex(&bytes), "runtime": "tract-onnx"});
                let ep = OracleEndpoint::new(
                    Box::new(oracle),
                    "onnx",
                    &path.display().to_string(),
                    meta,
                );
                verify_endpoint(&ep, &p.key, p.scheme, &decoys, null, opts).await
            }
        }
    })?;
    body.key_commitment = p.commitment.as_ref().map(|c| EvidenceCommitment {
        commitment: c.commitment.clone(),
        check: c.report.clone(),
    });
    evidence::write(&job.evidence, &body, signing.as_ref())?;
    Ok(RemoteReport {
        body,
        evidence: job.evidence.clone(),
        signer: signing
            .as_ref()
            .map(|k| evidence::fingerprint(&k.verifying_key())),
        fpr: opts.fpr,
        seed: opts.seed,
    })
}

impl RemoteReport {
    fn decoy_answers(&self) -> usize {
        let answered: usize = self.body.queries.iter().map(|q| q.items.len()).sum();
        answered - self.body.decision.key_answers as usize
    }

    /// The machine-readable report.
    pub fn json(&self, references: &[nnmark::workflow::ReferenceRate]) -> serde_json::Value {
        let b = &self.body;
        json!({"versions": versions(), "suspect": b.suspect, "key_fingerprint": b.key.fingerprint,
               "references": references, "decision": b.decision, "binomial": b.binomial,
               "requests": b.queries.len(), "decoy_answers": self.decoy_answers(),
               "abandoned_requests": b.abandoned_requests,
               "key_commitment": b.key_commitment.as_ref().map(|c| &c.check),
               "evidence": self.evidence, "signed": self.signer.is_some(), "seed": self.seed})
    }
}

impl fmt::Display for RemoteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (b, d) = (&self.body, &self.body.decision);
        let s = &b.suspect;
        writeln!(
            f,
            "suspect {} ({}{}): {} requests, {} key items answered ({} match) among {} decoys",
            s.location,
            s.protocol.map_or(s.kind.clone(), |p| p.to_string()),
            s.model_name
                .as_ref()
                .map_or(String::new(), |m| format!(", model '{m}'")),
            b.queries.len(),
            d.key_answers,
            b.sequential.matches,
            self.decoy_answers()
        )?;
        let commitment = b.key_commitment.as_ref().map(|c| c.check.summary());
        match commitment {
            Some(c) => writeln!(f, "key commitment: {c}")?,
            None => writeln!(f, "{}", commitment_line(None))?,
        }
        if d.method == "sequential-mixture" {
            writeln!(
                f,
                "sequential test (always-valid mixture likelihood ratio, null rate {:.4}, fpr {:e}): {} after {} of {} key items; p <= {:.3e}",
                b.binomial.null_rate,
                self.fpr,
                match d.sequential_state {
                    SequentialState::Watermarked => "decisive",
                    SequentialState::Futile => "cannot become decisive",
                    SequentialState::Continue => "undecided",
                },
                d.key_answers,
                d.key_planned,
                d.p_value
            )?;
            writeln!(
                f,
                "verdict: {}",
                if d.watermarked {
                    "WATERMARKED (ownership shown)"
                } else {
                    "not shown to carry the watermark"
                }
            )?;
        } else {
            if d.stopped_early {
                writeln!(
                    f,
                    "stopped after {} of {} key items: the whole key's binomial decision was settled ({}; p <= {:.3e} over the whole key)",
                    d.key_answers,
                    d.key_planned,
                    if d.watermarked {
                        "the matches reached its threshold"
                    } else {
                        "its threshold was out of reach"
                    },
                    d.p_value
                )?;
            }
            // Fixed-n: the binomial rule is the decision (`score`), so its lines are the verdict.
            let verdict = Verdict {
                matches: b.binomial.matches,
                queries: b.binomial.queries,
                match_rate: b.binomial.match_rate,
                null: b.null.clone(),
                null_rate: b.binomial.null_rate,
                p_value: b.binomial.p_value,
                fpr: b.binomial.fpr,
                threshold: b.binomial.threshold,
                watermarked: d.watermarked,
                match_rate_ci95: b.binomial.match_rate_ci95,
                reveal: None,
            };
            writeln!(f, "{}", verdict_lines(&verdict, &s.location))?;
        }
        write!(
            f,
            "evidence: {} ({})",
            self.evidence.display(),
            match &self.signer {
                Some(k) => format!("signed by {k}"),
                None => "unsigned: give --signing-key to sign it".into(),
            }
        )
    }
}

/// An evidence file's check, with whether its signer was the one expected.
pub struct EvidenceCheck {
    /// The file checked.
    pub file: PathBuf,
    /// What the check established.
    pub report: evidence::CheckReport,
    /// The signer was pinned by the owner's public key.
    pub pinned: bool,
}

/// Checks an evidence file: its signature (against `public_key` when given), its statistics
/// recomputed from the logged answers, and, given the key or verification key, every logged
/// match or commitment. Unsigned files are read only with `allow_unsigned` (and never pass:
/// see [`EvidenceCheck::report`]'s `signed`).
pub fn check_evidence(
    file: &Path,
    public_key: Option<&Path>,
    key: Option<&Path>,
    vk: Option<&Path>,
    tsa_certs: &[PathBuf],
    allow_unsigned: bool,
) -> Result<EvidenceCheck> {
    let expected = public_key.map(evidence::load_verifying_key).transpose()?;
    let key = key.map(nnmark::KeyFile::load).transpose()?;
    let vk = vk.map(nnmark::commit::VerificationKey::load).transpose()?;
    let report = evidence::check_with(
        file,
        expected.as_ref(),
        key.as_ref(),
        vk.as_ref(),
        &nnmark::workflow::load_tsa_certs(tsa_certs)?,
        allow_unsigned,
    )?;
    Ok(EvidenceCheck {
        file: file.to_path_buf(),
        pinned: report.signed && expected.is_some(),
        report,
    })
}

impl EvidenceCheck {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        json!({"versions": versions(), "file": self.file, "check": self.report,
               "signer_pinned": self.pinned})
    }
}

impl fmt::Display for EvidenceCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.report;
        write!(
            f,
            "{}: {}; statistics recomputed from {} logged requests match{}{}; decision: {} (p = {:.3e}, {} key items)",
            self.file.display(),
            match (&r.signer, self.pinned) {
                (Some(s), true) => format!("signature valid, signer {s} is the expected one"),
                (Some(s), false) => format!(
                    "signature valid by {s}, but that signer is NOT pinned (anyone can re-sign a file; give --public-key)"
                ),
                (None, _) => "UNSIGNED (nothing shows who wrote it)".into(),
            },
            r.requests,
            match (r.key_checked, r.commitments_checked) {
                (true, true) => "; every logged match and commitment re-checked against the key",
                (true, false) => "; every logged match re-checked against the key",
                (false, true) => "; every logged commitment is the verification key's",
                (false, false) => "",
            },
            if r.null_checked {
                "; null rate checked against the key's"
            } else {
                "; null rate taken from the file (give --key or --vk to check it)"
            },
            if r.watermarked {
                "WATERMARKED"
            } else {
                "not watermarked"
            },
            r.p_value,
            r.key_answers
        )?;
        if let Some(c) = &r.key_commitment {
            write!(f, "\nkey commitment: {}", c.summary())?;
        }
        Ok(())
    }
}
