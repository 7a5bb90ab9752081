//! Frontier stitching, AIME and Uchida end to end on the embedded MNIST sample (8,000 train /
//! 2,000 test). The slower parts of the acceptance criteria (mnist_cnn with independent models,
//! Fashion-MNIST, the ResNet) are in `acceptance_model_dependent.rs`, ignored in CI.

use std::sync::OnceLock;

use burn::prelude::*;
use nnmark::data::{self, DataSplit, ImageShape};
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::verdict::{NullModel, Verdict};
use nnmark::watermark::{self, EmbedRequest};

/// One shadow cache for the file: selection shadows are trained once, not per embedding.
fn shadow_cache() -> &'static std::path::Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn mnist() -> &'static DataSplit {
    static D: OnceLock<DataSplit> = OnceLock::new();
    D.get_or_init(|| data::embedded_mnist10k().unwrap())
}

fn spec(arch: Architecture) -> ModelSpec {
    ModelSpec {
        architecture: arch,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::from_dataset(&mnist().train),
    }
}

fn recipe(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        seed,
        ..TrainConfig::default()
    }
}

fn fine_tune(epochs: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        optimizer: OptimizerConfig::sgd_momentum(lr),
        schedule: LrSchedule::Constant,
        ..recipe(epochs, 1)
    }
}

fn trained(arch: Architecture, epochs: usize, seeds: &[u64]) -> Vec<Model> {
    watermark::train_references(
        &spec(arch),
        &mnist().train,
        &TrainConfig {
            grad_clip: (arch == Architecture::Irnn).then_some(1.0),
            ..recipe(epochs, 1)
        },
        seeds,
        &Device::flex(),
    )
    .unwrap()
}

fn accuracy(m: &Model) -> f64 {
    train::evaluate(m, &mnist().test, 256).unwrap().accuracy
}

fn embed(
    name: &str,
    params: serde_json::Value,
    mode: EmbedMode,
    base: Model,
    teacher: Option<Model>,
    cfg: TrainConfig,
) -> watermark::Embedded {
    let e = watermark::embed(
        EmbedRequest {
            scheme: scheme::by_name(name).unwrap(),
            params,
            mode,
            base,
            teacher,
            data: &mnist().train,
            aux: None,
            key_seed: cfg.seed,
            train: cfg,
            dataset_name: "mnist10k".into(),
            shadow_cache: Some(shadow_cache().to_path_buf()),
        },
        &Device::flex(),
        &mut Silent,
    )
    .unwrap();
    // Every scheme's key comes with its public commitment.
    assert!(e.commitment.matches_key(&e.key).unwrap(), "{name}");
    assert_eq!(e.commitment.scheme, name);
    e
}

/// The error message of an embedding that must fail.
fn embed_error(
    name: &str,
    params: serde_json::Value,
    mode: EmbedMode,
    base: Model,
    cfg: TrainConfig,
) -> String {
    watermark::embed(
        EmbedRequest {
            scheme: scheme::by_name(name).unwrap(),
            params,
            mode,
            base,
            teacher: None,
            data: &mnist().train,
            aux: None,
            key_seed: cfg.seed,
            train: cfg,
            dataset_name: "mnist10k".into(),
            shadow_cache: Some(shadow_cache().to_path_buf()),
        },
        &Device::flex(),
        &mut Silent,
    )
    .err()
    .expect("the embedding must fail")
    .to_string()
}

fn scheme(name: &str) -> &'static dyn scheme::Scheme {
    scheme::by_name(name).unwrap()
}

fn matches(name: &str, key: &nnmark::keyfile::KeyFile, m: &Model) -> scheme::Extraction {
    scheme(name).extract(key, &mut Suspect::Model(m)).unwrap()
}

