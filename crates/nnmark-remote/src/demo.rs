//! The demo's remote half: serve the marked model on a loopback port, verify it through the
//! API as a stranger's service would be checked, and sign and check the evidence.

use std::path::{Path, PathBuf};

use nnmark::data::{self, DataSource};
use nnmark::oracle::{LocalOracle, Reveal};
use nnmark::{Device, KeyFile, Result};
use serde::Serialize;

use crate::client::{EndpointConfig, HttpEndpoint};
use crate::evidence;
use crate::protocol::{ClassNames, Protocol};
use crate::server::{RunningServer, ServeConfig, ServedModel};
use crate::verify::{Decision, RemoteVerifyOptions, verify_endpoint};

/// What the remote check found.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteDemo {
    /// Where the model was served.
    pub url: String,
    /// The protocol the client found by probing.
    pub protocol: Protocol,
    /// The decision.
    pub decision: Decision,
    /// Requests sent (key items and decoys together).
    pub requests: usize,
    /// The signed evidence file.
    pub evidence_path: PathBuf,
    /// The owner's signing key (created on first use).
    pub signing_key_path: PathBuf,
    /// Fingerprint of its public half.
    pub signer: String,
}

/// Serves `model` (v2, labels only, as a cautious service would), verifies it remotely with
/// the key at `key`, writes signed evidence into `out_dir`, and checks it.
pub fn run(
    model: &Path,
    key: &Path,
    out_dir: &Path,
    seed: u64,
    device: &Device,
) -> Result<RemoteDemo> {
    let key = KeyFile::load(key)?;
    let loaded = nnmark::weights::load(model, None, device)?;
    let classes = loaded.model.spec.num_classes;
    let served = ServedModel::new(
        Box::new(LocalOracle::new(loaded.model, Reveal::Probabilities)),
        "nnmark-burn",
    );
    let cfg = ServeConfig::new(
        Protocol::V2,
        "model",
        Reveal::Label,
        ClassNames::indices(classes),
    );
    let server = RunningServer::start(served, cfg, "127.0.0.1:0".parse().expect("address"))?;
    let url = server.url();
    let decoys = data::load(&DataSource::Named(key.meta.dataset.clone()), None)?.test;
    let scheme = nnmark::watermark::scheme_for_key(&key, None)?;
    let opts = RemoteVerifyOptions {
        seed,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| nnmark::Error::remote(&url, format!("cannot start runtime: {e}")))?;
    let body = runtime.block_on(async {
        let ep = HttpEndpoint::connect(
            EndpointConfig::new(&url, classes),
            key.meta.spec.input,
            opts.batch,
        )
        .await?;
        verify_endpoint(&ep, &key, scheme, &decoys, None, &opts).await
    })?;
    server.stop()?;
    let signing_key_path = out_dir.join("owner-signing.pem");
    if !signing_key_path.exists() {
        evidence::generate_keypair(&signing_key_path)?;
    }
    let sk = evidence::load_signing_key(&signing_key_path)?;
    let evidence_path = out_dir.join("evidence.json");
    evidence::write(&evidence_path, &body, Some(&sk))?;
    evidence::check(&evidence_path, Some(&sk.verifying_key()), Some(&key), false)?;
    Ok(RemoteDemo {
        url,
        protocol: body.suspect.protocol.unwrap_or(Protocol::V2),
        decision: body.decision.clone(),
        requests: body.queries.len(),
        evidence_path,
        signing_key_path,
        signer: evidence::fingerprint(&sk.verifying_key()),
    })
}

impl std::fmt::Display for RemoteDemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.decision;
        writeln!(
            f,
            "served the watermarked model at {} ({}, labels only) and verified it through the API: {} after {} of {} key items hidden among decoys ({} requests), p <= {:.2e}",
            self.url,
            self.protocol,
            if d.watermarked {
                "WATERMARKED"
            } else {
                "not watermarked"
            },
            d.key_answers,
            d.key_planned,
            self.requests,
            d.p_value
        )?;
        write!(
            f,
            "signed evidence: {} (signer {}, key {}); check it with: nnmark evidence check {} --public-key {}.pub",
            self.evidence_path.display(),
            &self.signer[..16.min(self.signer.len())],
            self.signing_key_path.display(),
            self.evidence_path.display(),
            self.signing_key_path.display()
        )
    }
}
