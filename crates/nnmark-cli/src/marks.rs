//! `embed`, `verify`, `key inspect` and `vk export`: argument handling around
//! `nnmark::watermark`, `nnmark::keyfile` and `nnmark::commit`.

use anyhow::{Context, Result, bail};
use nnmark::Device;
use std::path::{Path, PathBuf};

use nnmark::commit::{CommitmentReport, KeyCommitment, RevealBundle, VerificationKey};
use nnmark::data;
use nnmark::keyfile::KeyFile;
use nnmark::model::{Model, ModelSpec, Normalization};
use nnmark::public::{PublicRequest, PublicVerification};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::verdict::{NullModel, Verdict};
use nnmark::watermark::{self, EmbedRequest};
use nnmark::weights;
use serde_json::json;

use crate::args::{EmbedArgs, KeyInspectArgs, VerifyArgs, VkExportArgs, default_commitment_path};
use crate::{load_data, observer, versions};

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
    let dataset_name = a.data.source()?.label();
    let mode = if a.from_scratch {
        EmbedMode::FromScratch
    } else if a.distill {
        EmbedMode::Distillation
    } else {
        EmbedMode::FineTune
    };
    let loaded = match &a.model {
        Some(path) => Some(weights::load(path, None, device)?.model),
        None => None,
    };
    let arch: nnmark::model::Architecture = match (&loaded, mode) {
        (Some(m), EmbedMode::FineTune) => m.spec.architecture,
        _ => a.arch.parse()?,
    };
    let cfg = a.train.config(mode == EmbedMode::FineTune)?.fitted_to(arch);
    cfg.validate()?;
    let (base, teacher) = match (mode, loaded) {
        (EmbedMode::FineTune, Some(m)) => (m, None),
        (_, teacher) => {
            device.seed(cfg.seed);
            let fresh = Model::new(
                ModelSpec {
                    architecture: arch,
                    input: split.train.shape,
                    num_classes: split.train.num_classes,
                    normalization: Normalization::from_dataset(&split.train),
                },
                device,
            )?;
            (fresh, teacher)
        }
    };
    let aux = if a.scheme == "zhang-unrelated" {
        let name = a
            .unrelated_data
            .clone()
            .unwrap_or_else(|| data::unrelated_default(&dataset_name).to_string());
        Some(
            data::load(
                &data::DataSource::Named(name.clone()),
                a.data.data_dir.as_deref(),
            )
            .with_context(|| format!("loading unrelated data '{name}'"))?
            .train,
        )
    } else {
        None
    };
    let mut obs = observer(&a.output);
    let e = watermark::embed(
        EmbedRequest {
            scheme,
            params,
            mode,
            base,
            teacher,
            data: &split.train,
            aux: aux.as_ref(),
            train: cfg.clone(),
            dataset_name,
        },
        device,
        obs.as_mut(),
    )?;
    let eval = nnmark::train::evaluate(&e.model, &split.test, 256)?;
    let margin = a
        .margin
        .unwrap_or_else(|| watermark::default_margin(e.extraction.queries));
    let proof = watermark::provability(&e.key, scheme, &e.extraction, a.fpr, margin)?;
    if !proof.provable {
        let advice = format!(
            "the marked model matches {}/{} key items but proving ownership at fpr {:e} takes {} (threshold {} + margin {}); train longer (--epochs), put more key items in each batch (--param per_batch=N), use a longer key, or another scheme",
            proof.matches,
            proof.queries,
            proof.fpr,
            proof.threshold + proof.margin,
            proof.threshold,
            proof.margin
        );
        if !a.allow_unprovable {
            bail!("{advice}; nothing was written (--allow-unprovable writes it anyway)");
        }
        tracing::warn!("{advice}; writing it anyway (--allow-unprovable)");
    }
    // The key first: a model without its key would be unprovable, a key without its model is
    // only a wasted file.
    e.key.save(&a.key)?;
    nnmark::io::write_atomic(&a.out, &e.model_bytes, None)?;
    let commitment_path = a
        .commitment
        .clone()
        .unwrap_or_else(|| default_commitment_path(&a.key));
    e.commitment.save(&commitment_path)?;
    let fingerprint = e.key.fingerprint()?;
    if a.output.json {
        println!(
            "{}",
            json!({
                "versions": versions(), "seed": cfg.seed, "scheme": scheme.name(),
                "mode": mode.name(), "params": e.key.meta.params, "config": cfg,
                "epochs": e.report.epochs, "test_accuracy": eval.accuracy,
                "key_match_rate": e.extraction.match_rate(),
                "clean_key_match_rate": e.clean_extraction.as_ref().map(|c| c.match_rate()),
                "out": a.out, "model_sha256": e.key.meta.model_sha256,
                "key": a.key, "key_fingerprint": fingerprint,
                "commitment": commitment_path, "commitment_value": e.commitment.commitment,
                "provability": proof,
            })
        );
    } else {
        if let Some(c) = &e.clean_extraction {
            println!(
                "clean model matched {:.1}% of the key before embedding",
                c.match_rate() * 100.0
            );
        }
        println!(
            "{} ({}): marked model matches {}/{} key items, test accuracy {:.2}% ({} epochs, seed {})",
            scheme.name(),
            mode.name(),
            e.extraction.matches,
            e.extraction.queries,
            eval.accuracy * 100.0,
            e.report.epochs.len(),
            cfg.seed
        );
        println!(
            "{} at fpr {:e}: {} matches against a threshold of {} (margin {} asked), p = {:.3e}",
            if proof.provable {
                "provable"
            } else {
                "NOT PROVABLE"
            },
            proof.fpr,
            proof.matches,
            proof.threshold,
            proof.margin,
            proof.p_value
        );
        println!(
            "wrote {} (sha256 {})",
            a.out.display(),
            e.key.meta.model_sha256
        );
        println!(
            "wrote key {} (mode 0600, fingerprint {fingerprint}); keep it secret",
            a.key.display()
        );
        println!(
            "wrote key commitment {} ({}); publish it and timestamp it before the model ships: nnmark timestamp request --commitment {}",
            commitment_path.display(),
            e.commitment.commitment,
            commitment_path.display()
        );
    }
    Ok(())
}

