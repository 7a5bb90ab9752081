//! What Uchida's regulariser costs in accuracy, against the spread between seeds: for LeNet
//! seeds 1-5 on the embedded MNIST sample (5 epochs), the accuracy of the mark from scratch
//! against the clean model of the same seed, and of a student distilled from seed 1's clean
//! model with the mark against one distilled the same way without it. The test
//! `uchida_in_three_situations` bounds one seed's drop by what this prints.
//!
//! `cargo run --release -p nnmark --example uchida_accuracy_spread`
use burn::prelude::*;
use nnmark::data::{self, ImageShape};
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode};
use nnmark::train::{self, Silent, TrainConfig};
use nnmark::watermark::{self, EmbedRequest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mnist = data::embedded_mnist10k()?;
    let spec = ModelSpec {
        architecture: Architecture::Lenet,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::from_dataset(&mnist.train),
    };
    let device = Device::flex();
    let recipe = |seed: u64| TrainConfig {
        epochs: 5,
        seed,
        ..TrainConfig::default()
    };
    let seeds = [1u64, 2, 3, 4, 5];
    let acc = |m: &Model| train::evaluate(m, &mnist.test, 256).map(|e| e.accuracy);
    let fresh = |seed: u64| {
        device.seed(seed);
        Model::new(spec.clone(), &device)
    };
    let uchida = scheme::by_name("uchida")?;
    let embed = |mode: EmbedMode, base: Model, teacher: Option<Model>, seed: u64| {
        watermark::embed(
            EmbedRequest {
                scheme: uchida,
                params: serde_json::Value::Null,
                mode,
                base,
                teacher,
                data: &mnist.train,
                aux: None,
                key_seed: seed,
                train: recipe(seed),
                dataset_name: "mnist10k".into(),
                shadow_cache: None,
            },
            &device,
            &mut Silent,
        )
    };
    let teacher =
        watermark::train_references(&spec, &mnist.train, &recipe(1), &[1], &device)?.remove(0);
    let labels: Vec<u8> = train::predict(&teacher, mnist.train.pixels(), 256)
        .into_iter()
        .map(|l| l as u8)
        .collect();
    let distill_data = mnist.train.relabeled("teacher", labels)?;
    println!("seed  clean  scratch-marked  drop(pp)  distilled  distilled-marked  drop(pp)");
    for &seed in &seeds {
        let clean =
            watermark::train_references(&spec, &mnist.train, &recipe(seed), &[seed], &device)?
                .remove(0);
        let scratch = embed(EmbedMode::FromScratch, fresh(seed)?, None, seed)?;
        let (student, _) = train::train(
            fresh(seed)?,
            &distill_data,
            &recipe(seed),
            &device,
            &mut Silent,
        )?;
        let distilled = embed(
            EmbedMode::Distillation,
            fresh(seed)?,
            Some(teacher.clone()),
            seed,
        )?;
        let (a, b, c, d) = (
            acc(&clean)?,
            acc(&scratch.model)?,
            acc(&student)?,
            acc(&distilled.model)?,
        );
        println!(
            "{seed:>4}  {:.2}%  {:.2}%          {:+.2}     {:.2}%     {:.2}%            {:+.2}",
            a * 100.0,
            b * 100.0,
            (a - b) * 100.0,
            c * 100.0,
            d * 100.0,
            (c - d) * 100.0
        );
    }
    Ok(())
}
