//! `nnmark serve`, `verify --endpoint` (and ONNX suspects), `keys generate`, `evidence check`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nnmark::commit::{CommitmentReport, KeyCommitment};
use nnmark::data::{self, Dataset, ImageShape};
use nnmark::model::{ModelSpec, Normalization};
use nnmark::oracle::Reveal;
use nnmark::verdict::NullModel;
use nnmark::{Device, KeyFile, Scheme};
use nnmark_remote::evidence;
use nnmark_remote::protocol::{Protocol, class_names_for};
use nnmark_remote::server::{self, RateLimit, ServeConfig};
use nnmark_remote::verify::{
    EvidenceBody, EvidenceCommitment, RemoteVerifyOptions, verify_endpoint,
};
use nnmark_remote::{EndpointConfig, HttpEndpoint, OracleEndpoint};
use serde_json::json;

use crate::args::{EvidenceCheckArgs, KeysGenerateArgs, ServeArgs, VerifyArgs};
use crate::versions;

fn parse_shape(s: &str) -> Result<ImageShape> {
    let dims: Vec<usize> = s
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("invalid --input-shape '{s}': expected CxHxW, e.g. 1x28x28"))?;
    match dims.as_slice() {
        [c, h, w] if *c > 0 && *h > 0 && *w > 0 => Ok(ImageShape {
            channels: *c,
            height: *h,
            width: *w,
        }),
        _ => bail!("invalid --input-shape '{s}': expected CxHxW, e.g. 1x28x28"),
    }
}

/// A token from a file, else from an environment variable; never from the command line,
/// where every user of the machine could read it.
fn read_token(file: Option<&Path>, env: &str) -> Result<Option<String>> {
    let token = match file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading token file {}", p.display()))?,
        ),
        None => std::env::var(env).ok(),
    };
    match token.map(|t| t.trim().to_string()) {
        Some(t) if t.is_empty() => bail!("the bearer token is empty"),
        t => Ok(t),
    }
}

/// A duration flag: positive seconds, at most a day (longer is a typo, and would not fit).
fn seconds(flag: &str, v: f64) -> Result<Duration> {
    const DAY: f64 = 86_400.0;
    if !(v.is_finite() && v > 0.0 && v <= DAY) {
        bail!("invalid {flag} {v}: must be positive seconds, at most {DAY}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn serve(a: ServeArgs, device: &Device) -> Result<()> {
    let shape = a.input_shape.as_deref().map(parse_shape).transpose()?;
    let spec = match &a.arch {
        Some(arch) => {
            let input = shape.unwrap_or(ImageShape::MNIST);
            Some(ModelSpec {
                architecture: arch.parse()?,
                input,
                num_classes: a.classes,
                normalization: Normalization::identity(input.channels),
            })
        }
        None => None,
    };
    let (model, dataset) = server::load_model(&a.model, spec.as_ref(), shape, device)?;
    let names = class_names_for(a.labels.as_deref(), &dataset, model.classes())?;
    let mut cfg = ServeConfig::new(
        Protocol::parse(&a.protocol)?,
        &a.name,
        server::parse_reveal(&a.reveal)?,
        names,
    );
    cfg.token = read_token(a.token_file.as_deref(), "NNMARK_SERVE_TOKEN")?;
    cfg.body_limit = a.body_limit;
    cfg.max_batch = a.max_batch;
    cfg.timeout = seconds("--timeout", a.timeout)?;
    cfg.request_timeout = seconds("--request-timeout", a.request_timeout)?;
    if a.rate_limit > 0 {
        cfg.rate_limit = Some(RateLimit {
            per_second: a.rate_limit,
            burst: a.burst,
        });
    }
    let (protocol, reveal, name, auth) = (
        cfg.protocol,
        cfg.reveal,
        cfg.model_name.clone(),
        cfg.token.is_some(),
    );
    let router = server::router(model, cfg)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "serving {} as '{name}' over {protocol} at http://{addr} (reveals {reveal:?}{}; nnmark {})",
            a.model.display(),
            if auth { ", bearer token required" } else { "" },
            nnmark::VERSION
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server::serve(listener, router, server::shutdown_signal(), server::SHUTDOWN_GRACE).await?;
        anyhow::Ok(())
    })
}