fn load_suspect(
    path: &std::path::Path,
    arch: Option<&str>,
    spec_from: &ModelSpec,
    device: &Device,
) -> Result<Model> {
    let spec = match arch {
        Some(arch) => Some(ModelSpec {
            architecture: arch.parse()?,
            input: spec_from.input,
            num_classes: spec_from.num_classes,
            normalization: Normalization::identity(spec_from.input.channels),
        }),
        None => None,
    };
    Ok(weights::load(path, spec.as_ref(), device)?.model)
}

pub(crate) fn print_verdict(v: &Verdict, suspect: &str) {
    let null = match &v.null {
        NullModel::Chance { classes } => format!("chance 1/{classes}"),
        NullModel::FairCoin => "fair coin".into(),
        NullModel::Calibrated {
            references,
            confidence,
            ..
        } => format!(
            "calibrated on {} reference models: worst one's {:.0}% upper bound, at least the analytic rate",
            references.len(),
            confidence * 100.0
        ),
    };
    println!(
        "{suspect}: {}/{} key items match ({:.1}%, 95% CI {:.1}-{:.1}%)",
        v.matches,
        v.queries,
        v.match_rate * 100.0,
        v.match_rate_ci95.0 * 100.0,
        v.match_rate_ci95.1 * 100.0
    );
    if let Some(r) = &v.reveal {
        println!(
            "counted as {} trials: {} revealed + {} skipped as spent (misses); {} items spent by {} earlier reveals, cap {} of {}; tail x{} for the reveal length the owner chose",
            r.counted,
            r.revealed,
            r.skipped_spent,
            r.spent,
            r.earlier_reveals,
            r.reveal_cap,
            r.key_items,
            r.multiplicity
        );
    }
    println!(
        "null match rate {:.4} ({null}); p-value {:.3e}; threshold at fpr {:e}: {} matches",
        v.null_rate, v.p_value, v.fpr, v.threshold
    );
    println!(
        "verdict: {}",
        if v.watermarked {
            "WATERMARKED (ownership shown)"
        } else {
            "not shown to carry the watermark"
        }
    );
}

pub(crate) fn load_tsa_certs(paths: &[PathBuf]) -> Result<Vec<nnmark_tsp::Certificate>> {
    let mut certs = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        certs.extend(
            nnmark_tsp::load_certificates(&bytes).with_context(|| format!("{}", p.display()))?,
        );
    }
    Ok(certs)
}