/// Frontier stitching on the MLP and the IRNN with nnmark's default random labels: 0 errors on
/// the key after embedding, accuracy within 1.5 pp, the key's exact null (1/9), the marked model
/// accused at 1e-6 and ten independently trained models of the family not accused. With the
/// paper's labels (`labels=source`, MLP) the fair coin is not a bound (independent models
/// match most items), and a null calibrated on five references keeps five others unaccused.
#[test]
fn frontier_stitching_mlp_and_irnn() {
    for (arch, epochs) in [(Architecture::Mlp, 10), (Architecture::Irnn, 5)] {
        let models = trained(arch, epochs, &(1..=11).collect::<Vec<_>>());
        let clean = models[0].clone();
        let cfg = TrainConfig {
            grad_clip: (arch == Architecture::Irnn).then_some(1.0),
            // The embedding stops as soon as the key is learnt: MLPs of seeds 1-5 took 3-4
            // epochs, IRNNs of seeds 1-3 took 11-16, so each budget leaves room.
            ..fine_tune(if arch == Architecture::Irnn { 20 } else { 10 }, 0.01)
        };
        let e = embed(
            "frontier-stitching",
            serde_json::Value::Null,
            EmbedMode::FineTune,
            clean.clone(),
            None,
            cfg.clone(),
        );
        let (acc0, acc1) = (accuracy(&clean), accuracy(&e.model));
        assert_eq!(e.extraction.queries, 100);
        assert_eq!(e.extraction.matches, 100, "{arch}: errors on its own key");
        // The FGSM step was searched (the MLP keeps too few inputs correct at 0.25) and is
        // recorded in the key.
        let eps = e.key.meta.params["epsilon"].as_f64().unwrap();
        assert!(eps > 0.0 && eps <= 0.5, "{arch}: epsilon {eps}");
        assert!(e.report.target_reached);
        // Random labels cost more than the paper's. The bound comes from the spread over
        // seeds, not one run: drops of 0.20-1.00 pp on MLPs of seeds 1-5 and -1.50 to +0.20 pp
        // on IRNNs of seeds 1-3, whose clean accuracies span 2.45 pp
        // (`cargo run --release -p nnmark --example frontier_accuracy_spread -- mlp 1 2 3 4 5`,
        // BENCHMARKS.md).
        assert!(
            acc0 - acc1 <= 0.02,
            "{arch}: accuracy {acc0:.4} -> {acc1:.4}"
        );
        // Random labels: the null is exact.
        let fs = scheme("frontier-stitching");
        assert!(fs.null_is_exact(&e.key));
        let null = watermark::key_null(&e.key, fs).unwrap();
        assert_eq!(null, NullModel::UniformOther { classes: 10 });
        let marked = watermark::verify(
            &e.key,
            fs,
            &mut Suspect::Model(&e.model),
            "marked",
            null.clone(),
            1e-6,
        )
        .unwrap();
        assert!(marked.verdict.watermarked, "{arch}: {:?}", marked.verdict);
        let mut independent = Vec::new();
        for m in &models[1..] {
            let x = matches("frontier-stitching", &e.key, m);
            let v = Verdict::decide(x.matches, x.queries, null.clone(), 1e-6).unwrap();
            assert!(!v.watermarked, "{arch}: independent model accused: {v:?}");
            independent.push(x.matches);
        }
        eprintln!(
            "{arch}, random labels: {} fine-tuning epochs, accuracy {:.2}% -> {:.2}%, marked p = {:.3e}; independent models' matches: {independent:?} (threshold {})",
            e.report.epochs.len(),
            acc0 * 100.0,
            acc1 * 100.0,
            marked.verdict.p_value,
            marked.verdict.threshold
        );
        if arch != Architecture::Mlp {
            continue;
        }
        let e = embed(
            "frontier-stitching",
            serde_json::json!({"labels": "source"}),
            EmbedMode::FineTune,
            clean.clone(),
            None,
            cfg,
        );
        assert!(!fs.null_is_exact(&e.key));
        // Without shadows or references such a key has no default null.
        let err = watermark::key_null(&e.key, fs).unwrap_err().to_string();
        assert!(err.contains("records no shadow models"), "{err}");
        let references = models[1..6]
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("seed {}", i + 2), Suspect::Model(m)));
        let null = watermark::calibrate(&e.key, fs, references, 0.99).unwrap();
        let mut fair_accused = 0;
        for m in &models[6..] {
            let x = matches("frontier-stitching", &e.key, m);
            let v = Verdict::decide(x.matches, x.queries, null.clone(), 0.05).unwrap();
            assert!(!v.watermarked, "{arch}: independent model accused: {v:?}");
            fair_accused += usize::from(
                Verdict::decide(x.matches, x.queries, NullModel::FairCoin, 0.05)
                    .unwrap()
                    .watermarked,
            );
        }
        eprintln!(
            "{arch}, the paper's labels: calibrated p0 = {:.3}; the fair coin at 0.05 accuses {fair_accused} of 5 independent models",
            null.rate().unwrap()
        );
    }
}

