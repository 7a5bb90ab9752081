//! `embed`, `verify`, `key inspect` and `vk export`: argument handling around
//! `nnmark::watermark`, `nnmark::keyfile` and `nnmark::commit`.

use anyhow::{Context, Result, bail};
use nnmark::Device;
use nnmark::commit::{RevealBundle, VerificationKey};
use nnmark::data;
use nnmark::keyfile::KeyFile;
use nnmark::model::{Model, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::verdict::{NullModel, Verdict};
use nnmark::watermark::{self, EmbedRequest};
use nnmark::weights;
use serde_json::json;

use crate::args::{EmbedArgs, KeyInspectArgs, VerifyArgs, VkExportArgs};
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
    // The key first: a model without its key would be unprovable, a key without its model is
    // only a wasted file.
    e.key.save(&a.key)?;
    weights::write_atomic(&a.out, &e.model_bytes, None)?;
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
            "wrote {} (sha256 {})",
            a.out.display(),
            e.key.meta.model_sha256
        );
        println!(
            "wrote key {} (mode 0600, fingerprint {fingerprint}); keep it secret",
            a.key.display()
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
        return crate::remote::verify(&a, &key, scheme, null, &reference_rates);
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
        let opened = bundle.open(&VerificationKey::from_key(&key)?, &a.bundle)?;
        let v = public_verdict(&opened, &suspect, &a, &key_null_for_public(&null, &opened))?;
        report(
            &a,
            &v,
            &suspect_name,
            &key.fingerprint()?,
            &reference_rates,
            Some(&bundle),
            None,
        )?;
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
        None,
        v.message.as_ref(),
    )
}

/// The null for a public check: chance over the classes, unless the owner calibrated.
fn key_null_for_public(null: &NullModel, opened: &nnmark::TriggerSet) -> NullModel {
    match null {
        NullModel::Calibrated { .. } => null.clone(),
        _ => NullModel::Chance {
            classes: opened.num_classes,
        },
    }
}

fn public_verdict(
    opened: &nnmark::TriggerSet,
    suspect: &Model,
    a: &VerifyArgs,
    null: &NullModel,
) -> Result<Verdict> {
    let n = opened.len();
    let answers = nnmark::train::predict(
        suspect,
        &opened.query_pixels(&(0..n).collect::<Vec<_>>()),
        256,
    );
    let matches = answers
        .iter()
        .zip(&opened.labels)
        .filter(|&(&a, &l)| a == l as usize)
        .count();
    Ok(Verdict::decide(
        matches as u64,
        n as u64,
        null.clone(),
        a.fpr,
    )?)
}

fn verify_public(a: &VerifyArgs, bundle_path: &std::path::Path, device: &Device) -> Result<()> {
    let Some(vk_path) = &a.vk else {
        bail!("--public needs --vk: the verification key the owner published before the dispute");
    };
    let vk = VerificationKey::load(vk_path)?;
    let bundle = RevealBundle::load(bundle_path)?;
    let opened = bundle.open(&vk, bundle_path)?;
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
    if suspect.spec.input != vk.input || suspect.spec.num_classes != vk.num_classes {
        bail!(
            "suspect {} takes {} inputs with {} classes; the verification key is for {} inputs with {} classes",
            model_path.display(),
            suspect.spec.input,
            suspect.spec.num_classes,
            vk.input,
            vk.num_classes
        );
    }
    let null = match a.null.as_str() {
        "chance" | "analytic" => NullModel::Chance {
            classes: vk.num_classes,
        },
        other => bail!(
            "invalid --null '{other}' for --public: a public check uses the chance null over the revealed items"
        ),
    };
    let v = public_verdict(&opened, &suspect, a, &null)?;
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "public": true, "bundle": bundle_path, "vk_root": vk.merkle_root,
                   "challenge": bundle.challenge, "openings_verified": opened.len(), "suspect": model_path, "verdict": v})
        );
    } else {
        println!(
            "{} openings match the commitments of verification key {} (challenge '{}' selects exactly these items)",
            opened.len(),
            vk.merkle_root,
            bundle.challenge
        );
        print_verdict(&v, &model_path.display().to_string());
    }
    Ok(())
}

fn report(
    a: &VerifyArgs,
    v: &Verdict,
    suspect: &str,
    key_fingerprint: &str,
    reference_rates: &[serde_json::Value],
    bundle: Option<&RevealBundle>,
    message: Option<&nnmark::watermark::MessageCheck>,
) -> Result<()> {
    if a.output.json {
        println!(
            "{}",
            json!({"versions": versions(), "suspect": suspect, "key_fingerprint": key_fingerprint,
                   "references": reference_rates, "revealed": bundle.map(|b| b.items.len()),
                   "bundle": bundle.map(|_| &a.bundle), "verdict": v, "message": message})
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
                   "trigger_items": items, "spent": m.spent.len(),
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
            "  trigger items {items} ({} spent){}",
            m.spent.len(),
            if key.nonces.is_some() {
                ", with commitments"
            } else {
                ""
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
        "wrote verification key {} ({} commitments, Merkle root {})",
        a.out.display(),
        vk.commitments.len(),
        vk.merkle_root
    );
    Ok(())
}
