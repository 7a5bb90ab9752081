//! nnmark side of the benchmark: the same work as bench/pytorch_bench.py, timed the same way.
//! Prints one JSON object. Usage: nnmark-bench [--device cpu|tch-cpu|cuda]

use std::time::Instant;

use nnmark::data;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use serde_json::json;

/// Peak resident memory per row (Linux): the kernel's high-water mark (VmHWM) is reset before
/// a row and read after it, so each row reports the peak of its own work (with what the process
/// already held: the data, the allocator's pools). The PyTorch side does the same (bench/peak.py).
mod peak {
    /// Starts a row.
    pub fn reset() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    /// Peak resident set since the last reset, MiB; None where /proc is not there.
    pub fn mib() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    /// Runs a row and adds its peak to the JSON object it returns.
    pub fn measured(row: impl FnOnce() -> serde_json::Value) -> serde_json::Value {
        reset();
        let mut v = row();
        v["peak_rss_mib"] = serde_json::json!(mib());
        v
    }
}

/// Adi et al.'s embedding from scratch: LeNet, 3 epochs of the 8k sample with 2 of the 100
/// trigger images appended to every batch (the official code's recipe), same optimiser as
/// above. Writes the triggers (u8 pixels, then labels) for the PyTorch side to train on.
fn embed_adi(
    split: &data::DataSplit,
    device: &nnmark::Device,
    trigger_out: Option<&std::path::Path>,
) -> serde_json::Value {
    use nnmark::scheme::{self, EmbedMode};
    use nnmark::watermark::{self, EmbedRequest};
    let spec = ModelSpec {
        architecture: Architecture::Lenet,
        input: split.train.shape,
        num_classes: 10,
        normalization: Normalization::identity(1),
    };
    device.seed(0);
    let model = Model::new(spec, device).unwrap();
    let t = Instant::now();
    let e = watermark::embed(
        EmbedRequest {
            scheme: scheme::by_name("adi").unwrap(),
            params: json!({ "items": 100, "per_batch": 2 }),
            mode: EmbedMode::FromScratch,
            base: model,
            teacher: None,
            data: &split.train,
            aux: None,
            key_seed: 0,
            train: recipe(),
            dataset_name: "mnist10k".into(),
            shadow_cache: None,
        },
        device,
        &mut Silent,
    )
    .unwrap();
    let total = t.elapsed().as_secs_f64();
    let triggers = e.key.triggers.as_ref().unwrap();
    if let Some(path) = trigger_out {
        let mut bytes = triggers.pixels.clone();
        bytes.extend_from_slice(&triggers.labels);
        std::fs::write(path, bytes).unwrap();
    }
    let epoch_s: Vec<f64> = e.report.epochs.iter().map(|e| e.seconds).collect();
    json!({
        "total_s": total,
        "epoch_seconds": epoch_s,
        "warm_epoch_s": epoch_s[1..].iter().copied().fold(f64::INFINITY, f64::min),
        "test_accuracy": train::evaluate(&e.model, &split.test, 256).unwrap().accuracy,
        "key_match": e.extraction.match_rate(),
    })
}

/// Times one model-dependent embedding (key generation + fine-tuning or training) and writes
/// what the PyTorch side needs to repeat the same procedure: the key, and the epochs it took.
#[allow(clippy::too_many_arguments)]
fn embed_model_dependent(
    name: &str,
    params: serde_json::Value,
    mode: nnmark::scheme::EmbedMode,
    base: Model,
    split: &data::DataSplit,
    cfg: TrainConfig,
    device: &nnmark::Device,
    out: Option<&std::path::Path>,
) -> serde_json::Value {
    use nnmark::scheme;
    use nnmark::watermark::{self, EmbedRequest};
    let t = Instant::now();
    let e = watermark::embed(
        EmbedRequest {
            scheme: scheme::by_name(name).unwrap(),
            params,
            mode,
            base,
            teacher: None,
            data: &split.train,
            aux: None,
            key_seed: cfg.seed,
            train: cfg,
            dataset_name: "mnist10k".into(),
            shadow_cache: None,
        },
        device,
        &mut Silent,
    )
    .unwrap();
    let total = t.elapsed().as_secs_f64();
    let train_s: f64 = e.report.epochs.iter().map(|e| e.seconds).sum();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).unwrap();
        let t = e.key.triggers.as_ref();
        let extra: serde_json::Map<String, serde_json::Value> = e
            .key
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), json!({ "shape": v.shape, "values": v.values })))
            .collect();
        let key = json!({
            "epochs": e.report.epochs.len(),
            "params": e.key.meta.params,
            "pixels": t.map(|t| &t.pixels),
            "labels": t.map(|t| &t.labels),
            "extra": extra,
        });
        std::fs::write(dir.join(format!("{name}.json")), key.to_string()).unwrap();
    }
    json!({
        "total_s": total,
        "train_s": train_s,
        "keygen_and_checks_s": total - train_s,
        "epochs": e.report.epochs.len(),
        "test_accuracy": train::evaluate(&e.model, &split.test, 256).unwrap().accuracy,
        "key_match": e.extraction.match_rate(),
    })
}

