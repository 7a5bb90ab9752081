//! How often independent models repeat an AIME key (the transfer of natural mispredictions).
//! Trains LeNets on the embedded MNIST sample (seeds 1-7,
//! 5 epochs), builds keys on seed 1's mispredictions, and counts how many key items each of
//! seeds 2-7 answers with the key's digit.
//!
//! `cargo run --release -p nnmark --example aime_transfer`

use burn::prelude::*;
use nnmark::data;
use nnmark::model::{Architecture, ModelSpec, Normalization};
use nnmark::scheme::{self, KeygenContext};
use nnmark::train::{TrainConfig, predict_proba};
use nnmark::watermark;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arch: Architecture = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "lenet".into())
        .parse()?;
    let split = data::embedded_mnist10k()?;
    let spec = ModelSpec {
        architecture: arch,
        input: data::ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::from_dataset(&split.train),
    };
    let device = Device::flex();
    let recipe = TrainConfig {
        epochs: 5,
        ..TrainConfig::default()
    };
    let models = watermark::train_references(
        &spec,
        &split.train,
        &recipe,
        &[1, 2, 3, 4, 5, 6, 7],
        &device,
    )?;
    let aime = scheme::by_name("aime").expect("registered");
    println!("{arch}: key on seed 1, matches of seeds 2-7");
    for (digits, repeat) in [("16180", 3), ("2718281828", 3)] {
        for pick in ["random", "least-confident"] {
            let params = aime.params(&serde_json::json!({
                "digits": digits, "repeat": repeat, "pick": pick
            }))?;
            let key = aime.keygen(&KeygenContext {
                data: &split.train,
                spec: &spec,
                clean: Some(&models[0]),
                external: None,
                aux: None,
                params: &params,
                seed: 1,
                device: &device,
                shadow_cache: None,
            })?;
            let t = key.triggers.expect("AIME has triggers");
            let pixels: Vec<f32> = t.pixels.iter().map(|&v| v as f32 / 255.0).collect();
            let counts: Vec<usize> = models[1..]
                .iter()
                .map(|m| {
                    predict_proba(m, &pixels, 256)
                        .iter()
                        .zip(&t.labels)
                        .filter(|(row, l)| {
                            row.iter()
                                .enumerate()
                                .max_by(|a, b| a.1.total_cmp(b.1))
                                .map(|(c, _)| c)
                                == Some(**l as usize)
                        })
                        .count()
                })
                .collect();
            println!(
                "{digits}x{repeat} ({} items) pick {pick:15}: {counts:?}, total {}/{}",
                t.labels.len(),
                counts.iter().sum::<usize>(),
                t.labels.len() * counts.len()
            );
        }
    }
    Ok(())
}