/// The key's public commitment, checked against what the verifier holds: the one named, else
/// the one beside the key when it exists.
pub(crate) fn check_commitment(
    explicit: Option<&Path>,
    beside_key: Option<&Path>,
    key: Option<&KeyFile>,
    vk: Option<&VerificationKey>,
    tsa_certs: &[PathBuf],
) -> Result<Option<(KeyCommitment, CommitmentReport)>> {
    let path = match (explicit, beside_key) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(k)) if default_commitment_path(k).exists() => default_commitment_path(k),
        _ if !tsa_certs.is_empty() => {
            bail!("--tsa-cert checks a key commitment: give --commitment")
        }
        _ => return Ok(None),
    };
    let c = KeyCommitment::load(&path)?;
    let report = c
        .check(key, vk, &load_tsa_certs(tsa_certs)?)
        .with_context(|| format!("checking key commitment {}", path.display()))?;
    Ok(Some((c, report)))
}

pub(crate) fn print_commitment(c: Option<&(KeyCommitment, CommitmentReport)>) {
    match c {
        Some((_, r)) => println!("key commitment: {}", r.summary()),
        None => println!(
            "key commitment: none checked (give --commitment; `nnmark key commit` writes one): nothing shows when this key was made"
        ),
    }
}

pub fn verify(a: VerifyArgs, device: &Device) -> Result<()> {
    if let Some(bundle_path) = &a.public {
        return verify_public(&a, bundle_path, device);
    }
    let key_path = a
        .key
        .as_ref()
        .expect("clap requires --key without --public");
    let mut key = KeyFile::load(key_path)?;
    let scheme = watermark::scheme_for_key(&key, a.scheme.as_deref())?;
    let commitment = check_commitment(
        a.commitment.as_deref(),
        Some(key_path),
        Some(&key),
        None,
        &a.tsa_certs,
    )?;
    let mut reference_rates = Vec::new();
    if a.null != "calibrated" && (!a.reference.is_empty() || !a.reference_seeds.is_empty()) {
        bail!("--reference and --reference-seeds calibrate the null: add --null calibrated");
    }
    let null = match a.null.as_str() {
        "chance" | "analytic" => scheme.analytic_null(&key),
        "calibrated" => {
            let mut refs = if a.reference.is_empty() && !a.reference_seeds.is_empty() {
                Vec::new()
            } else {
                watermark::load_references(&a.reference, device)?
            };
            if !a.reference_seeds.is_empty() {
                let split = data::load(
                    &data::DataSource::Named(key.meta.dataset.clone()),
                    a.data_dir.as_deref(),
                )
                .with_context(|| {
                    format!(
                        "loading the key's data set '{}' to train reference models",
                        key.meta.dataset
                    )
                })?;
                let cfg = nnmark::train::TrainConfig {
                    epochs: a.reference_epochs,
                    ..Default::default()
                };
                let models = watermark::train_references(
                    &key.meta.spec,
                    &split.train,
                    &cfg,
                    &a.reference_seeds,
                    device,
                )?;
                refs.extend(
                    a.reference_seeds
                        .iter()
                        .zip(models)
                        .map(|(s, m)| (format!("{} seed {s}", key.meta.spec.architecture), m)),
                );
            }
            let null = watermark::calibrate(
                &key,
                scheme,
                refs.iter().map(|(n, m)| (n.clone(), Suspect::Model(m))),
                a.confidence,
            )?;
            if let NullModel::Calibrated {
                matches,
                queries,
                references,
                ..
            } = &null
            {
                for ((n, k), q) in references.iter().zip(matches).zip(queries) {
                    reference_rates.push(json!({"reference": n, "matches": k, "queries": q}));
                }
            }
            null
        }
        other => bail!("invalid --null '{other}': expected chance or calibrated"),
    };
    let onnx = a
        .model
        .as_deref()
        .is_some_and(nnmark_remote::protocol::is_onnx);
    if a.remote.endpoint.is_some() || onnx {
        return crate::remote::verify(
            &a,
            &key,
            scheme,
            null,
            &reference_rates,
            commitment.as_ref(),
        );
    }
    let model_path = a
        .model
        .as_ref()
        .expect("clap requires --model without --endpoint");
    let suspect = load_suspect(model_path, a.arch.as_deref(), &key.meta.spec, device)?;
    let suspect_name = model_path.display().to_string();
    if let Some(count) = a.reveal {
        let challenge = match &a.challenge {
            Some(c) => c.clone(),
            None => nnmark::commit::random_challenge()?,
        };
        let bundle = nnmark::commit::reveal(&mut key, count, &challenge)?;
        // Spend first: if publishing fails afterwards the items are wasted, never reused.
        key.save(key_path)?;
        bundle.save(&a.bundle)?;
        let vk = VerificationKey::from_key(&key)?;
        let public = nnmark::public::verify_public(
            &PublicRequest {
                bundle: &bundle,
                bundle_path: &a.bundle,
                vk: &vk,
                challenge: &challenge,
                fpr: a.fpr,
                confidence: a.confidence,
            },
            &suspect_name,
            &mut Suspect::Model(&suspect),
            std::iter::empty(),
        )?;
        report_public(&a, &public, &suspect_name, commitment.as_ref());
        if !a.output.json {
            println!(
                "revealed {count} items (challenge '{challenge}') into {}; they are now spent in {}",
                a.bundle.display(),
                key_path.display()
            );
        }
        return Ok(());
    }
    let v =
        match &a.through {
            None => watermark::verify(
                &key,
                scheme,
                &mut Suspect::Model(&suspect),
                &suspect_name,
                null,
                a.fpr,
            )?,
            Some(filter) => {
                // The suspect as a thief serves it: behind a query-time input filter, answering
                // labels only.
                let transform = nnmark::attack::parse(filter)?.query_transform().ok_or_else(|| {
                anyhow::anyhow!(
                    "--through '{filter}' is not a query filter (blur, noise, pixel-quantize)"
                )
            })?;
                let mut local =
                    nnmark::oracle::LocalOracle::new(suspect, nnmark::oracle::Reveal::Label);
                let mut filtered = nnmark::attack::TransformedOracle::new(&mut local, transform);
                watermark::verify(
                    &key,
                    scheme,
                    &mut Suspect::Oracle(&mut filtered),
                    &format!("{suspect_name} through {filter}"),
                    null,
                    a.fpr,
                )?
            }
        };
    report(
        &a,
        &v.verdict,
        &v.suspect,
        &v.key_fingerprint,
        &reference_rates,
        v.message.as_ref(),
        commitment.as_ref(),
    )
}