#[test]
fn frontier_stitching_rejects_bad_settings() {
    let s = scheme("frontier-stitching");
    for eps in [0.0, -0.1, 1.5] {
        let err = s
            .params(&serde_json::json!({ "epsilon": eps }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("epsilon") && err.contains("(0, 1]"), "{err}");
    }
    assert!(s.params(&serde_json::json!({ "items": 99 })).is_err());
    let clean = trained(Architecture::Mlp, 2, &[1]).remove(0);
    // A tiny step flips almost nothing: the key cannot get 50 true adversaries.
    let err = embed_error(
        "frontier-stitching",
        serde_json::json!({ "epsilon": 0.001, "pool": 200 }),
        EmbedMode::FineTune,
        clean,
        fine_tune(1, 0.01),
    );
    assert!(
        err.contains("true") && err.contains("raise epsilon"),
        "{err}"
    );
    // From scratch there is no frontier to stitch.
    let fresh = Model::seeded(spec(Architecture::Mlp), 1, &Device::flex()).unwrap();
    let err = embed_error(
        "frontier-stitching",
        serde_json::Value::Null,
        EmbedMode::FromScratch,
        fresh,
        recipe(1, 1),
    );
    assert!(err.contains("fine-tuning"), "{err}");
}

fn worst_class_drop(before: &Model, after: &Model) -> f64 {
    let b = train::evaluate(before, &mnist().test, 256).unwrap();
    let a = train::evaluate(after, &mnist().test, 256).unwrap();
    b.per_class_accuracy
        .iter()
        .zip(&a.per_class_accuracy)
        .map(|(x, y)| x - y)
        .fold(f64::MIN, f64::max)
}

/// AIME on LeNet and the MLP with 5- and 10-digit signatures: exact decoding, per-class
/// accuracy within 2 pp (plus one test image), independent models neither decode the signature
/// nor get accused under AIME's fair-coin null; with the repetition code the signature survives
/// 20% magnitude pruning. (Under the 1/10 chance null an independent LeNet matching 7 of the
/// 15-item key was accused on the CI machine: natural mispredictions transfer, see
/// `scheme/aime.rs`.)
#[test]
fn aime_signatures_decode_and_survive_pruning() {
    for (arch, epochs) in [(Architecture::Lenet, 5), (Architecture::Mlp, 10)] {
        let models = trained(arch, epochs, &[1, 2, 3]);
        for (digits, repeat) in [("31415", 1), ("2718281828", 1), ("16180", 3)] {
            let e = embed(
                "aime",
                serde_json::json!({ "digits": digits, "repeat": repeat }),
                EmbedMode::FineTune,
                models[0].clone(),
                None,
                fine_tune(5, 0.002),
            );
            assert_eq!(e.extraction.decoded.as_deref(), Some(digits), "{arch}");
            assert_eq!(e.extraction.queries as usize, digits.len() * repeat);
            // About 200 test images per class here, so one image is 0.5 pp, and the same run
            // on another CPU ends a few images apart. With AIME's default anchored fine-tuning
            // and screened keys the worst class lost 0.5-1.5 pp (LeNet) and 1.0-2.0 pp (MLP)
            // here (2026-11-30), so the bound is the paper's 2 pp plus one test image; the
            // acceptance test checks Fashion-MNIST's 1,000 test images per class.
            let drop = worst_class_drop(&models[0], &e.model);
            assert!(
                drop <= 0.025 + 1e-9,
                "{arch} {digits}: a class lost {:.2} pp",
                drop * 100.0
            );
            let null = scheme("aime").analytic_null(&e.key);
            assert_eq!(null, NullModel::FairCoin);
            let v = watermark::verify(
                &e.key,
                scheme("aime"),
                &mut Suspect::Model(&e.model),
                "marked",
                null.clone(),
                1e-3,
            )
            .unwrap();
            let msg = v.message.clone().unwrap();
            // Each digit (by majority of its copies) is a fair coin under the null.
            let chance = 0.5f64.powi(digits.len() as i32);
            assert!(
                msg.exact && (msg.chance - chance).abs() <= chance * 1e-9,
                "{msg:?}"
            );
            // A full match is decisive at 1e-3 only when 2^-items < 1e-3: 10 items or more.
            let items = digits.len() * repeat;
            assert_eq!(v.verdict.matches as usize, items);
            assert_eq!(v.verdict.watermarked, items >= 10, "{v:?}");
            let strongest = e.key.meta.notes["strongest_p_value"].as_f64().unwrap();
            assert!((strongest - 0.5f64.powi(items as i32)).abs() < 1e-12);
            let (mut shared, mut asked) = (0, 0);
            for m in &models[1..] {
                let x = matches("aime", &e.key, m);
                assert_ne!(
                    x.decoded.as_deref(),
                    Some(digits),
                    "{arch}: independent model"
                );
                let v = Verdict::decide(x.matches, x.queries, null.clone(), 1e-3).unwrap();
                assert!(!v.watermarked, "{arch} {digits}: independent accused {v:?}");
                shared += x.matches;
                asked += x.queries;
            }
            // The fair-coin null is AIME's floor: independent models, taken together, must
            // not reach it on their natural mispredictions (measured: a third or less).
            assert!(
                2 * shared <= asked,
                "{arch} {digits}: independent models matched {shared} of {asked} items"
            );
            if repeat > 1 {
                let pruned = nnmark::attack::prune_magnitude(
                    e.model.clone(),
                    0.2,
                    nnmark::attack::PruneScope::Layer,
                )
                .unwrap();
                let x = matches("aime", &e.key, &pruned);
                assert_eq!(
                    x.decoded.as_deref(),
                    Some(digits),
                    "{arch}: after 20% pruning"
                );
            }
            eprintln!(
                "{arch} aime {digits} x{repeat}: {} epochs, worst class drop {:.2} pp, chance of the signature {:.1e}",
                e.report.epochs.len(),
                drop * 100.0,
                msg.chance
            );
        }
    }
}

/// AIME's selection shadows: key items are mispredictions the selection shadows do not share,
/// so independent models (trained here with seeds of their own, neither selection nor
/// calibration shadows) match fewer of them than of an unscreened key's. Measured here on
/// the CI machine's LeNets: see the printed totals.
#[test]
fn aime_screening_avoids_mispredictions_independent_models_share() {
    let models = trained(Architecture::Lenet, 5, &[1, 2, 3, 4, 5]);
    let s = scheme("aime");
    let keygen = |screen: usize| {
        let params = s.params(&serde_json::json!({ "screen": screen })).unwrap();
        s.keygen(&scheme::KeygenContext {
            data: &mnist().train,
            spec: &spec(Architecture::Lenet),
            clean: Some(&models[0]),
            external: None,
            aux: None,
            params: &params,
            seed: 11,
            device: &Device::flex(),
            shadow_cache: Some(shadow_cache()),
        })
        .unwrap()
    };
    let total = |material: &scheme::KeyMaterial| -> usize {
        let t = material.triggers.as_ref().unwrap();
        let pixels: Vec<f32> = t.pixels.iter().map(|&p| p as f32 / 255.0).collect();
        models[1..]
            .iter()
            .map(|m| {
                train::predict(m, &pixels, 256)
                    .iter()
                    .zip(&t.labels)
                    .filter(|(a, b)| **a == **b as usize)
                    .count()
            })
            .sum::<usize>()
    };
    let (plain, screened) = (keygen(0), keygen(3));
    assert_eq!(
        plain.triggers.as_ref().unwrap().labels,
        screened.triggers.as_ref().unwrap().labels,
        "the same signature digits"
    );
    let (a, b) = (total(&plain), total(&screened));
    let items = plain.triggers.as_ref().unwrap().labels.len() * (models.len() - 1);
    eprintln!("four independent LeNets matched {a} of {items} unscreened key items, {b} screened");
    assert!(b < a, "screening did not help: {b} vs {a} of {items}");
    // Why AIME is never judged against chance: independent models repeat its natural
    // mispredictions far more often than 1 in 10 (measured 48 of 216 unscreened; a chance
    // count, Binomial(216, 0.1), stays at or below 32 with probability 0.99).
    assert!(
        a as f64 > 0.15 * items as f64,
        "independent models matched only {a} of {items}: the chance null would hold here"
    );
}

/// AIME's default key on an MLP: other MLPs share its few training mispredictions, so three
/// copies of the signature leave no full match provable at 1e-6 under the key's shadows, and
/// `embed` grows the repetition code until the marked model proves its key.
#[test]
fn aime_on_an_mlp_grows_its_default_key_until_provable() {
    let clean = trained(Architecture::Mlp, 5, &[1]).remove(0);
    let mut job = nnmark::workflow::EmbedJob::new(
        scheme("aime"),
        nnmark::workflow::Start::FineTune(clean),
        mnist(),
        "mnist10k",
    );
    job.shadows.cache = Some(shadow_cache().to_path_buf());
    job.key_seed = Some(1);
    let report = nnmark::workflow::embed(job, &Device::flex(), &mut Silent).unwrap();
    let repeat = report.embedded.key.meta.params["repeat"].as_u64().unwrap();
    let p = &report.provability;
    eprintln!(
        "aime on the mlp: repeat {repeat}, {}/{} matching, threshold {} + margin {}, null rate {:.3}",
        p.matches, p.queries, p.threshold, p.margin, p.null_rate
    );
    assert!(p.provable && p.matches >= p.threshold + p.margin, "{p:?}");
    assert!(repeat > 3, "three copies were enough here: {p:?}");
    assert_eq!(
        p.queries,
        18 * repeat,
        "the default signature has 18 digits"
    );
}

/// AIME signatures as text: 3-digit ASCII codes by default, the paper's 2-digit "FCIS".
#[test]
fn aime_text_signature_and_bad_inputs() {
    let s = scheme("aime");
    let err = s
        .params(&serde_json::json!({ "signature": "Zoë" }))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not printable ASCII") && err.contains("'ë'"),
        "{err}"
    );
    assert!(s.params(&serde_json::json!({ "repeat": 2 })).is_err());
    assert!(s.params(&serde_json::json!({ "digits": "12a" })).is_err());
    let clean = trained(Architecture::Lenet, 5, &[1]).remove(0);
    let e = embed(
        "aime",
        // The paper's key: each digit once (nnmark's default repeats it 3 times).
        serde_json::json!({ "signature": "FCIS", "width": 2, "repeat": 1 }),
        EmbedMode::FineTune,
        clean,
        None,
        fine_tune(5, 0.002),
    );
    assert_eq!(
        e.key.trigger_set().unwrap().labels,
        vec![7, 0, 6, 7, 7, 3, 8, 3]
    );
    assert_eq!(e.extraction.decoded.as_deref(), Some("FCIS"));
}