/// Frontier stitching's ε and ℓ sweep on the MLP (nnmark only): fine-tuning epochs needed,
/// accuracy change, and how many key items an independently trained MLP gets right.
fn frontier_sweep(split: &data::DataSplit, device: &nnmark::Device) -> serde_json::Value {
    use nnmark::scheme::{self, EmbedMode, Suspect};
    use nnmark::watermark::{self, EmbedRequest};
    let spec = ModelSpec {
        architecture: Architecture::Mlp,
        input: split.train.shape,
        num_classes: 10,
        normalization: Normalization::from_dataset(&split.train),
    };
    let cfg = TrainConfig {
        epochs: 10,
        seed: 1,
        ..TrainConfig::default()
    };
    let mut models =
        watermark::train_references(&spec, &split.train, &cfg, &[1, 2], device).unwrap();
    let other = models.pop().unwrap();
    let clean = models.pop().unwrap();
    let clean_acc = train::evaluate(&clean, &split.test, 256).unwrap().accuracy;
    let fs = scheme::by_name("frontier-stitching").unwrap();
    let mut rows = Vec::new();
    for eps in [0.025f32, 0.05, 0.1, 0.25, 0.5] {
        for items in [20usize, 50, 100, 200] {
            let t = Instant::now();
            let r = watermark::embed(
                EmbedRequest {
                    scheme: fs,
                    params: json!({ "epsilon": eps, "items": items, "pool": 4000 }),
                    mode: EmbedMode::FineTune,
                    base: clean.clone(),
                    teacher: None,
                    data: &split.train,
                    aux: None,
                    key_seed: cfg.seed,
                    train: TrainConfig {
                        epochs: 10,
                        optimizer: OptimizerConfig::sgd_momentum(0.01),
                        schedule: LrSchedule::Constant,
                        ..cfg.clone()
                    },
                    dataset_name: "mnist10k".into(),
                    shadow_cache: None,
                },
                device,
                &mut Silent,
            );
            let row = match r {
                Ok(e) => {
                    let x = fs.extract(&e.key, &mut Suspect::Model(&other)).unwrap();
                    json!({
                        "epsilon": eps, "items": items, "epochs": e.report.epochs.len(),
                        "key_match": e.extraction.match_rate(),
                        "accuracy_change_pp": (train::evaluate(&e.model, &split.test, 256).unwrap().accuracy - clean_acc) * 100.0,
                        "independent_match": x.match_rate(),
                        "seconds": t.elapsed().as_secs_f64(),
                    })
                }
                Err(err) => json!({ "epsilon": eps, "items": items, "error": err.to_string() }),
            };
            rows.push(row);
        }
    }
    json!({ "clean_accuracy": clean_acc, "rows": rows })
}

/// SGD lr 0.01, momentum 0.9, batch 64, constant lr, 3 epochs, seed 0: the PyTorch script's.
fn recipe() -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        batch_size: 64,
        optimizer: OptimizerConfig::sgd_momentum(0.01),
        schedule: LrSchedule::Constant,
        early_stopping: None,
        seed: 0,
        grad_clip: None,
    }
}

const EPOCHS: usize = 3;

/// Epochs of each model in the rows of many models.
const MANY_EPOCHS: usize = 2;