/// The key's data set's test images, the decoys.
fn decoys(a: &VerifyArgs, key: &KeyFile) -> Result<Dataset> {
    if a.remote.decoys == 0.0 {
        let s = key.meta.spec.input;
        return Ok(Dataset::new(
            "no decoys",
            s,
            key.meta.spec.num_classes,
            Vec::new(),
            Vec::new(),
        )?);
    }
    let split = data::load(
        &data::DataSource::Named(key.meta.dataset.clone()),
        a.data_dir.as_deref(),
    )
    .with_context(|| {
        format!(
            "loading decoy images from the key's data set '{}' (give --data-dir, or --decoys 0)",
            key.meta.dataset
        )
    })?;
    Ok(split.test)
}

pub fn verify(
    a: &VerifyArgs,
    key: &KeyFile,
    scheme: &dyn Scheme,
    null: NullModel,
    reference_rates: &[serde_json::Value],
    commitment: Option<&(KeyCommitment, CommitmentReport)>,
) -> Result<()> {
    let r = &a.remote;
    let spec = &key.meta.spec;
    let timeout = seconds("--timeout", r.timeout)?;
    let opts = RemoteVerifyOptions {
        fpr: a.fpr,
        batch: r.batch,
        concurrency: r.concurrency,
        decoy_ratio: r.decoys,
        budget: r.budget,
        sequential: r.sequential,
        stop_when_settled: !r.whole_key,
        seed: r.seed,
    };
    // Load the signing key first: a typo should not cost a whole run of queries.
    let signing = r
        .signing_key
        .as_deref()
        .map(evidence::load_signing_key)
        .transpose()?;
    let decoys = decoys(a, key)?;
    let mut body: EvidenceBody = runtime()?.block_on(async {
        if let Some(url) = &r.endpoint {
            let mut cfg = EndpointConfig::new(url, spec.num_classes);
            cfg.protocol = match r.protocol.as_str() {
                "auto" => None,
                p => Some(Protocol::parse(p)?),
            };
            cfg.model_name = r.model_name.clone();
            cfg.token = read_token(r.token_file.as_deref(), "NNMARK_TOKEN")?;
            cfg.timeout = timeout;
            cfg.retries = r.retries;
            cfg.class_names =
                class_names_for(r.labels.as_deref(), &key.meta.dataset, spec.num_classes)?;
            cfg.top_k = r.top_k;
            let ep = HttpEndpoint::connect(cfg, spec.input, r.batch).await?;
            Ok::<_, anyhow::Error>(
                verify_endpoint(&ep, key, scheme, &decoys, Some(null), &opts).await?,
            )
        } else {
            let path = a.model.as_ref().expect("an ONNX --model");
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let oracle =
                nnmark_remote::onnx::OnnxOracle::load(path, Some(spec.input), Reveal::Label)?;
            let meta = json!({"sha256": nnmark::io::sha256_hex(&bytes), "runtime": "tract-onnx"});
            let ep =
                OracleEndpoint::new(Box::new(oracle), "onnx", &path.display().to_string(), meta);
            Ok(verify_endpoint(&ep, key, scheme, &decoys, Some(null), &opts).await?)
        }
    })?;
    body.key_commitment = commitment.map(|(c, r)| EvidenceCommitment {
        commitment: c.clone(),
        check: r.clone(),
    });
    evidence::write(&r.evidence, &body, signing.as_ref())?;
    let d = &body.decision;
    let decoy_answers: usize =
        body.queries.iter().map(|q| q.items.len()).sum::<usize>() - d.key_answers as usize;
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "suspect": body.suspect, "key_fingerprint": body.key.fingerprint,
                   "references": reference_rates, "decision": d, "verdict": body.verdict,
                   "requests": body.queries.len(), "decoy_answers": decoy_answers,
                   "abandoned_requests": body.abandoned_requests,
                   "key_commitment": commitment.map(|(_, r)| r),
                   "evidence": r.evidence, "signed": signing.is_some(), "seed": r.seed})
        );
        return Ok(());
    }
    let s = &body.suspect;
    println!(
        "suspect {} ({}{}): {} requests, {} key items answered ({} match) among {decoy_answers} decoys",
        s.location,
        s.protocol.map_or(s.kind.clone(), |p| p.to_string()),
        s.model_name
            .as_ref()
            .map_or(String::new(), |m| format!(", model '{m}'")),
        body.queries.len(),
        d.key_answers,
        body.sequential.matches
    );
    crate::marks::print_commitment(commitment);
    if d.method == "sequential-mixture" {
        println!(
            "sequential test (always-valid mixture likelihood ratio, null rate {:.4}, fpr {:e}): {} after {} of {} key items; p <= {:.3e}",
            body.verdict.null_rate,
            a.fpr,
            match d.sequential_state {
                nnmark::sequential::SequentialState::Watermarked => "decisive",
                nnmark::sequential::SequentialState::Futile => "cannot become decisive",
                nnmark::sequential::SequentialState::Continue => "undecided",
            },
            d.key_answers,
            d.key_planned,
            d.p_value
        );
        println!(
            "verdict: {}",
            if d.watermarked {
                "WATERMARKED (ownership shown)"
            } else {
                "not shown to carry the watermark"
            }
        );
    } else {
        if d.stopped_early {
            println!(
                "stopped after {} of {} key items: the whole key's binomial decision was settled ({}; p <= {:.3e} over the whole key)",
                d.key_answers,
                d.key_planned,
                if d.watermarked {
                    "the matches reached its threshold"
                } else {
                    "its threshold was out of reach"
                },
                d.p_value
            );
        }
        crate::marks::print_verdict(&body.verdict, &s.location);
    }
    println!(
        "evidence: {} ({})",
        r.evidence.display(),
        match &signing {
            Some(k) => format!("signed by {}", evidence::fingerprint(&k.verifying_key())),
            None => "unsigned: give --signing-key to sign it".into(),
        }
    );
    Ok(())
}