fn uchida_embed(mode: EmbedMode, params: serde_json::Value) -> (watermark::Embedded, Model) {
    let clean = trained(Architecture::Lenet, 5, &[1]).remove(0);
    let fresh = || Model::seeded(spec(Architecture::Lenet), 1, &Device::flex()).unwrap();
    let (base, teacher, cfg) = match mode {
        // 10 epochs: after 5, one of the 75 bits sat so close to 0 that 50% pruning flipped it
        // (`cargo run --release -p nnmark --example uchida_prune_margin`; BENCHMARKS.md).
        EmbedMode::FineTune => (clean.clone(), None, fine_tune(10, 0.01)),
        EmbedMode::FromScratch => (fresh(), None, recipe(5, 1)),
        EmbedMode::Distillation => (fresh(), Some(clean.clone()), recipe(5, 1)),
    };
    // The unmarked counterpart of each situation: the clean model, or a student distilled
    // the same way without the regulariser.
    let baseline = match mode {
        EmbedMode::Distillation => {
            let labels = train::predict(&clean, mnist().train.pixels(), 256)
                .into_iter()
                .map(|l| l as u8)
                .collect();
            let data = mnist().train.relabeled("teacher", labels).unwrap();
            train::train(fresh(), &data, &recipe(5, 1), &Device::flex(), &mut Silent)
                .unwrap()
                .0
        }
        _ => clean,
    };
    (embed("uchida", params, mode, base, teacher, cfg), baseline)
}

