//! What frontier stitching's default (random-label) key costs in accuracy, seed by seed: clean
//! models of `ARCH` (default mlp; irnn takes gradient clipping 1) on the embedded MNIST sample,
//! fine-tuned with the key as the test `frontier_stitching_mlp_and_irnn` does (constant lr 0.01,
//! stopping once the key is learnt), accuracy before and after. The test bounds seed 1's drop
//! by what this prints.
//!
//! `cargo run --release -p nnmark --example frontier_accuracy_spread -- mlp 1 2 3 4 5`
use burn::prelude::*;
use nnmark::data::{self, ImageShape};
use nnmark::model::{Architecture, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::watermark::{self, EmbedRequest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let arch: Architecture = args.next().unwrap_or_else(|| "mlp".into()).parse()?;
    let mut seeds: Vec<u64> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        seeds = vec![1, 2, 3];
    }
    let mnist = data::embedded_mnist10k()?;
    let spec = ModelSpec {
        architecture: arch,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::from_dataset(&mnist.train),
    };
    let device = Device::flex();
    let irnn = arch == Architecture::Irnn;
    let recipe = |seed: u64| TrainConfig {
        epochs: if irnn { 5 } else { 10 },
        seed,
        grad_clip: irnn.then_some(1.0),
        ..TrainConfig::default()
    };
    let fs = scheme::by_name("frontier-stitching")?;
    println!("{arch} seed  clean  marked  drop(pp)  epochs");
    for seed in seeds {
        let clean =
            watermark::train_references(&spec, &mnist.train, &recipe(seed), &[seed], &device)?
                .remove(0);
        let e = watermark::embed(
            EmbedRequest {
                scheme: fs,
                params: serde_json::Value::Null,
                mode: EmbedMode::FineTune,
                base: clean.clone(),
                teacher: None,
                data: &mnist.train,
                aux: None,
                key_seed: seed,
                train: TrainConfig {
                    epochs: if irnn { 20 } else { 10 },
                    optimizer: OptimizerConfig::sgd_momentum(0.01),
                    schedule: LrSchedule::Constant,
                    ..recipe(seed)
                },
                dataset_name: "mnist10k".into(),
                shadow_cache: None,
            },
            &device,
            &mut Silent,
        )?;
        let a = train::evaluate(&clean, &mnist.test, 256)?.accuracy;
        let b = train::evaluate(&e.model, &mnist.test, 256)?.accuracy;
        println!(
            "{seed:>9}  {:.2}%  {:.2}%  {:+.2}     {} ({}/{} key items)",
            a * 100.0,
            b * 100.0,
            (a - b) * 100.0,
            e.report.epochs.len(),
            e.extraction.matches,
            e.extraction.queries
        );
    }
    Ok(())
}