/// K models of `arch` (seeds 0..K, the recipe above, MANY_EPOCHS each): wall time trained one
/// after another with `train` and together with `train_many`, whose results must be the same.
fn many(
    arch: Architecture,
    k: usize,
    split: &data::DataSplit,
    device: &nnmark::Device,
) -> serde_json::Value {
    let spec = ModelSpec {
        architecture: arch,
        input: split.train.shape,
        num_classes: 10,
        normalization: Normalization::identity(1),
    };
    let jobs = || -> Vec<(Model, TrainConfig)> {
        (0..k as u64)
            .map(|seed| {
                let cfg = TrainConfig {
                    epochs: MANY_EPOCHS,
                    seed,
                    ..recipe()
                };
                (Model::seeded(spec.clone(), seed, device).unwrap(), cfg)
            })
            .collect()
    };
    let accuracy = |models: &[Model]| -> f64 {
        models
            .iter()
            .map(|m| train::evaluate(m, &split.test, 256).unwrap().accuracy)
            .sum::<f64>()
            / models.len() as f64
    };
    peak::reset();
    let t = Instant::now();
    let alone: Vec<Model> = jobs()
        .into_iter()
        .map(|(m, cfg)| {
            train::train(m, &split.train, &cfg, device, &mut Silent)
                .unwrap()
                .0
        })
        .collect();
    let sequential_s = t.elapsed().as_secs_f64();
    let sequential_peak = peak::mib();
    peak::reset();
    let t = Instant::now();
    let together: Vec<Model> = train::train_many(jobs(), &split.train, device)
        .unwrap()
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    let together_s = t.elapsed().as_secs_f64();
    let together_peak = peak::mib();
    let (a, b) = (accuracy(&alone), accuracy(&together));
    assert_eq!(a, b, "train_many must give the models train gives");
    json!({
        "k": k, "epochs": MANY_EPOCHS, "sequential_s": sequential_s, "together_s": together_s,
        "mean_test_accuracy": a, "sequential_peak_rss_mib": sequential_peak,
        "together_peak_rss_mib": together_peak,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let device_name = args
        .iter()
        .position(|a| a == "--device")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| "cpu".into());
    let device = nnmark::device::parse_device(&device_name).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let trigger_out = args
        .iter()
        .position(|a| a == "--triggers-out")
        .map(|i| std::path::PathBuf::from(&args[i + 1]));
    let split = data::embedded_mnist10k().expect("embedded data");
    if args.iter().any(|a| a == "--frontier-sweep") {
        println!("{}", frontier_sweep(&split, &device));
        return;
    }
    let keys_out = args
        .iter()
        .position(|a| a == "--keys-out")
        .map(|i| std::path::PathBuf::from(&args[i + 1]));
    // `--train-only lenet|mlp`: just that model's training (and FGSM), for profilers.
    let train_only = args
        .iter()
        .position(|a| a == "--train-only")
        .map(|i| args[i + 1].clone());
    let mut clean = std::collections::BTreeMap::new();
    let mut results = serde_json::Map::new();
    // `--many K`: only the rows of K models trained one after another and together.
    if let Some(k) = args
        .iter()
        .position(|a| a == "--many")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
    {
        for arch in [Architecture::Lenet, Architecture::Mlp] {
            results.insert(
                format!("many_{}", arch.name()),
                many(arch, k, &split, &device),
            );
        }
        println!(
            "{}",
            json!({ "version": nnmark::VERSION, "burn": nnmark::BURN_VERSION, "device": device_name, "results": results })
        );
        return;
    }
    for arch in [Architecture::Lenet, Architecture::Mlp] {
        if train_only
            .as_deref()
            .is_some_and(|only| only != arch.name())
        {
            continue;
        }
        let spec = ModelSpec {
            architecture: arch,
            input: split.train.shape,
            num_classes: 10,
            normalization: Normalization::identity(1),
        };
        peak::reset();
        device.seed(0);
        let model = Model::new(spec, &device).unwrap();
        let cfg = recipe();
        let (model, report) =
            train::train(model, &split.train, &cfg, &device, &mut Silent).unwrap();
        let epoch_s: Vec<f64> = report.epochs.iter().map(|e| e.seconds).collect();
        // Warm epoch: the fastest after the first (the first pays allocation and warm-up).
        let warm = epoch_s[1..].iter().copied().fold(f64::INFINITY, f64::min);
        let acc = train::evaluate(&model, &split.test, 256).unwrap().accuracy;
        let mut entry =
            json!({ "epoch_seconds": epoch_s, "warm_epoch_s": warm, "test_accuracy": acc });
        if arch == Architecture::Lenet {
            let test = &split.test;
            let _ = train::input_gradients(
                &model,
                &test.pixels()[..64 * 784],
                &test.labels()[..64],
                64,
            )
            .unwrap();
            let t = Instant::now();
            let g = train::input_gradients(&model, test.pixels(), test.labels(), 64).unwrap();
            let fgsm_s = t.elapsed().as_secs_f64();
            assert_eq!(g.len(), test.pixels().len());
            entry["fgsm_2000_s"] = json!(fgsm_s);
        }
        entry["peak_rss_mib"] = json!(peak::mib());
        results.insert(arch.name().to_string(), entry);
        clean.insert(arch.name(), model);
    }
    if train_only.is_some() {
        println!("{}", serde_json::Value::Object(results));
        return;
    }
    use nnmark::scheme::EmbedMode;
    let fine_tune = |epochs| TrainConfig { epochs, ..recipe() };
    // The three model-dependent schemes, each from its paper's starting point.
    results.insert(
        "embed_frontier".into(),
        peak::measured(|| {
            embed_model_dependent(
                "frontier-stitching",
                json!({ "epsilon": 0.1 }),
                EmbedMode::FineTune,
                clean["mlp"].clone(),
                &split,
                fine_tune(10),
                &device,
                keys_out.as_deref(),
            )
        }),
    );
    results.insert(
        "embed_aime".into(),
        peak::measured(|| {
            embed_model_dependent(
                "aime",
                json!({ "digits": "2718281828" }),
                EmbedMode::FineTune,
                clean["lenet"].clone(),
                &split,
                fine_tune(5),
                &device,
                keys_out.as_deref(),
            )
        }),
    );
    let lenet_spec = clean["lenet"].spec.clone();
    results.insert(
        "embed_uchida".into(),
        peak::measured(|| {
            device.seed(0);
            embed_model_dependent(
                "uchida",
                json!({}),
                EmbedMode::FromScratch,
                Model::new(lenet_spec, &device).unwrap(),
                &split,
                recipe(),
                &device,
                keys_out.as_deref(),
            )
        }),
    );
    results.insert(
        "embed_adi".into(),
        peak::measured(|| embed_adi(&split, &device, trigger_out.as_deref())),
    );
    println!(
        "{}",
        json!({ "tool": "nnmark", "version": nnmark::VERSION, "burn": nnmark::BURN_VERSION, "device": device_name, "results": results })
    );
}
