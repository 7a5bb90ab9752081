//! Training reaches the accuracy the papers' PyTorch code reaches on the same data, and is
//! reproducible from its seed.

use std::path::PathBuf;

use burn::prelude::*;
use nnmark::data;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::train::{self, EarlyStopping, Silent, TrainConfig};
use nnmark::weights::{self, WeightsMeta};

/// A 10-class model of `arch` for `split`'s images, normalised with its training statistics.
fn spec_for(arch: Architecture, split: &data::DataSplit) -> ModelSpec {
    ModelSpec {
        architecture: arch,
        input: split.train.shape,
        num_classes: 10,
        normalization: Normalization::from_dataset(&split.train),
    }
}

fn train_mnist(arch: Architecture, cfg: &TrainConfig) -> (f64, String) {
    let device = Device::flex();
    let split = data::embedded_mnist10k().unwrap();
    let spec = spec_for(arch, &split);
    let model = Model::seeded(spec.clone(), cfg.seed, &device).unwrap();
    let (model, _) = train::train(model, &split.train, cfg, &device, &mut Silent).unwrap();
    let acc = train::evaluate(&model, &split.test, 256).unwrap().accuracy;
    let hash = nnmark::io::sha256_hex(
        &weights::to_bytes(&model, &WeightsMeta::new(spec, "mnist10k", cfg.seed)).unwrap(),
    );
    (acc, hash)
}

#[test]
fn lenet_reaches_97_percent_on_mnist10k() {
    let (acc, _) = train_mnist(
        Architecture::Lenet,
        &TrainConfig {
            epochs: 10,
            seed: 1,
            ..TrainConfig::default()
        },
    );
    println!("lenet mnist10k 10 epochs seed 1: {:.2}%", acc * 100.0);
    assert!(acc >= 0.97, "accuracy {acc}");
}

#[test]
fn mlp_reaches_94_percent_and_same_seed_gives_identical_weights() {
    let cfg = TrainConfig {
        epochs: 10,
        seed: 1,
        ..TrainConfig::default()
    };
    let (acc, h1) = train_mnist(Architecture::Mlp, &cfg);
    println!("mlp mnist10k 10 epochs seed 1: {:.2}%", acc * 100.0);
    assert!(acc >= 0.94, "accuracy {acc}");
    let (acc2, h2) = train_mnist(Architecture::Mlp, &cfg);
    assert_eq!(
        (acc, &h1),
        (acc2, &h2),
        "same seed must give identical accuracy and weights"
    );
    let (_, h3) = train_mnist(
        Architecture::Mlp,
        &TrainConfig {
            epochs: 1,
            seed: 2,
            ..cfg
        },
    );
    assert_ne!(h1, h3);
}

/// nnmark's own convolution and pooling kernels keep training reproducible: LeNet, mnist_cnn
/// and the ResNet trained twice from one seed give identical weights, and so do runs on one
/// thread and on three (the kernels and burn flex split their work across rayon's threads, so
/// a split-dependent summation order would show here). The other tests of this file train at
/// the same time on other threads: burn's random number generator is global to the process,
/// and the library's `rng_guard` is what keeps their draws out of these runs.
#[test]
fn convolutional_training_is_identical_across_runs_and_thread_counts() {
    let split = data::embedded_mnist10k().unwrap();
    let train_set = split.train.take(600);
    for arch in [
        Architecture::Lenet,
        Architecture::MnistCnn,
        Architecture::Resnet,
    ] {
        let spec = spec_for(arch, &split);
        let run = |threads: usize| -> String {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let device = Device::flex();
                let model = Model::seeded(spec.clone(), 9, &device).unwrap();
                let cfg = TrainConfig {
                    epochs: 1,
                    batch_size: 32,
                    seed: 9,
                    ..TrainConfig::default()
                };
                let (model, _) =
                    train::train(model, &train_set, &cfg, &device, &mut Silent).unwrap();
                nnmark::io::sha256_hex(
                    &weights::to_bytes(&model, &WeightsMeta::new(spec.clone(), "mnist10k", 9))
                        .unwrap(),
                )
            })
        };
        let (a, b, c) = (run(3), run(3), run(1));
        assert_eq!(a, b, "{arch}: two runs from one seed differ");
        assert_eq!(a, c, "{arch}: one thread and three threads differ");
    }
}

