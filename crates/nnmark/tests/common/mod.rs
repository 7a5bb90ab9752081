//! Helpers shared by the key tests.

use std::collections::BTreeMap;

use nnmark::commit;
use nnmark::data::ImageShape;
use nnmark::keyfile::{KEY_FORMAT_VERSION, KeyFile, KeyMeta, TriggerSet};
use nnmark::model::{Architecture, ModelSpec, Normalization};

/// An Adi key for a 10-class MNIST LeNet with these trigger pixels and labels, fresh nonces,
/// nothing spent and no extra tensors.
pub fn mnist_adi_key(pixels: Vec<u8>, labels: Vec<u8>) -> KeyFile {
    let shape = ImageShape::MNIST;
    let items = labels.len();
    assert_eq!(pixels.len(), items * shape.numel());
    KeyFile {
        meta: KeyMeta {
            format: "nnmark-key".into(),
            version: KEY_FORMAT_VERSION,
            scheme: "adi".into(),
            params: serde_json::json!({"items": items}),
            spec: ModelSpec {
                architecture: Architecture::Lenet,
                input: shape,
                num_classes: 10,
                normalization: Normalization::identity(1),
            },
            model_sha256: "ab".repeat(32),
            dataset: "mnist10k".into(),
            embed_mode: "fine-tune".into(),
            seed: 1,
            nnmark_version: nnmark::VERSION.into(),
            burn_version: nnmark::BURN_VERSION.into(),
            created: "2026-11-29T00:00:00Z".into(),
            spent: vec![],
            reveals: vec![],
            commitment_salt: None,
            notes: BTreeMap::new(),
        },
        triggers: Some(TriggerSet {
            shape,
            num_classes: 10,
            pixels,
            labels,
        }),
        nonces: Some(commit::fresh_nonces(items).unwrap()),
        extra: BTreeMap::new(),
    }
}