pub fn keys_generate(a: KeysGenerateArgs) -> Result<()> {
    let (public, fp) = evidence::generate_keypair(&a.out)?;
    println!(
        "wrote signing key {} (secret, mode 0600) and public key {} (fingerprint {fp})",
        a.out.display(),
        public.display()
    );
    Ok(())
}

pub fn evidence_check(a: EvidenceCheckArgs) -> Result<()> {
    let expected = a
        .public_key
        .as_deref()
        .map(evidence::load_verifying_key)
        .transpose()?;
    let key = a.key.as_deref().map(KeyFile::load).transpose()?;
    let vk =
        a.vk.as_deref()
            .map(nnmark::commit::VerificationKey::load)
            .transpose()?;
    let report = evidence::check_with(
        &a.file,
        expected.as_ref(),
        key.as_ref(),
        vk.as_ref(),
        &crate::marks::load_tsa_certs(&a.tsa_certs)?,
        a.allow_unsigned,
    )?;
    if a.json {
        println!(
            "{}",
            json!({"versions": versions(), "file": a.file, "check": report,
                   "signer_pinned": report.signed && expected.is_some()})
        );
    } else {
        println!(
            "{}: {}; statistics recomputed from {} logged requests match{}{}; decision: {} (p = {:.3e}, {} key items)",
            a.file.display(),
            match (&report.signer, &expected) {
                (Some(s), Some(_)) => format!("signature valid, signer {s} is the expected one"),
                (Some(s), None) => format!(
                    "signature valid by {s}, but that signer is NOT pinned (anyone can re-sign a file; give --public-key)"
                ),
                (None, _) => "UNSIGNED (nothing shows who wrote it)".into(),
            },
            report.requests,
            match (report.key_checked, report.commitments_checked) {
                (true, true) => "; every logged match and commitment re-checked against the key",
                (true, false) => "; every logged match re-checked against the key",
                (false, true) => "; every logged commitment is the verification key's",
                (false, false) => "",
            },
            if report.null_checked {
                "; null rate checked against the key's"
            } else {
                "; null rate taken from the file (give --key or --vk to check it)"
            },
            if report.watermarked {
                "WATERMARKED"
            } else {
                "not watermarked"
            },
            report.p_value,
            report.key_answers
        );
        if let Some(c) = &report.key_commitment {
            println!("key commitment: {}", c.summary());
        }
    }
    if !report.signed {
        bail!(
            "{}: unsigned evidence is not accepted as proof (read with --allow-unsigned, but it never passes)",
            a.file.display()
        );
    }
    Ok(())
}