fn verify_public(a: &VerifyArgs, bundle_path: &Path, device: &Device) -> Result<()> {
    let (Some(vk_path), Some(challenge)) = (&a.vk, &a.challenge) else {
        bail!(
            "--public needs --vk (the verification key the owner published before the dispute) and --challenge (the one you issued)"
        );
    };
    let vk = VerificationKey::load(vk_path)?;
    let bundle = RevealBundle::load(bundle_path)?;
    let commitment =
        check_commitment(a.commitment.as_deref(), None, None, Some(&vk), &a.tsa_certs)?;
    let spec = ModelSpec {
        architecture: nnmark::model::Architecture::Lenet,
        input: vk.input,
        num_classes: vk.num_classes,
        normalization: Normalization::identity(vk.input.channels),
    };
    let Some(model_path) = a.model.as_ref() else {
        bail!("--public needs --model: the suspect's weights");
    };
    let suspect = load_suspect(model_path, a.arch.as_deref(), &spec, device)?;
    let references = match a.null.as_str() {
        "chance" | "analytic" if a.reference.is_empty() => Vec::new(),
        "calibrated" if !a.reference.is_empty() => {
            watermark::load_references(&a.reference, device)?
        }
        "calibrated" => bail!("--null calibrated for --public needs --reference: models you chose"),
        other => bail!(
            "invalid --null '{other}' with --reference for --public: use --null calibrated --reference MODELS"
        ),
    };
    let suspect_name = model_path.display().to_string();
    let public = nnmark::public::verify_public(
        &PublicRequest {
            bundle: &bundle,
            bundle_path,
            vk: &vk,
            challenge,
            fpr: a.fpr,
            confidence: a.confidence,
        },
        &suspect_name,
        &mut Suspect::Model(&suspect),
        references
            .iter()
            .map(|(n, m)| (n.clone(), Suspect::Model(m))),
    )?;
    report_public(a, &public, &suspect_name, commitment.as_ref());
    Ok(())
}

