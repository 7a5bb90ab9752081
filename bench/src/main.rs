//! nnmark side of the benchmark: the same work as bench/pytorch_bench.py, timed the same way.
//! Prints one JSON object. Usage: nnmark-bench [--device cpu|tch-cpu|cuda]

use std::time::Instant;

use nnmark::data;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use serde_json::json;

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
        // Same recipe as the PyTorch script: SGD lr 0.01, momentum 0.9, batch 64, constant lr.
        let cfg = TrainConfig {
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
        };
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
    println!(
        "{}",
        json!({ "tool": "nnmark", "version": nnmark::VERSION, "burn": nnmark::BURN_VERSION, "device": device_name, "results": results })
    );
}