/// Several models trained together (`train_many`: side by side on the cores) are bit for bit
/// the models trained alone from the same seeds and recipes, in the order given; a mix with an
/// architecture that draws from the global generator while training (mnist_cnn's dropout)
/// falls back to one after another and is equal too; so are the same runs of `train` on
/// threads of their own at once.
#[test]
fn models_trained_together_equal_models_trained_alone() {
    let split = data::embedded_mnist10k().unwrap();
    let train_set = split.train.take(1500);
    let device = Device::flex();
    let recipe = |seed: u64, optimizer: Option<train::OptimizerConfig>, batch_size: usize| {
        let base = TrainConfig {
            epochs: 2,
            seed,
            batch_size,
            ..TrainConfig::default()
        };
        TrainConfig {
            optimizer: optimizer.unwrap_or(base.optimizer.clone()),
            ..base
        }
    };
    let adam = Some(train::OptimizerConfig::Adam {
        lr: 0.001,
        weight_decay: 0.0,
    });
    let hash = |m: &Model, seed: u64| {
        nnmark::io::sha256_hex(
            &weights::to_bytes(m, &WeightsMeta::new(m.spec.clone(), "mnist10k", seed)).unwrap(),
        )
    };
    for jobs in [
        vec![
            (Architecture::Lenet, recipe(3, None, 64)),
            (Architecture::Mlp, recipe(4, adam.clone(), 64)),
            (Architecture::Lenet, recipe(5, adam.clone(), 32)),
            (Architecture::Mlp, recipe(6, None, 128)),
            (Architecture::Lenet, recipe(7, None, 64)),
        ],
        vec![
            (Architecture::Mlp, recipe(8, None, 64)),
            (Architecture::MnistCnn, recipe(9, None, 64)),
        ],
    ] {
        let start = |(arch, cfg): &(Architecture, TrainConfig)| {
            Model::seeded(spec_for(*arch, &split), cfg.seed, &device).unwrap()
        };
        let alone: Vec<(String, Vec<f64>)> = jobs
            .iter()
            .map(|job| {
                let (m, report) =
                    train::train(start(job), &train_set, &job.1, &device, &mut Silent).unwrap();
                (
                    hash(&m, job.1.seed),
                    report.epochs.iter().map(|e| e.train_loss).collect(),
                )
            })
            .collect();
        let together: Vec<(String, Vec<f64>)> = train::train_many(
            jobs.iter().map(|job| (start(job), job.1.clone())).collect(),
            &train_set,
            &device,
        )
        .unwrap()
        .into_iter()
        .zip(&jobs)
        .map(|((m, report), job)| {
            (
                hash(&m, job.1.seed),
                report.epochs.iter().map(|e| e.train_loss).collect(),
            )
        })
        .collect();
        assert_eq!(alone, together);
        // `train` itself on several threads at once (as the evaluation matrix's groups do):
        // each run seeds and draws its fresh weights under the generator's lock, then trains
        // beside the others (dropout runs keep the lock to the end), with the same models.
        let threads: Vec<(String, Vec<f64>)> = std::thread::scope(|scope| {
            let runs: Vec<_> = jobs
                .iter()
                .map(|job| {
                    let (start, train_set, device) = (&start, &train_set, &device);
                    scope.spawn(move || {
                        let (m, report) =
                            train::train(start(job), train_set, &job.1, device, &mut Silent)
                                .unwrap();
                        (
                            hash(&m, job.1.seed),
                            report.epochs.iter().map(|e| e.train_loss).collect(),
                        )
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(alone, threads);
    }
}

/// Input gradients (FGSM: frontier stitching's keys, adversarial fine-tuning) of a network with
/// dropout are those of the network as it answers queries: no dropout, the same whatever burn's
/// global generator holds (they once followed it, and a key with them).
#[test]
fn input_gradients_of_a_dropout_network_do_not_depend_on_the_generator() {
    let split = data::embedded_mnist10k().unwrap();
    let device = Device::flex();
    let model = Model::seeded(spec_for(Architecture::MnistCnn, &split), 3, &device).unwrap();
    {
        let _rng = train::rng_guard();
        device.seed(3);
        model.materialise();
    }
    let n = 32;
    let pixels = &split.test.pixels()[..n * split.test.shape.numel()];
    let labels = &split.test.labels()[..n];
    let gradients = |seed: u64| {
        let _rng = train::rng_guard();
        device.seed(seed);
        train::input_gradients(&model, pixels, labels, 16).unwrap()
    };
    let g = gradients(1);
    assert!(g.iter().any(|v| *v != 0.0));
    assert_eq!(g, gradients(2));
    assert_eq!(g, gradients(1));
}

#[test]
fn mnist_cnn_and_resnet_learn() {
    // One short epoch each on a slice of the data: the point is that gradients flow through
    // dropout and batch norm, not the final accuracy.
    let device = Device::flex();
    let split = data::embedded_mnist10k().unwrap();
    let train_set = split.train.take(2000);
    for arch in [Architecture::MnistCnn, Architecture::Resnet] {
        let spec = spec_for(arch, &split);
        let model = Model::seeded(spec, 5, &device).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            seed: 5,
            ..TrainConfig::default()
        };
        let (model, _) = train::train(model, &train_set, &cfg, &device, &mut Silent).unwrap();
        let acc = train::evaluate(&model, &split.test.take(500), 128)
            .unwrap()
            .accuracy;
        println!("{arch}: {acc}");
        // Chance is 0.1; batch-norm running statistics lag after so few steps, hence the bar.
        assert!(acc > 0.3, "{arch} reached only {acc}");
    }
}

/// Soft targets with mixed-in triggers (AIME's anchored fine-tuning): the data rows follow the
/// given probabilities, the trigger rows their own labels, so the triggers are learnt while the
/// model keeps answering like the clean one elsewhere.
#[test]
fn soft_targets_anchor_the_data_while_triggers_are_learnt() {
    let device = Device::flex();
    let split = data::embedded_mnist10k().unwrap();
    let spec = spec_for(Architecture::Mlp, &split);
    let cfg = TrainConfig {
        epochs: 3,
        seed: 3,
        ..TrainConfig::default()
    };
    let model = Model::seeded(spec, 3, &device).unwrap();
    let (clean, _) = train::train(model, &split.train, &cfg, &device, &mut Silent).unwrap();
    // Five test images taught a wrong class: a watermark-like key the clean model disagrees with.
    let shape = split.test.shape;
    let pixels = split.test.pixels()[..5 * shape.numel()].to_vec();
    let labels: Vec<u8> = split.test.labels()[..5]
        .iter()
        .map(|l| (l + 1) % 10)
        .collect();
    let key = data::Dataset::new("key", shape, 10, pixels, labels.clone()).unwrap();
    let soft: Vec<f32> = train::predict_proba(&clean, split.train.pixels(), 256)
        .into_iter()
        .flatten()
        .collect();
    let extras = |q| train::TrainExtras {
        trigger_mix: Some(train::TriggerMix {
            triggers: &key,
            per_batch: 1,
        }),
        soft_targets: Some(q),
        ..Default::default()
    };
    let tune = TrainConfig {
        epochs: 1,
        ..cfg.clone()
    };
    let (marked, _) = train::train_with(
        clean.clone(),
        &split.train,
        &tune,
        &device,
        &mut Silent,
        extras(&soft),
    )
    .unwrap();
    let key_answers = train::predict(&marked, key.pixels(), 256);
    assert!(
        key_answers
            .iter()
            .zip(&labels)
            .all(|(&p, &l)| p == l as usize),
        "key not learnt: {key_answers:?} vs {labels:?}"
    );
    // The same fine-tuning on the data's labels instead.
    let (plain, _) = train::train_with(
        clean.clone(),
        &split.train,
        &tune,
        &device,
        &mut Silent,
        train::TrainExtras {
            soft_targets: None,
            ..extras(&soft)
        },
    )
    .unwrap();
    let before = train::predict(&clean, split.test.pixels(), 256);
    let kept = |m: &Model| {
        let after = train::predict(m, split.test.pixels(), 256);
        before.iter().zip(&after).filter(|(a, b)| a == b).count()
    };
    let (anchored, unanchored) = (kept(&marked), kept(&plain));
    eprintln!("test answers kept: anchored {anchored}, labels {unanchored} of 2000");
    // Measured 39 against 110 changed answers.
    assert!(
        2000 - anchored <= (2000 - unanchored) / 2,
        "answers changed: anchored {}, labels {}",
        2000 - anchored,
        2000 - unanchored
    );
    let err = train::train_with(
        clean,
        &split.train,
        &tune,
        &device,
        &mut Silent,
        extras(&soft[10..]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("soft targets"), "{err}");
}

#[test]
fn early_stopping_keeps_the_best_epoch() {
    let device = Device::flex();
    let split = data::embedded_mnist10k().unwrap();
    let spec = ModelSpec {
        architecture: Architecture::Mlp,
        input: split.train.shape,
        num_classes: 10,
        normalization: Normalization::identity(1),
    };
    let model = Model::new(spec, &device).unwrap();
    // A rate this high makes validation accuracy stall quickly.
    let cfg = TrainConfig {
        epochs: 30,
        optimizer: train::OptimizerConfig::Adam {
            lr: 0.01,
            weight_decay: 0.0,
        },
        schedule: train::LrSchedule::Constant,
        early_stopping: Some(EarlyStopping {
            patience: 2,
            val_fraction: 0.2,
        }),
        ..TrainConfig::default()
    };
    let (_, report) =
        train::train(model, &split.train.take(3000), &cfg, &device, &mut Silent).unwrap();
    assert!(report.stopped_early, "{} epochs ran", report.epochs.len());
    let best = report
        .epochs
        .iter()
        .map(|e| e.val_accuracy.unwrap())
        .fold(0.0, f64::max);
    assert_eq!(report.epochs[report.kept_epoch].val_accuracy.unwrap(), best);
    assert_eq!(report.epochs.len(), report.kept_epoch + 3);
}

#[test]
fn evaluation_and_input_gradients_are_consistent() {
    let device = Device::flex();
    let split = data::embedded_mnist10k().unwrap();
    let spec = spec_for(Architecture::Lenet, &split);
    let model = Model::seeded(spec, 9, &device).unwrap();
    let (model, _) = train::train(
        model,
        &split.train.take(2000),
        // Trained well enough that FGSM has accuracy to take away: after 1 epoch this LeNet
        // was at 34% on one machine and FGSM took only 15 points of it.
        &TrainConfig {
            epochs: 4,
            seed: 9,
            ..TrainConfig::default()
        },
        &device,
        &mut Silent,
    )
    .unwrap();
    let test = split.test.take(300);
    let eval = train::evaluate(&model, &test, 64).unwrap();
    let total: u64 = eval.confusion.iter().flatten().sum();
    assert_eq!(total, 300);
    let diag: u64 = (0..10).map(|i| eval.confusion[i][i]).sum();
    assert!((eval.accuracy - diag as f64 / 300.0).abs() < 1e-12);
    // FGSM with the input gradient must lower accuracy: the gradient points uphill in loss.
    let grads = train::input_gradients(&model, test.pixels(), test.labels(), 64).unwrap();
    let mut bad = test.labels()[..2].to_vec();
    bad[1] = 10;
    let err = train::input_gradients(&model, &test.pixels()[..2 * 784], &bad, 64).unwrap_err();
    assert!(err.to_string().contains("label"), "{err}");
    assert!(err.to_string().contains("10"), "{err}");
    let adv: Vec<f32> = test
        .pixels()
        .iter()
        .zip(&grads)
        .map(|(x, g)| (x + 0.2 * g.signum()).clamp(0.0, 1.0))
        .collect();
    let pred = train::predict(&model, &adv, 64);
    let adv_acc = pred
        .iter()
        .zip(test.labels())
        .filter(|(p, l)| **p == **l as usize)
        .count() as f64
        / 300.0;
    println!("clean {} adversarial {}", eval.accuracy, adv_acc);
    assert!(
        adv_acc < eval.accuracy - 0.2,
        "FGSM barely changed accuracy: {adv_acc} vs {}",
        eval.accuracy
    );
}

/// Fashion-MNIST, 10 epochs: about 5 minutes on 2 cores, so not in the default suite.
/// Run: `cargo test --release -p nnmark --test training -- --ignored`
#[test]
#[ignore]
fn lenet_reaches_89_percent_on_fashion_mnist() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let split = data::load_or_fetch("fashion", Some(&shared)).unwrap();
    let device = Device::flex();
    let spec = spec_for(Architecture::Lenet, &split);
    let model = Model::seeded(spec, 1, &device).unwrap();
    let (model, _) = train::train(
        model,
        &split.train,
        &TrainConfig::default(),
        &device,
        &mut Silent,
    )
    .unwrap();
    let acc = train::evaluate(&model, &split.test, 256).unwrap().accuracy;
    println!("lenet fashion 10 epochs: {:.2}%", acc * 100.0);
    assert!(acc >= 0.89, "accuracy {acc}");
}