fn report_public(
    a: &VerifyArgs,
    p: &PublicVerification,
    suspect: &str,
    commitment: Option<&(KeyCommitment, CommitmentReport)>,
) {
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "public": true, "bundle": a.public.as_ref().unwrap_or(&a.bundle),
                   "suspect": suspect, "vk_root": p.vk_root, "vk_digest": p.vk_digest,
                   "challenge": p.challenge, "earlier_challenges": p.earlier_challenges,
                   "openings_verified": p.opened.len(), "references": p.references,
                   "key_commitment": commitment.map(|(_, r)| r), "verdict": p.verdict})
        );
        return;
    }
    println!(
        "{} openings match the commitments of verification key {} (challenge '{}' selects exactly these items{})",
        p.opened.len(),
        p.vk_root,
        p.challenge,
        if p.earlier_challenges.is_empty() {
            String::new()
        } else {
            format!(
                ", skipping the items of {} earlier reveals the bundle proves: {:?}",
                p.earlier_challenges.len(),
                p.earlier_challenges
            )
        }
    );
    for r in &p.references {
        println!(
            "reference {}: {}/{} opened items match",
            r.name, r.matches, r.queries
        );
    }
    print_commitment(commitment);
    print_verdict(&p.verdict, suspect);
}

fn report(
    a: &VerifyArgs,
    v: &Verdict,
    suspect: &str,
    key_fingerprint: &str,
    reference_rates: &[serde_json::Value],
    message: Option<&nnmark::watermark::MessageCheck>,
    commitment: Option<&(KeyCommitment, CommitmentReport)>,
) -> Result<()> {
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "suspect": suspect, "key_fingerprint": key_fingerprint,
                   "references": reference_rates, "key_commitment": commitment.map(|(_, r)| r),
                   "verdict": v, "message": message})
        );
    } else {
        if let Some(m) = message {
            println!(
                "message: expected {:?}, read {:?} ({}); an unmarked model would produce it with probability {:.3e}",
                m.expected,
                m.decoded,
                if m.exact { "exact" } else { "differs" },
                m.chance
            );
        }
        for r in reference_rates {
            println!(
                "reference {}: {}/{} key items match",
                r["reference"].as_str().unwrap_or("?"),
                r["matches"],
                r["queries"]
            );
        }
        print_commitment(commitment);
        print_verdict(v, suspect);
    }
    Ok(())
}

pub fn key_inspect(a: KeyInspectArgs) -> Result<()> {
    let key = KeyFile::load(&a.key)?;
    let m = &key.meta;
    let items = key.triggers.as_ref().map_or(0, |t| t.len());
    if let (Some(dir), Some(t)) = (&a.export_triggers, &key.triggers) {
        nnmark::data::folder::write_pngs(dir, t)?;
    }
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "key": a.key, "fingerprint": key.fingerprint()?,
                   "scheme": m.scheme, "params": m.params, "format_version": m.version,
                   "architecture": m.spec.architecture, "input": m.spec.input,
                   "classes": m.spec.num_classes, "model_sha256": m.model_sha256,
                   "dataset": m.dataset, "embed_mode": m.embed_mode, "seed": m.seed,
                   "nnmark_version": m.nnmark_version, "created": m.created,
                   "trigger_items": items, "spent": m.spent.len(), "reveals": m.reveals,
                   "commitment": KeyCommitment::for_key(&key).ok().map(|c| c.commitment),
                   "commitments": key.nonces.is_some(), "notes": m.notes})
        );
    } else {
        println!(
            "key {} (format v{}, integrity ok)",
            a.key.display(),
            m.version
        );
        println!("  scheme        {} {}", m.scheme, m.params);
        println!(
            "  model         {} {} -> {} classes, sha256 {}",
            m.spec.architecture, m.spec.input, m.spec.num_classes, m.model_sha256
        );
        println!(
            "  made          {} on {}, seed {}, nnmark {}, {}",
            m.embed_mode, m.dataset, m.seed, m.nnmark_version, m.created
        );
        println!(
            "  trigger items {items} ({} spent in {} public reveals){}",
            m.spent.len(),
            m.reveals.len(),
            if key.nonces.is_some() {
                ", with commitments"
            } else {
                ""
            }
        );
        println!(
            "  commitment    {}",
            match KeyCommitment::for_key(&key) {
                Ok(c) => c.commitment,
                Err(_) => "none yet (`nnmark key commit` adds one)".into(),
            }
        );
        for (k, v) in &m.notes {
            if k != "train_config" {
                println!("  {k:13} {v}");
            }
        }
        match &a.export_triggers {
            Some(dir) => println!("  wrote trigger images to {}", dir.display()),
            None => println!("  (trigger contents not shown; --export-triggers DIR writes them)"),
        }
    }
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