/// Uchida on LeNet's second convolution in the paper's three situations: BER 0, accuracy within
/// 1 pp of the unmarked counterpart, BER 0 after 50% pruning; unmarked models read ≈ 0.5.
///
/// The accuracy bound comes from the measured spread, not from one run: over LeNet seeds 1-5
/// the marked model's accuracy differed from its unmarked counterpart's by -0.30 to +0.50 pp
/// from scratch and 0.00 to +0.15 pp distilled, and unmarked LeNets of different seeds span
/// 0.6 pp (`cargo run --release -p nnmark --example uchida_accuracy_spread`, BENCHMARKS.md).
/// A bound at the largest drop seen would fail on another machine's rounding.
#[test]
fn uchida_in_three_situations() {
    let unmarked = trained(Architecture::Lenet, 5, &[2, 3]);
    for mode in [
        EmbedMode::FromScratch,
        EmbedMode::FineTune,
        EmbedMode::Distillation,
    ] {
        let (e, baseline) = uchida_embed(mode, serde_json::Value::Null);
        let p = &e.key.meta.params;
        assert_eq!(p["layer"], "conv2");
        assert_eq!(p["bits"], 75);
        assert_eq!(
            e.extraction.matches, e.extraction.queries,
            "{mode:?}: BER > 0"
        );
        let (a0, a1) = (accuracy(&baseline), accuracy(&e.model));
        assert!(a0 - a1 <= 0.01, "{mode:?}: accuracy {a0:.4} -> {a1:.4}");
        let pruned = nnmark::attack::prune_magnitude(
            e.model.clone(),
            0.5,
            nnmark::attack::PruneScope::Layer,
        )
        .unwrap();
        let xp = matches("uchida", &e.key, &pruned);
        assert_eq!(xp.matches, xp.queries, "{mode:?}: BER after 50% pruning");
        let v = watermark::verify(
            &e.key,
            scheme("uchida"),
            &mut Suspect::Model(&e.model),
            "marked",
            NullModel::FairCoin,
            1e-6,
        )
        .unwrap();
        assert!(v.verdict.watermarked && v.verdict.p_value < 1e-20);
        let mut bers = Vec::new();
        for m in &unmarked {
            let x = matches("uchida", &e.key, m);
            let ber = 1.0 - x.match_rate();
            assert!((0.3..=0.7).contains(&ber), "{mode:?}: unmarked BER {ber}");
            let v = Verdict::decide(x.matches, x.queries, NullModel::FairCoin, 1e-6).unwrap();
            assert!(!v.watermarked);
            bers.push(ber);
        }
        eprintln!(
            "uchida {mode:?}: {} bits, accuracy {:.2}% -> {:.2}%, BER 0 after 50% pruning, unmarked BER {bers:?}",
            e.extraction.queries,
            a0 * 100.0,
            a1 * 100.0
        );
    }
}

