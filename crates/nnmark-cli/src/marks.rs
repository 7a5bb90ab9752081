//! `embed`, `verify`, `attack`, `key inspect` and `vk export`: flags into the requests of
//! `nnmark::workflow` (and `nnmark_remote::workflow` for served and ONNX suspects).

use anyhow::{Result, bail};
use nnmark::Device;
use nnmark::commit::VerificationKey;
use nnmark::keyfile::KeyFile;
use nnmark::workflow::{
    self, AttackJob, Calibration, EmbedJob, NullChoice, ProofPolicy, PublicCheck, RevealJob, Start,
};
use nnmark::{scheme, weights};
use nnmark_remote::verify::RemoteVerifyOptions;
use nnmark_remote::workflow::{RemoteJob, RemoteSuspect};

use crate::args::{AttackArgs, EmbedArgs, KeyInspectArgs, NullKind, VerifyArgs, VkExportArgs};
use crate::remote::{read_token, seconds};
use crate::{emit, load_data, observer};
use nnmark::shadow::{ShadowPlan, default_cache_dir};

/// `--param name=value` pairs as a JSON object (values parsed as JSON, else taken as strings).
fn parse_params(pairs: &[String]) -> Result<serde_json::Value> {
    let mut obj = serde_json::Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("invalid --param '{p}': expected NAME=VALUE, e.g. items=100");
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        obj.insert(k.trim().to_string(), value);
    }
    Ok(serde_json::Value::Object(obj))
}

pub fn embed(a: EmbedArgs, device: &Device) -> Result<()> {
    let scheme = scheme::by_name(&a.scheme)?;
    let params = parse_params(&a.params)?;
    // Reject bad parameters before loading data or training anything.
    scheme.params(&params)?;
    let split = load_data(&a.data)?;
    let loaded = match &a.model {
        Some(path) => Some(weights::load(path, None, device)?.model),
        None => None,
    };
    let start = match loaded {
        None => Start::FromScratch(a.arch),
        Some(teacher) if a.distill => Start::Distill {
            teacher,
            arch: a.arch,
        },
        Some(clean) => Start::FineTune(clean),
    };
    let fine_tune = matches!(start, Start::FineTune(_));
    let mut job = EmbedJob::new(scheme, start, &split, a.data.source()?.label());
    job.params = params;
    job.aux_data = a.aux_data.clone();
    job.data_dir = a.data.data_dir.clone();
    job.train = a.train.config(fine_tune);
    job.key_seed = a.key_seed;
    job.proof = ProofPolicy {
        fpr: a.fpr,
        margin: a.margin,
        allow_unprovable: a.allow_unprovable,
    };
    job.shadows = ShadowPlan {
        count: a.shadows,
        epochs: a.shadow_epochs,
        cache: Some(a.shadow_cache.clone().unwrap_or_else(default_cache_dir)),
        ..Default::default()
    };
    let report = workflow::embed(job, device, observer(&a.output).as_mut())?;
    let written = report.write(&a.out, &a.key, a.commitment.as_deref())?;
    emit(a.output.json, || written.json(), &written);
    Ok(())
}

fn null_choice(a: &VerifyArgs) -> Result<NullChoice> {
    let references_given = !a.reference.is_empty() || !a.reference_seeds.is_empty();
    Ok(match a.null {
        NullKind::Key | NullKind::Analytic if references_given => {
            bail!("--reference and --reference-seeds calibrate the null: add --null calibrated")
        }
        NullKind::Key => NullChoice::Key,
        NullKind::Analytic => NullChoice::Analytic,
        NullKind::Calibrated => NullChoice::Calibrated(Calibration {
            reference_files: a.reference.clone(),
            reference_seeds: a.reference_seeds.clone(),
            reference_epochs: a.reference_epochs,
            confidence: a.confidence,
            data_dir: a.data_dir.clone(),
        }),
    })
}

