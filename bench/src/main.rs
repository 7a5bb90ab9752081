//! nnmark side of the benchmark: the same work as bench/pytorch_bench.py, timed the same way.
//! Prints one JSON object. Usage: nnmark-bench [--device cpu|tch-cpu|cuda]

use std::time::Instant;

use nnmark::data;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use serde_json::json;

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
            data: &split.train,
            aux: None,
            train: recipe(),
            dataset_name: "mnist10k".into(),
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

/// SGD lr 0.01, momentum 0.9, batch 64, constant lr, 3 epochs, seed 0: the PyTorch script's.
fn recipe() -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        batch_size: 64,
        optimizer: OptimizerConfig::Sgd {
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule: LrSchedule::Constant,
        early_stopping: None,
        seed: 0,
    }
}

const EPOCHS: usize = 3;

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
    let mut results = serde_json::Map::new();
    for arch in [Architecture::Lenet, Architecture::Mlp] {
        let spec = ModelSpec {
            architecture: arch,
            input: split.train.shape,
            num_classes: 10,
            normalization: Normalization::identity(1),
        };
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
        results.insert(arch.name().to_string(), entry);
    }
    results.insert(
        "embed_adi".into(),
        embed_adi(&split, &device, trigger_out.as_deref()),
    );
    println!(
        "{}",
        json!({ "tool": "nnmark", "version": nnmark::VERSION, "burn": nnmark::BURN_VERSION, "device": device_name, "results": results })
    );
}