/// The owner-derived matrix: verification regenerates X from SHA-256(owner ‖ seed) and refuses
/// a key whose X was replaced (what an ambiguity attacker would have to do); the scheme needs
/// weights, not a query interface; bad layers and bit counts are clear errors.
#[test]
fn uchida_owner_derived_key_and_bad_inputs() {
    let (e, _) = uchida_embed(
        EmbedMode::FineTune,
        serde_json::json!({ "owner": "alice@example.org", "bits": 64, "message": "nnmark" }),
    );
    assert_eq!(e.extraction.matches, 64);
    assert_eq!(e.extraction.decoded.as_deref(), Some("nnmark"));
    let s = scheme("uchida");
    let v = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Model(&e.model),
        "marked",
        NullModel::FairCoin,
        1e-6,
    )
    .unwrap();
    assert!(v.message.as_ref().unwrap().exact);
    // Replace X by a matrix fitted to the model: refused.
    let mut forged = e.key.clone();
    let x = forged.extra.get_mut("x").unwrap();
    x.values[0] += 1.0;
    let bytes = forged.to_bytes().unwrap();
    let forged =
        nnmark::keyfile::KeyFile::from_bytes(std::path::Path::new("forged"), &bytes).unwrap();
    let err = s
        .extract(&forged, &mut Suspect::Model(&e.model))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHA-256(owner"), "{err}");
    // White-box only.
    let mut oracle =
        nnmark::oracle::LocalOracle::new(e.model.clone(), nnmark::oracle::Reveal::Label);
    let err = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Oracle(&mut oracle),
        "endpoint",
        NullModel::FairCoin,
        1e-6,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("white-box"), "{err}");
    // Bad inputs.
    let clean = trained(Architecture::Lenet, 5, &[1]).remove(0);
    for (params, needle) in [
        (serde_json::json!({ "layer": "conv9" }), "conv1, conv2"),
        (serde_json::json!({ "bits": 151 }), "exceeds M = 150"),
    ] {
        let err = embed_error(
            "uchida",
            params,
            EmbedMode::FineTune,
            clean.clone(),
            fine_tune(1, 0.01),
        );
        assert!(err.contains(needle), "{err}");
    }
    assert!(s.params(&serde_json::json!({ "lambda": 0 })).is_err());
    let mlp = Model::new(spec(Architecture::Mlp), &Device::flex()).unwrap();
    assert!(
        mlp.net
            .conv_weight("conv2")
            .unwrap_err()
            .to_string()
            .contains("no convolution")
    );
}

