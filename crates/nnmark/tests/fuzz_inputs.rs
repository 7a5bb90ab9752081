//! Property tests over every reader of files a suspect or a user hands nnmark: IDX images and
//! labels (plain and gzipped), key files, weights files and image folders. Each starts from a
//! valid file and mutates it (bytes overwritten, header fields set to extreme values, the file
//! truncated or extended) or feeds arbitrary bytes; the reader must answer `Ok` or a clean
//! `Err`, never panic. Seeded and bounded (a fixed number of cases per reader), so CI runs them
//! in a few seconds; a larger budget is `NNMARK_FUZZ_CASES=100000 cargo test --release
//! --test fuzz_inputs`.

use std::path::Path;

use burn::prelude::Device;
use nnmark::data::{self, DataSource, ImageShape, idx};
use nnmark::keyfile::{KEY_FORMAT_VERSION, KeyFile, KeyMeta, TriggerSet};
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::weights::{self, WeightsMeta};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn cases() -> u32 {
    std::env::var("NNMARK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn runner() -> TestRunner {
    runner_with(cases())
}

fn runner_with(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// How a valid file is damaged.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite one byte.
    Byte(usize, u8),
    /// Write a big-endian or little-endian u32 (0, 1, huge) at an offset: header fields.
    Word(usize, u32, bool),
    /// Cut the file at this fraction of its length.
    Truncate(f64),
    /// Append bytes.
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        (
            0usize..64,
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(u32::MAX),
                Just(0x7fff_ffff),
                Just(4097),
                any::<u32>()
            ],
            any::<bool>()
        )
            .prop_map(|(i, w, be)| Mutation::Word(i, w, be)),
        (0.0f64..1.0).prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Mutation::Extend),
    ]
}

fn mutated(base: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let base = base.to_vec();
    proptest::collection::vec(mutation(), 1..6).prop_map(move |ms| {
        let mut b = base.clone();
        for m in ms {
            match m {
                Mutation::Byte(i, v) if !b.is_empty() => {
                    let n = b.len();
                    b[i % n] = v;
                }
                Mutation::Byte(..) => {}
                Mutation::Word(i, w, be) => {
                    let bytes = if be { w.to_be_bytes() } else { w.to_le_bytes() };
                    for (k, x) in bytes.iter().enumerate() {
                        if let Some(slot) = b.get_mut(i + k) {
                            *slot = *x;
                        }
                    }
                }
                Mutation::Truncate(f) => {
                    let keep = (b.len() as f64 * f) as usize;
                    b.truncate(keep);
                }
                Mutation::Extend(more) => b.extend(more),
            }
        }
        b
    })
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

#[test]
fn idx_readers_never_panic() {
    let images = idx::encode_images(5, 4, &(0..60).map(|i| i as u8).collect::<Vec<_>>());
    let labels = idx::encode_labels(&[0, 1, 2]);
    let path = Path::new("fuzz.idx");
    let mut r = runner();
    for base in [&images, &labels] {
        r.run(&prop_oneof![mutated(base), arbitrary_bytes()], |b| {
            let _ = idx::parse_images(path, &b);
            let _ = idx::parse_labels(path, &b);
            Ok(())
        })
        .unwrap();
        // The same, gzipped: a damaged stream or a header that promises more than it holds.
        let gz = idx::gzip(base);
        r.run(&mutated(&gz), |b| {
            if let Ok(raw) = idx::decode_maybe_gz(Path::new("fuzz.idx.gz"), b) {
                let _ = idx::parse_images(path, &raw);
                let _ = idx::parse_labels(path, &raw);
            }
            Ok(())
        })
        .unwrap();
    }
}

fn small_key() -> KeyFile {
    let shape = ImageShape::MNIST;
    KeyFile {
        meta: KeyMeta {
            format: "nnmark-key".into(),
            version: KEY_FORMAT_VERSION,
            scheme: "adi".into(),
            params: serde_json::json!({"items": 3, "per_batch": null}),
            spec: ModelSpec {
                architecture: Architecture::Mlp,
                input: shape,
                num_classes: 10,
                normalization: Normalization::identity(1),
            },
            model_sha256: "00".repeat(32),
            dataset: "mnist10k".into(),
            embed_mode: "fine-tune".into(),
            seed: 1,
            nnmark_version: nnmark::VERSION.into(),
            burn_version: nnmark::BURN_VERSION.into(),
            created: "2026-11-30T00:00:00Z".into(),
            spent: Vec::new(),
            reveals: Vec::new(),
            commitment_salt: None,
            notes: Default::default(),
        },
        triggers: Some(TriggerSet {
            shape,
            num_classes: 10,
            pixels: (0..3 * 784).map(|i| (i % 251) as u8).collect(),
            labels: vec![1, 2, 3],
        }),
        nonces: Some(vec![[7u8; 32]; 3]),
        extra: Default::default(),
    }
}

#[test]
fn key_files_never_panic() {
    let bytes = small_key().to_bytes().unwrap();
    // The valid file loads; damaged ones are refused by name.
    assert!(KeyFile::from_bytes(Path::new("k.nnkey"), &bytes).is_ok());
    runner()
        .run(&prop_oneof![mutated(&bytes), arbitrary_bytes()], |b| {
            if let Err(e) = KeyFile::from_bytes(Path::new("k.nnkey"), &b) {
                prop_assert!(e.to_string().contains("k.nnkey"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn weights_files_never_panic() {
    let device = Device::flex();
    let spec = ModelSpec {
        architecture: Architecture::Mlp,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::identity(1),
    };
    let model = Model::seeded(spec.clone(), 1, &device).unwrap();
    let bytes = weights::to_bytes(&model, &WeightsMeta::new(spec.clone(), "fuzz", 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    // Loading writes nothing, so one file is rewritten per case. Fewer cases: each builds a
    // model.
    let mut r = runner_with(cases() / 3);
    r.run(&mutated(&bytes), |b| {
        let _ = weights::read_meta(&path, &b);
        std::fs::write(&path, &b).unwrap();
        let _ = weights::load(&path, None, &device);
        let _ = weights::load(&path, Some(&spec), &device);
        Ok(())
    })
    .unwrap();
}

#[test]
fn image_folders_never_panic() {
    // A valid 2-class folder of 4x4 grey PNGs, one file of which is damaged per case.
    let png = {
        let img = image::GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * 40 + y * 10) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("0.png"), &png).unwrap();
        }
    }
    let source = DataSource::Folder {
        train: dir.path().join("train"),
        test: dir.path().join("test"),
        shape: ImageShape {
            channels: 1,
            height: 4,
            width: 4,
        },
    };
    assert!(data::load(&source, None).is_ok());
    let victim = dir.path().join("train/b/0.png");
    let mut r = runner_with(cases() / 3);
    r.run(&prop_oneof![mutated(&png), arbitrary_bytes()], |b| {
        std::fs::write(&victim, &b).unwrap();
        let _ = data::load(&source, None);
        Ok(())
    })
    .unwrap();
}