fn remote_job(a: &VerifyArgs) -> Result<RemoteJob> {
    let r = &a.remote;
    let suspect = match (&r.endpoint, &a.model) {
        (Some(url), _) => RemoteSuspect::Endpoint {
            url: url.clone(),
            protocol: match r.protocol.as_str() {
                "auto" => None,
                p => Some(p.parse()?),
            },
            model_name: r.model_name.clone(),
            token: read_token(r.token_file.as_deref(), "NNMARK_TOKEN")?,
            labels: r.labels.clone(),
            top_k: r.top_k,
            resize: r.resize,
            timeout: seconds("--timeout", r.timeout)?,
            retries: r.retries,
        },
        (None, Some(path)) => RemoteSuspect::Onnx(path.clone()),
        (None, None) => bail!("give --model or --endpoint"),
    };
    Ok(RemoteJob {
        suspect,
        options: RemoteVerifyOptions {
            fpr: a.fpr,
            batch: r.batch,
            concurrency: r.concurrency,
            decoy_ratio: r.decoys,
            budget: r.budget,
            sequential: r.sequential,
            stop_when_settled: !r.whole_key,
            seed: r.seed,
        },
        data_dir: a.data_dir.clone(),
        decoys: None,
        evidence: r.evidence.clone(),
        signing_key: r.signing_key.clone(),
    })
}

pub fn verify(a: VerifyArgs, device: &Device) -> Result<()> {
    let null = null_choice(&a)?;
    if let Some(bundle) = &a.public {
        let (Some(vk), Some(challenge), Some(model)) = (&a.vk, &a.challenge, &a.model) else {
            bail!(
                "--public needs --vk (the verification key the owner published before the dispute), --challenge (the one you issued) and --model (the suspect's weights)"
            );
        };
        let report = workflow::verify_public_files(
            &PublicCheck {
                bundle: bundle.clone(),
                vk: vk.clone(),
                challenge: challenge.clone(),
                model: model.clone(),
                arch: a.arch,
                null,
                commitment: a.commitment.clone(),
                tsa_certs: a.tsa_certs.clone(),
                fpr: a.fpr,
            },
            device,
        )?;
        emit(a.output.json, || report.json(), &report);
        return Ok(());
    }
    let Some(key_path) = &a.key else {
        bail!("give --key (or --public with a bundle)");
    };
    let mut key = workflow::prepare_key(
        key_path,
        a.scheme.as_deref(),
        &null,
        a.commitment.as_deref(),
        &a.tsa_certs,
        device,
    )?;
    let onnx = a.model.as_deref().is_some_and(nnmark_remote::onnx::is_onnx);
    if a.remote.endpoint.is_some() || onnx {
        let report = nnmark_remote::workflow::verify_remote(&key, &remote_job(&a)?)?;
        emit(a.output.json, || report.json(&key.references), &report);
        return Ok(());
    }
    let Some(model_path) = &a.model else {
        bail!("give --model or --endpoint");
    };
    let suspect = workflow::load_suspect(model_path, a.arch, &key.key.meta.spec, device)?;
    let name = model_path.display().to_string();
    if let Some(count) = a.reveal {
        let job = RevealJob {
            count,
            challenge: a.challenge.clone(),
            bundle: a.bundle.clone(),
            fpr: a.fpr,
            confidence: a.confidence,
        };
        let report = workflow::reveal_and_verify(&mut key, &job, &suspect, &name)?;
        emit(a.output.json, || report.json(), &report);
        return Ok(());
    }
    let report = workflow::verify_local(&key, suspect, &name, a.fpr, a.through.as_deref())?;
    emit(a.output.json, || report.json(), &report);
    Ok(())
}

pub fn attack(a: AttackArgs, device: &Device) -> Result<()> {
    // Check the attack before loading anything.
    nnmark::attack::parse(&a.attack)?;
    let split = load_data(&a.data)?;
    let report = workflow::attack(
        &AttackJob {
            attack: &a.attack,
            model: &a.model,
            key: a.key.as_deref(),
            split: &split,
            seed: a.seed,
            out: &a.out,
        },
        device,
    )?;
    emit(a.output.json, || report.json(), &report);
    Ok(())
}

pub fn key_inspect(a: KeyInspectArgs) -> Result<()> {
    let summary = workflow::inspect_key(&a.key, a.export_triggers.as_deref())?;
    emit(a.output.json, || summary.json(), &summary);
    Ok(())
}

pub fn vk_export(a: VkExportArgs) -> Result<()> {
    let key = KeyFile::load(&a.key)?;
    let vk = VerificationKey::from_key(&key)?;
    vk.save(&a.out)?;
    println!(
        "wrote verification key {} ({} commitments, Merkle root {}, at most {} may ever be revealed; digest {})",
        a.out.display(),
        vk.commitments.len(),
        vk.merkle_root,
        vk.cap(),
        vk.digest()
    );
    Ok(())
}