/// nnmark's own model seen through [`ExternalModel`], with its exact gradients: what a
/// PyTorch user's autograd callable gives.
struct Exact<'a>(std::sync::Mutex<&'a Model>);

impl nnmark::external::ExternalModel for Exact<'_> {
    fn predict(&self, pixels: &[f32]) -> nnmark::Result<Vec<usize>> {
        Ok(train::predict(&self.0.lock().unwrap(), pixels, 256))
    }

    fn loss_input_gradient(&self, pixels: &[f32], labels: &[u8]) -> nnmark::Result<Vec<f32>> {
        train::input_gradients(&self.0.lock().unwrap(), pixels, labels, 256)
    }
}

/// Frontier stitching for a model trained outside nnmark: given exact gradients the key is
/// the one nnmark makes for its own model; from scores alone (finite differences, as for an
/// ONNX file) the gradient signs agree with the exact ones and the key keeps its defining
/// property (half the items flipped by the clean model, half not), with an exact null.
#[test]
fn frontier_keys_for_outside_models() {
    use nnmark::external::{ExternalModel, ScoresModel};
    let clean = trained(Architecture::Mlp, 3, &[1]).remove(0);
    let s = scheme("frontier-stitching");
    let params = s.params(&serde_json::Value::Null).unwrap();
    let own = s
        .keygen(&scheme::KeygenContext {
            data: &mnist().train,
            spec: &spec(Architecture::Mlp),
            clean: Some(&clean),
            external: None,
            aux: None,
            params: &params,
            seed: 5,
            device: &Device::flex(),
            shadow_cache: None,
        })
        .unwrap();
    let external_key = |model: &dyn ExternalModel| {
        watermark::external_key(
            watermark::ExternalKeyRequest {
                scheme: s,
                params: serde_json::Value::Null,
                input: ImageShape::MNIST,
                num_classes: 10,
                data: Some(&mnist().train),
                aux: None,
                model: Some(model),
                dataset_name: "mnist10k".into(),
                seed: 5,
            },
            &Device::flex(),
        )
        .unwrap()
    };
    let exact = Exact(std::sync::Mutex::new(&clean));
    let k = external_key(&exact);
    let t = k.triggers.as_ref().unwrap();
    let o = own.triggers.as_ref().unwrap();
    assert_eq!((&t.pixels, &t.labels), (&o.pixels, &o.labels));
    assert!(s.null_is_exact(&k));

    // Scores only: logits of the same model, differentiated numerically.
    let logits = |px: &[f32]| -> nnmark::Result<Vec<f32>> {
        let m = exact.0.lock().unwrap();
        let x = train::images_tensor(px.to_vec(), ImageShape::MNIST, &Device::flex());
        Ok(m.forward(x).into_data().try_into_vec::<f32>().unwrap())
    };
    let fd = ScoresModel::new(&logits, ImageShape::MNIST, 10);
    let px = &mnist().train.pixels()[..20 * 784];
    let labels = &mnist().train.labels()[..20];
    let g_exact = exact.loss_input_gradient(px, labels).unwrap();
    let g_fd = fd.loss_input_gradient(px, labels).unwrap();
    let (mut same, mut counted) = (0, 0);
    for (a, b) in g_exact.iter().zip(&g_fd) {
        // Pixels whose exact gradient is tiny may round either way.
        if a.abs() > 1e-4 {
            counted += 1;
            same += usize::from(a.signum() == b.signum());
        }
    }
    let agreement = same as f64 / counted as f64;
    eprintln!("finite differences: {same}/{counted} gradient signs agree ({agreement:.4})");
    assert!(agreement > 0.97, "{agreement}");
    let k = external_key(&fd);
    let t = k.triggers.as_ref().unwrap();
    let is_true = &k.extra["true_adversary"].values;
    let pixels: Vec<f32> = t.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let preds = train::predict(&clean, &pixels, 256);
    // A true adversary is one the clean model misclassifies (its source class is not stored,
    // but a false one is still classified as its source, which its random label is not).
    let trues = is_true.iter().filter(|&&v| v == 1.0).count();
    assert_eq!((trues, t.len()), (50, 100));
    let false_items_kept_label = preds
        .iter()
        .zip(&t.labels)
        .zip(is_true)
        .filter(|((p, l), v)| **v == 0.0 && **p != **l as usize)
        .count();
    assert_eq!(false_items_kept_label, 50);
    // AIME has no exact null: refused for an outside model, with the reason.
    let e = watermark::external_key(
        watermark::ExternalKeyRequest {
            scheme: scheme("aime"),
            params: serde_json::Value::Null,
            input: ImageShape::MNIST,
            num_classes: 10,
            data: Some(&mnist().train),
            aux: None,
            model: Some(&fd),
            dataset_name: "mnist10k".into(),
            seed: 5,
        },
        &Device::flex(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nnmark's own models only"), "{e}");
}
