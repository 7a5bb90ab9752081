//! AIME on Fashion-MNIST, the six configurations of the acceptance test (MLP and LeNet;
//! 31415, 2718281828, 16180 ×3), under fine-tuning variants given as arguments
//! `ANCHOR:PER_BATCH:LR` (anchor `labels` or `clean-model`), e.g.
//!
//! `cargo run --release -p nnmark --example aime_fashion -- labels:4:0.0005 clean-model:4:0.0005`
//!
//! Prints, per configuration and variant: whether the signature decodes, the per-class accuracy
//! drops on the 10,000 test images, the key items read after 20% layer-wise magnitude pruning,
//! and how many key items two independent models (seeds 2, 3) answer with the signature.
//!
//! With `--attack=SPEC` (e.g. `--attack=ftal:epochs=1,lr=0.005`) the models are trained and
//! marked on the owner's two thirds of the training data, the attack runs on the attacker's
//! third (nnmark's fixed split), and the key items the attacked model still answers are printed.
use burn::prelude::*;
use nnmark::attack::{PruneScope, prune_magnitude};
use nnmark::data::{self, DataSource};
use nnmark::model::{Architecture, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::watermark::{self, EmbedRequest};

fn main() {
    let attack = std::env::args()
        .find_map(|a| a.strip_prefix("--attack=").map(str::to_string))
        .map(|spec| nnmark::attack::parse(&spec).unwrap());
    let variants: Vec<(String, usize, f64)> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--attack="))
        .map(|a| {
            let f: Vec<&str> = a.split(':').collect();
            assert_eq!(f.len(), 3, "variant {a:?}: expected ANCHOR:PER_BATCH:LR");
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(
        !variants.is_empty(),
        "give at least one ANCHOR:PER_BATCH:LR"
    );
    let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let mut fashion = data::load(&DataSource::Named("fashion".into()), Some(&shared)).unwrap();
    let (owner, thief) = nnmark::attack::owner_attacker_split(&fashion.train).unwrap();
    if attack.is_some() {
        fashion.train = owner;
    }
    for (arch, epochs) in [(Architecture::Mlp, 10), (Architecture::Lenet, 5)] {
        let spec = ModelSpec {
            architecture: arch,
            input: fashion.train.shape,
            num_classes: 10,
            normalization: Normalization::from_dataset(&fashion.train),
        };
        let recipe = TrainConfig {
            epochs,
            ..TrainConfig::default()
        };
        let ms = watermark::train_references(
            &spec,
            &fashion.train,
            &recipe,
            &[1, 2, 3],
            &Device::flex(),
        )
        .unwrap();
        let before = train::evaluate(&ms[0], &fashion.test, 256).unwrap();
        for (digits, repeat) in [("31415", 1), ("2718281828", 1), ("16180", 3)] {
            for (anchor, per_batch, lr) in &variants {
                let cfg = TrainConfig {
                    epochs: 5,
                    optimizer: OptimizerConfig::sgd_momentum(*lr),
                    schedule: LrSchedule::Constant,
                    ..recipe.clone()
                };
                let params = serde_json::json!({
                    "digits": digits, "repeat": repeat, "per_batch": per_batch, "anchor": anchor
                });
                let e = watermark::embed(
                    EmbedRequest {
                        scheme: scheme::by_name("aime").unwrap(),
                        params,
                        mode: EmbedMode::FineTune,
                        base: ms[0].clone(),
                        teacher: None,
                        data: &fashion.train,
                        aux: None,
                        key_seed: cfg.seed,
                        train: cfg,
                        dataset_name: "fashion".into(),
                        shadow_cache: None,
                    },
                    &Device::flex(),
                    &mut Silent,
                )
                .unwrap();
                let after = train::evaluate(&e.model, &fashion.test, 256).unwrap();
                let drops: Vec<String> = before
                    .per_class_accuracy
                    .iter()
                    .zip(&after.per_class_accuracy)
                    .map(|(b, a)| format!("{:.1}", (b - a) * 100.0))
                    .collect();
                let aime = scheme::by_name("aime").unwrap();
                let pruned = prune_magnitude(e.model.clone(), 0.2, PruneScope::Layer).unwrap();
                let xp = aime.extract(&e.key, &mut Suspect::Model(&pruned)).unwrap();
                let others: Vec<u64> = ms[1..]
                    .iter()
                    .map(|m| {
                        aime.extract(&e.key, &mut Suspect::Model(m))
                            .unwrap()
                            .matches
                    })
                    .collect();
                let attacked = attack.as_ref().map(|a| {
                    let ctx = nnmark::attack::AttackContext {
                        data: Some(&thief),
                        device: &Device::flex(),
                        seed: 1,
                        key_items: None,
                        scheme: None,
                    };
                    let m = a.remove(e.model.clone(), &ctx).unwrap();
                    let x = aime.extract(&e.key, &mut Suspect::Model(&m)).unwrap();
                    let acc = train::evaluate(&m, &fashion.test, 256).unwrap().accuracy;
                    format!(
                        ", after {}: {}/{} {:?} at {:.2}%",
                        a.describe(),
                        x.matches,
                        x.queries,
                        x.decoded,
                        acc * 100.0
                    )
                });
                println!(
                    "{arch} {digits}x{repeat} {anchor} per_batch {per_batch} lr {lr}: decoded {:?}, {} steps, acc {:.2}->{:.2}, drops {drops:?}, pruned 20% {}/{} {:?}, independents {others:?}{}",
                    e.extraction.decoded,
                    e.report.steps,
                    before.accuracy * 100.0,
                    after.accuracy * 100.0,
                    xp.matches,
                    xp.queries,
                    xp.decoded,
                    attacked.unwrap_or_default(),
                );
            }
        }
    }
}
