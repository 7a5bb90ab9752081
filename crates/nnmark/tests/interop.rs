//! PyTorch interop: a LeNet state_dict written by PyTorch (tools/make_interop_fixture.py) loads
//! into nnmark and reproduces PyTorch's logits; nnmark's own files round-trip bit-exactly.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use nnmark::data::ImageShape;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::train::images_tensor;
use nnmark::weights::{self, WeightsMeta};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn lenet_spec() -> ModelSpec {
    ModelSpec {
        architecture: Architecture::Lenet,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::identity(1),
    }
}

fn torch_io() -> (Vec<f32>, Vec<f32>) {
    let bytes = std::fs::read(fixture("lenet_torch_io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f = |n: &str| -> Vec<f32> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    (f("inputs"), f("logits"))
}

fn logits(model: &Model, inputs: &[f32]) -> Vec<f32> {
    let x = images_tensor(inputs.to_vec(), ImageShape::MNIST, &Device::flex());
    model
        .forward(x)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < tol, "max abs difference {worst} >= {tol}");
}

#[test]
fn pytorch_safetensors_reproduces_pytorch_logits() {
    let (inputs, expected) = torch_io();
    let loaded = weights::load(
        &fixture("lenet_torch.safetensors"),
        Some(&lenet_spec()),
        &Device::flex(),
    )
    .unwrap();
    assert_close(&logits(&loaded.model, &inputs), &expected, 1e-4);
}

#[test]
fn pytorch_pth_reproduces_pytorch_logits() {
    let (inputs, expected) = torch_io();
    let loaded = weights::load(
        &fixture("lenet_torch.pth"),
        Some(&lenet_spec()),
        &Device::flex(),
    )
    .unwrap();
    assert_close(&logits(&loaded.model, &inputs), &expected, 1e-4);
}

#[test]
fn foreign_file_without_spec_asks_for_the_architecture() {
    let err = weights::load(&fixture("lenet_torch.safetensors"), None, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lenet_torch.safetensors") && err.contains("--arch"),
        "{err}"
    );
}

#[test]
fn foreign_file_of_another_architecture_is_rejected() {
    let spec = ModelSpec {
        architecture: Architecture::Mlp,
        ..lenet_spec()
    };
    let err = weights::load(
        &fixture("lenet_torch.safetensors"),
        Some(&spec),
        &Device::flex(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not hold a mlp model"), "{err}");
}

#[test]
fn nnmark_files_round_trip_and_stay_in_pytorch_layout() {
    let (inputs, expected) = torch_io();
    let loaded = weights::load(
        &fixture("lenet_torch.safetensors"),
        Some(&lenet_spec()),
        &Device::flex(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let meta = WeightsMeta::new(lenet_spec(), "fixture", 7);
    let h1 = weights::save(&loaded.model, &meta, &path).unwrap();
    let h2 = nnmark::io::sha256_hex(&weights::to_bytes(&loaded.model, &meta).unwrap());
    assert_eq!(h1, h2, "same weights and metadata must give the same bytes");
    // The tensors are exactly the ones PyTorch wrote (names, shapes, [out, in] Linear layout).
    let ours = std::fs::read(&path).unwrap();
    let theirs = std::fs::read(fixture("lenet_torch.safetensors")).unwrap();
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&ours).unwrap(),
        safetensors::SafeTensors::deserialize(&theirs).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    let mut their_names = b.names();
    their_names.sort();
    assert_eq!(names, their_names);
    for n in names {
        assert_eq!(
            a.tensor(n).unwrap().shape(),
            b.tensor(n).unwrap().shape(),
            "{n}"
        );
        assert_eq!(
            a.tensor(n).unwrap().data(),
            b.tensor(n).unwrap().data(),
            "{n}"
        );
    }
    let back = weights::load(&path, None, &Device::flex()).unwrap();
    assert_eq!(back.meta, meta);
    assert_close(&logits(&back.model, &inputs), &expected, 1e-4);
}

#[test]
fn every_architecture_round_trips() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for arch in Architecture::ALL {
        let spec = ModelSpec {
            architecture: arch,
            normalization: Normalization {
                mean: vec![0.13],
                std: vec![0.31],
            },
            ..lenet_spec()
        };
        let model = Model::seeded(spec.clone(), 3, &device).unwrap();
        let path = dir.path().join(format!("{arch}.safetensors"));
        weights::save(&model, &WeightsMeta::new(spec, "none", 3), &path).unwrap();
        let back = weights::load(&path, None, &device).unwrap().model;
        let x: Vec<f32> = (0..2 * 784).map(|i| (i % 17) as f32 / 17.0).collect();
        assert_close(&logits(&model.clone(), &x), &logits(&back, &x), 1e-6);
        // A file of one architecture never loads as another.
        let other = if arch == Architecture::Mlp {
            Architecture::Lenet
        } else {
            Architecture::Mlp
        };
        let want = ModelSpec {
            architecture: other,
            ..back.spec.clone()
        };
        let err = weights::load(&path, Some(&want), &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("holds a {arch} model")), "{err}");
    }
}

/// A trained ResNet round-trips with its BatchNorm running statistics: after training they
/// are far from their initial 0 and 1, so a file that lost them would answer differently in
/// evaluation mode (an untrained round trip cannot tell).
#[test]
fn a_trained_resnet_round_trips_with_its_batchnorm_statistics() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let data = nnmark::data::embedded_mnist10k().unwrap().train.take(256);
    let spec = ModelSpec {
        architecture: Architecture::Resnet,
        normalization: Normalization::from_dataset(&data),
        ..lenet_spec()
    };
    let untrained = Model::seeded(spec.clone(), 5, &device).unwrap();
    let cfg = nnmark::train::TrainConfig {
        epochs: 1,
        batch_size: 32,
        seed: 5,
        ..Default::default()
    };
    let (model, _) = nnmark::train::train(
        untrained.clone(),
        &data,
        &cfg,
        &device,
        &mut nnmark::train::Silent,
    )
    .unwrap();
    let path = dir.path().join("resnet.safetensors");
    weights::save(&model, &WeightsMeta::new(spec, "mnist10k", 5), &path).unwrap();
    // The running statistics moved: some stored running_var is far from 1.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let moved = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name.ends_with("running_var"))
        .flat_map(|(_, t)| {
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .map(|v| (v - 1.0).abs())
        .fold(0f32, f32::max);
    assert!(moved > 0.1, "running variances stayed near 1 ({moved})");
    let back = weights::load(&path, None, &device).unwrap().model;
    let x: Vec<f32> = data.pixels()[..4 * 784].to_vec();
    let want = logits(&model, &x);
    assert_close(&want, &logits(&back, &x), 1e-5);
    let before = logits(&untrained, &x);
    let apart = want
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(apart > 1e-2, "training changed nothing ({apart})");
}

#[test]
fn truncated_weights_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("lenet_torch.safetensors")).unwrap();
    let path = dir.path().join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = weights::load(&path, Some(&lenet_spec()), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
}

/// Rewrites every F32 tensor of a safetensors file with `convert` (keeping the metadata).
fn rewrite_floats(
    bytes: &[u8],
    dtype: safetensors::Dtype,
    convert: impl Fn(f32) -> Vec<u8>,
) -> Vec<u8> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| match v.dtype() {
            safetensors::Dtype::F32 => {
                let data = v
                    .data()
                    .chunks(4)
                    .flat_map(|c| convert(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect();
                (name, dtype, v.shape().to_vec(), data)
            }
            other => (name, other, v.shape().to_vec(), v.data().to_vec()),
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, header.metadata().clone()).unwrap()
}

/// A float format PyTorch saves weights in besides F32.
struct FloatFormat {
    /// Short name.
    name: &'static str,
    /// Its safetensors dtype.
    dtype: safetensors::Dtype,
    /// The storage class `torch.save` names for it.
    storage: &'static str,
    /// How far LeNet's logits may move after the round trip through it.
    tolerance: f32,
    /// An F32 value in it, little-endian.
    encode: fn(f32) -> Vec<u8>,
}

const FLOAT_FORMATS: [FloatFormat; 3] = [
    FloatFormat {
        name: "f16",
        dtype: safetensors::Dtype::F16,
        storage: "HalfStorage",
        tolerance: 0.05,
        encode: |x| half::f16::from_f32(x).to_le_bytes().to_vec(),
    },
    FloatFormat {
        name: "bf16",
        dtype: safetensors::Dtype::BF16,
        storage: "BFloat16Storage",
        tolerance: 0.2,
        encode: |x| half::bf16::from_f32(x).to_le_bytes().to_vec(),
    },
    FloatFormat {
        name: "f64",
        dtype: safetensors::Dtype::F64,
        storage: "DoubleStorage",
        tolerance: 1e-5,
        encode: |x| (x as f64).to_le_bytes().to_vec(),
    },
];

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// PyTorch's `.half()`, `.bfloat16()` and `.double()` weights load as F32 and compute (they
/// used to load and then panic in the backend); a NaN weight is refused with the tensor's name.
#[test]
fn half_double_and_non_finite_weights() {
    let dir = tempfile::tempdir().unwrap();
    let original = weights::load(
        &fixture("lenet_torch.safetensors"),
        Some(&lenet_spec()),
        &Device::flex(),
    )
    .unwrap()
    .model;
    let (inputs, _) = torch_io();
    let want = logits(&original, &inputs);
    let bytes = std::fs::read(fixture("lenet_torch.safetensors")).unwrap();
    for f in &FLOAT_FORMATS {
        let path = dir.path().join(format!("lenet-{}.safetensors", f.name));
        std::fs::write(&path, rewrite_floats(&bytes, f.dtype, f.encode)).unwrap();
        let m = weights::load(&path, Some(&lenet_spec()), &Device::flex())
            .unwrap()
            .model;
        let worst = largest_difference(&logits(&m, &inputs), &want);
        assert!(worst < f.tolerance, "{}: logits differ by {worst}", f.name);
    }
    let nan = dir.path().join("lenet-nan.safetensors");
    std::fs::write(
        &nan,
        rewrite_floats(&bytes, safetensors::Dtype::F32, |x| {
            if x.abs() < 0.01 { f32::NAN } else { x }
                .to_le_bytes()
                .to_vec()
        }),
    )
    .unwrap();
    let e = weights::load(&nan, Some(&lenet_spec()), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lenet-nan.safetensors") && e.contains("non-finite"),
        "{e}"
    );
}

/// The `.pth` fixture as `torch.save` writes it after `.half()`, `.bfloat16()` or `.double()`:
/// the pickle names another storage class and every storage holds that type's bytes.
fn pth_as(original: &Path, storage: &str, convert: &dyn Fn(f32) -> Vec<u8>) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::fs::File::open(original).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name.ends_with("data.pkl") {
            let from = b"ctorch\nFloatStorage\n";
            let at = bytes
                .windows(from.len())
                .position(|w| w == from)
                .expect("the fixture's pickle names torch.FloatStorage");
            let to = format!("ctorch\n{storage}\n");
            bytes.splice(at..at + from.len(), to.bytes());
        } else if name.contains("/data/") {
            bytes = bytes
                .chunks_exact(4)
                .flat_map(|c| convert(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        }
        out.start_file(name, options).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// PyTorch's `.half()`, `.bfloat16()` and `.double()` state dicts saved as `.pth` load and
/// compute like the F32 one (or are refused with a clear error): never a panic later.
#[test]
fn half_and_double_pth_files_load_and_compute() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, expected) = torch_io();
    for f in &FLOAT_FORMATS {
        let path = dir.path().join(format!("lenet-{}.pth", f.storage));
        std::fs::write(
            &path,
            pth_as(&fixture("lenet_torch.pth"), f.storage, &f.encode),
        )
        .unwrap();
        let loaded = std::panic::catch_unwind(|| {
            weights::load(&path, Some(&lenet_spec()), &Device::flex())
                .map(|l| logits(&l.model, &inputs))
        })
        .unwrap_or_else(|_| panic!("{}: loading or computing panicked", f.storage));
        let got = loaded.unwrap_or_else(|e| panic!("{}: {e}", f.storage));
        let worst = largest_difference(&got, &expected);
        assert!(
            worst < f.tolerance,
            "{}: logits differ by {worst}",
            f.storage
        );
    }
    let nan = dir.path().join("lenet-nan.pth");
    let to_nan = |x: f32| {
        if x.abs() < 0.01 { f64::NAN } else { x as f64 }
            .to_le_bytes()
            .to_vec()
    };
    std::fs::write(
        &nan,
        pth_as(&fixture("lenet_torch.pth"), "DoubleStorage", &to_nan),
    )
    .unwrap();
    let e = weights::load(&nan, Some(&lenet_spec()), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lenet-nan.pth") && e.contains("non-finite"),
        "{e}"
    );
}

/// A weights file whose metadata holds a normalisation std of 0 (or below) is refused with the
/// file and the statistic named: it used to load and answer NaN for every input. (JSON cannot
/// carry a NaN mean: it is written as null and refused as unreadable metadata.)
#[test]
fn unusable_normalisation_statistics_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let mut spec = lenet_spec();
    spec.normalization = Normalization {
        mean: vec![0.1],
        std: vec![0.3],
    };
    let model = Model::new(spec.clone(), &device).unwrap();
    for (name, mean, std, needle) in [
        ("zero-std", 0.1f32, 0.0f32, "std 0"),
        ("negative-std", 0.1, -0.5, "std -0.5"),
    ] {
        let mut meta = WeightsMeta::new(spec.clone(), "test", 1);
        meta.spec.normalization = Normalization {
            mean: vec![mean],
            std: vec![std],
        };
        let path = dir.path().join(format!("{name}.safetensors"));
        weights::save(&model, &meta, &path).unwrap();
        let err = weights::load(&path, None, &device)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(needle), "{err}");
    }
    // The same model with usable statistics loads.
    let path = dir.path().join("ok.safetensors");
    weights::save(&model, &WeightsMeta::new(spec, "test", 1), &path).unwrap();
    assert!(weights::load(&path, None, &device).is_ok());
}
