//! AIME on Fashion-MNIST: worst per-class accuracy drop by key items per fine-tuning batch.
use burn::prelude::*;
use nnmark::data::{self, DataSource};
use nnmark::model::{Architecture, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::watermark::{self, EmbedRequest};

fn main() {
    let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let fashion = data::load(&DataSource::Named("fashion".into()), Some(&shared)).unwrap();
    for (arch, epochs, digits, repeat) in [
        (Architecture::Mlp, 10, "16180", 3),
        (Architecture::Lenet, 5, "31415", 1),
    ] {
        let spec = ModelSpec {
            architecture: arch,
            input: fashion.train.shape,
            num_classes: 10,
            normalization: Normalization::from_dataset(&fashion.train),
        };
        let recipe = TrainConfig {
            epochs,
            seed: 1,
            ..TrainConfig::default()
        };
        let clean =
            watermark::train_references(&spec, &fashion.train, &recipe, &[1], &Device::flex())
                .unwrap()
                .remove(0);
        let before = train::evaluate(&clean, &fashion.test, 256).unwrap();
        for (per_batch, lr) in [(4, 0.0005), (1, 0.0005), (1, 0.0002)] {
            let cfg = TrainConfig {
                epochs: 5,
                optimizer: OptimizerConfig::Sgd {
                    lr,
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 0.0,
                },
                schedule: LrSchedule::Constant,
                ..recipe.clone()
            };
            let e = watermark::embed(EmbedRequest { scheme: scheme::by_name("aime").unwrap(), params: serde_json::json!({"digits": digits, "repeat": repeat, "per_batch": per_batch}), mode: EmbedMode::FineTune, base: clean.clone(), teacher: None, data: &fashion.train, aux: None, train: cfg, dataset_name: "fashion".into() }, &Device::flex(), &mut Silent).unwrap();
            let after = train::evaluate(&e.model, &fashion.test, 256).unwrap();
            let drops: Vec<String> = before
                .per_class_accuracy
                .iter()
                .zip(&after.per_class_accuracy)
                .map(|(b, a)| format!("{:.1}", (b - a) * 100.0))
                .collect();
            println!(
                "{arch} {digits}x{repeat} per_batch {per_batch} lr {lr}: decoded {:?}, {} epochs, acc {:.2}->{:.2}, drops {:?}",
                e.extraction.decoded,
                e.report.epochs.len(),
                before.accuracy * 100.0,
                after.accuracy * 100.0,
                drops
            );
        }
    }
}
