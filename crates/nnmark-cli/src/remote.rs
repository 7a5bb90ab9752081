//! `nnmark serve`, `keys generate` and `evidence check`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nnmark::Device;
use nnmark::data::ImageShape;
use nnmark::model::{ModelSpec, Normalization};
use nnmark_remote::evidence;
use nnmark_remote::protocol::class_names_for;
use nnmark_remote::server::{self, RateLimit, ServeConfig};

use crate::args::{EvidenceCheckArgs, KeysGenerateArgs, ServeArgs};
use crate::emit;

/// A token from a file, else from an environment variable; never from the command line,
/// where every user of the machine could read it.
pub(crate) fn read_token(file: Option<&Path>, env: &str) -> Result<Option<String>> {
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
pub(crate) fn seconds(flag: &str, v: f64) -> Result<Duration> {
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
    let shape = a.input_shape;
    let spec = a.arch.map(|architecture| {
        let input = shape.unwrap_or(ImageShape::MNIST);
        ModelSpec {
            architecture,
            input,
            num_classes: a.classes,
            normalization: Normalization::identity(input.channels),
        }
    });
    let (model, dataset) = server::load_model(&a.model, spec.as_ref(), shape, device)?;
    let names = class_names_for(a.labels.as_deref(), &dataset, model.classes())?;
    let mut cfg = ServeConfig::new(a.protocol, &a.name, server::parse_reveal(&a.reveal)?, names);
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
    let limits = server::ConnectionLimits {
        max_connections: a.max_connections,
        header_read_timeout: seconds("--header-timeout", a.header_timeout)?,
    };
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
        let stop = server::shutdown_signal();
        server::serve_with(listener, router, stop, server::SHUTDOWN_GRACE, limits).await?;
        anyhow::Ok(())
    })
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
    let check = nnmark_remote::workflow::check_evidence(
        &a.file,
        a.public_key.as_deref(),
        a.key.as_deref(),
        a.vk.as_deref(),
        &a.tsa_certs,
        a.allow_unsigned,
    )?;
    emit(a.json, || check.json(), &check);
    if !check.report.signed {
        bail!(
            "{}: unsigned evidence is not accepted as proof (read with --allow-unsigned, but it never passes)",
            a.file.display()
        );
    }
    Ok(())
}
