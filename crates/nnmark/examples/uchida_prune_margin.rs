//! Uchida by fine-tuning LeNet: bits read after magnitude pruning, by fine-tuning length and λ.
use burn::prelude::*;
use nnmark::data::{self, ImageShape};
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::watermark::{self, EmbedRequest};

fn main() {
    let mnist = data::embedded_mnist10k().unwrap();
    let spec = ModelSpec {
        architecture: Architecture::Lenet,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::from_dataset(&mnist.train),
    };
    let base = TrainConfig {
        epochs: 5,
        seed: 1,
        ..TrainConfig::default()
    };
    let clean = watermark::train_references(&spec, &mnist.train, &base, &[1], &Device::flex())
        .unwrap()
        .remove(0);
    let acc = |m: &Model| train::evaluate(m, &mnist.test, 256).unwrap().accuracy;
    let s = scheme::by_name("uchida").unwrap();
    for (epochs, lambda) in [(5, 0.01), (10, 0.01), (5, 0.05)] {
        let cfg = TrainConfig {
            epochs,
            optimizer: OptimizerConfig::sgd_momentum(0.01),
            schedule: LrSchedule::Constant,
            ..base.clone()
        };
        let t = std::time::Instant::now();
        let e = watermark::embed(
            EmbedRequest {
                scheme: s,
                params: serde_json::json!({ "lambda": lambda }),
                mode: EmbedMode::FineTune,
                base: clean.clone(),
                teacher: None,
                data: &mnist.train,
                aux: None,
                key_seed: cfg.seed,
                train: cfg,
                dataset_name: "mnist10k".into(),
                shadow_cache: None,
            },
            &Device::flex(),
            &mut Silent,
        )
        .unwrap();
        let mut line = format!(
            "epochs {epochs} λ {lambda}: {}/{} bits, acc {:.2}% -> {:.2}% ({:.0}s); pruned",
            e.extraction.matches,
            e.extraction.queries,
            acc(&clean) * 100.0,
            acc(&e.model) * 100.0,
            t.elapsed().as_secs_f64()
        );
        for rate in [0.3, 0.5, 0.6, 0.65, 0.7, 0.8] {
            let p = nnmark::attack::prune_magnitude(
                e.model.clone(),
                rate,
                nnmark::attack::PruneScope::Layer,
            )
            .unwrap();
            let x = s.extract(&e.key, &mut Suspect::Model(&p)).unwrap();
            line += &format!(" {rate}:{}", x.matches);
        }
        println!("{line}");
    }
}
