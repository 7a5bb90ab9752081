//! The key file: the owner's secret, one self-describing safetensors file.
//!
//! Tensors hold the key material (trigger images as 8-bit pixels, their labels, Adi's
//! commitment nonces, and any scheme-specific arrays such as Uchida's projection matrix); one
//! metadata entry (`nnmark-key`) holds `{"meta": "<JSON text>", "sha256": "<hex>"}`: the scheme,
//! its parameters, the marked model's fingerprint and everything needed to reproduce the run,
//! and a SHA-256 over that exact text and every tensor, so a key that was edited, truncated or
//! corrupted is rejected instead of silently giving a wrong verdict. (One entry, because
//! safetensors writes a metadata map in arbitrary order; one entry keeps the bytes, and so the
//! key's fingerprint, deterministic.)
//! Keys are written atomically with mode 0600 and never logged.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{Dataset, ImageShape};
use crate::error::{Error, Result};
use crate::model::ModelSpec;

/// Version of the key layout this build writes and reads.
pub const KEY_FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "nnmark-key";
const TRIGGER_PIXELS: &str = "trigger.pixels";
const TRIGGER_LABELS: &str = "trigger.labels";
const NONCES: &str = "commitment.nonces";

/// What the key records about how it was made and which model carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Always "nnmark-key".
    pub format: String,
    /// Layout version ([`KEY_FORMAT_VERSION`]).
    pub version: u32,
    /// Registry name of the scheme.
    pub scheme: String,
    /// The scheme's parameters as used.
    pub params: serde_json::Value,
    /// Architecture, input shape, classes and normalisation of the marked model.
    pub spec: ModelSpec,
    /// SHA-256 of the marked model's weights file.
    pub model_sha256: String,
    /// Data set the model was trained on.
    pub dataset: String,
    /// `from-scratch` or `fine-tune`.
    pub embed_mode: String,
    /// Seed of the run (key generation and embedding).
    pub seed: u64,
    /// nnmark version that wrote the key.
    pub nnmark_version: String,
    /// burn version of that build.
    pub burn_version: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Indices of trigger items already revealed publicly; never reveal them again.
    pub spent: Vec<usize>,
    /// Every public reveal made with this key, oldest first: its challenge and the items it
    /// opened. A later reveal carries them as the proof that the items it skips are spent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reveals: Vec<RevealRecord>,
    /// 32 random bytes (hex) that salt the key's public commitment, so the commitment says
    /// nothing about guessable key material (an owner id, a seed). Keys written before key
    /// commitments existed lack it until `key commit` adds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment_salt: Option<String>,
    /// Scheme-specific facts about the embedding (epochs needed, accuracies, ...).
    pub notes: BTreeMap<String, serde_json::Value>,
}

/// One public reveal, as the key remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevealRecord {
    /// The challenge that selected the items.
    pub challenge: String,
    /// The items it opened, in selection order.
    pub items: Vec<usize>,
    /// When it was made (RFC 3339).
    pub created: String,
}

/// A named float array kept in the key (e.g. a projection matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Trigger inputs with the labels the marked model answers them with. Pixels are 8-bit so a
/// trigger survives any lossless image transport and hashes to the same commitment.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSet {
    /// Shape of each image.
    pub shape: ImageShape,
    /// Number of classes the labels range over.
    pub num_classes: usize,
    /// (N, C, H, W) pixels, 0..=255.
    pub pixels: Vec<u8>,
    /// Label of each item.
    pub labels: Vec<u8>,
}

impl TriggerSet {
    /// Quantises a data set's [0, 1] pixels to 8 bits.
    pub fn from_dataset(data: &Dataset) -> Self {
        Self {
            shape: data.shape,
            num_classes: data.num_classes,
            pixels: data
                .pixels()
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect(),
            labels: data.labels().to_vec(),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 8-bit pixels of item `i`.
    pub fn image_u8(&self, i: usize) -> &[u8] {
        let n = self.shape.numel();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Pixels of items `indices` in [0, 1], ready to query.
    pub fn query_pixels(&self, indices: &[usize]) -> Vec<f32> {
        indices
            .iter()
            .flat_map(|&i| self.image_u8(i).iter().map(|&p| p as f32 / 255.0))
            .collect()
    }

    /// As a training data set.
    pub fn to_dataset(&self, name: &str) -> Result<Dataset> {
        Dataset::from_u8(
            name,
            self.shape,
            self.num_classes,
            &self.pixels,
            self.labels.clone(),
        )
    }
}

/// A whole key: metadata plus material.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFile {
    /// Metadata.
    pub meta: KeyMeta,
    /// Trigger set (black-box schemes).
    pub triggers: Option<TriggerSet>,
    /// 32-byte commitment nonces, one per trigger item (Adi et al.).
    pub nonces: Option<Vec<[u8; 32]>>,
    /// Other named arrays.
    pub extra: BTreeMap<String, KeyTensor>,
}

/// Tensors by name: dtype, shape and raw little-endian bytes.
type RawTensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn content_hash(meta_json: &str, tensors: &RawTensors) -> String {
    let mut h = Sha256::new();
    h.update(b"nnmark-key-v1\0");
    h.update((meta_json.len() as u64).to_le_bytes());
    h.update(meta_json.as_bytes());
    for (name, (dtype, shape, data)) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex::encode(h.finalize())
}

impl KeyFile {
    fn tensors(&self) -> Result<RawTensors> {
        let mut t = BTreeMap::new();
        if let Some(tr) = &self.triggers {
            let s = tr.shape;
            t.insert(
                TRIGGER_PIXELS.to_string(),
                (
                    Dtype::U8,
                    vec![tr.len(), s.channels, s.height, s.width],
                    tr.pixels.clone(),
                ),
            );
            t.insert(
                TRIGGER_LABELS.to_string(),
                (Dtype::U8, vec![tr.len()], tr.labels.clone()),
            );
        }
        if let Some(nonces) = &self.nonces {
            t.insert(
                NONCES.to_string(),
                (
                    Dtype::U8,
                    vec![nonces.len(), 32],
                    nonces.iter().flatten().copied().collect(),
                ),
            );
        }
        for (name, kt) in &self.extra {
            if [TRIGGER_PIXELS, TRIGGER_LABELS, NONCES].contains(&name.as_str()) {
                return Err(Error::invalid(
                    "key tensor name",
                    name,
                    "is reserved for trigger sets and nonces",
                ));
            }
            t.insert(
                format!("extra.{name}"),
                (Dtype::F32, kt.shape.clone(), le_bytes(&kt.values)),
            );
        }
        Ok(t)
    }

    /// Serialises the key, with its content hash.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta_json = serde_json::to_string(&self.meta)
            .map_err(|e| Error::invalid("key metadata", "", e.to_string()))?;
        let tensors = self.tensors()?;
        let hash = content_hash(&meta_json, &tensors);
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, (dtype, shape, data))| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::invalid("key tensor", name, e.to_string()))
            })
            .collect::<Result<_>>()?;
        let wrapper = serde_json::json!({ "meta": meta_json, "sha256": hash }).to_string();
        let metadata: std::collections::HashMap<String, String> =
            [(META_KEY.to_string(), wrapper)].into();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::invalid("key file", "", e.to_string()))
    }

    /// Writes the key atomically, readable by its owner only (mode 0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes()?, Some(0o600))
    }

    /// Reads and checks a key file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and checks key bytes (`path` is only used in error messages).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::format(path, "the key file is empty"));
        }
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            Error::format(
                path,
                format!("not a readable nnmark key (truncated or corrupt?): {e}"),
            )
        })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::format(path, format!("unreadable key header: {e}")))?;
        let md = header.metadata().clone().unwrap_or_default();
        let Some(wrapper) = md.get(META_KEY) else {
            return Err(Error::format(
                path,
                "not an nnmark key file (no 'nnmark-key' metadata; is it a model file?)",
            ));
        };
        let wrapper: serde_json::Value = serde_json::from_str(wrapper)
            .map_err(|e| Error::format(path, format!("unreadable key metadata: {e}")))?;
        let (Some(meta_json), Some(stored_hash)) =
            (wrapper["meta"].as_str(), wrapper["sha256"].as_str())
        else {
            return Err(Error::format(
                path,
                "the key metadata lacks its 'meta' text or its 'sha256' content hash; refusing an unverifiable key",
            ));
        };
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            tensors.insert(
                name.clone(),
                (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
            );
        }
        let actual = content_hash(meta_json, &tensors);
        if actual != stored_hash {
            return Err(Error::format(
                path,
                "the key failed its integrity check (content hash mismatch): it was modified or corrupted",
            ));
        }
        let meta: KeyMeta = serde_json::from_str(meta_json)
            .map_err(|e| Error::format(path, format!("unreadable key metadata: {e}")))?;
        if meta.format != "nnmark-key" {
            return Err(Error::format(
                path,
                format!("format '{}' is not 'nnmark-key'", meta.format),
            ));
        }
        if meta.version > KEY_FORMAT_VERSION {
            return Err(Error::format(
                path,
                format!(
                    "key format version {} is newer than this nnmark understands ({KEY_FORMAT_VERSION}); upgrade nnmark",
                    meta.version
                ),
            ));
        }
        let bad = |what: &str| Error::format(path, format!("malformed key: {what}"));
        let triggers = match (tensors.get(TRIGGER_PIXELS), tensors.get(TRIGGER_LABELS)) {
            (None, None) => None,
            (Some((Dtype::U8, shape, px)), Some((Dtype::U8, lshape, labels))) => {
                if shape.len() != 4 || lshape.len() != 1 || shape[0] != lshape[0] {
                    return Err(bad("trigger pixel and label tensors disagree in shape"));
                }
                let s = ImageShape {
                    channels: shape[1],
                    height: shape[2],
                    width: shape[3],
                };
                if s != meta.spec.input {
                    return Err(bad(&format!(
                        "trigger images are {s} but the model input is {}",
                        meta.spec.input
                    )));
                }
                if let Some(&l) = labels
                    .iter()
                    .find(|&&l| l as usize >= meta.spec.num_classes)
                {
                    return Err(bad(&format!(
                        "trigger label {l} out of range for {} classes",
                        meta.spec.num_classes
                    )));
                }
                Some(TriggerSet {
                    shape: s,
                    num_classes: meta.spec.num_classes,
                    pixels: px.clone(),
                    labels: labels.clone(),
                })
            }
            _ => return Err(bad("trigger pixels and labels must both be present as U8")),
        };
        let nonces = match tensors.get(NONCES) {
            None => None,
            Some((Dtype::U8, shape, data)) if shape.len() == 2 && shape[1] == 32 => Some(
                data.chunks(32)
                    .map(|c| c.try_into().expect("chunks of 32"))
                    .collect::<Vec<[u8; 32]>>(),
            ),
            Some(_) => return Err(bad("commitment nonces must be a U8 [N, 32] tensor")),
        };
        if let (Some(n), Some(t)) = (&nonces, &triggers)
            && n.len() != t.len()
        {
            return Err(bad("one nonce per trigger item expected"));
        }
        let mut extra = BTreeMap::new();
        for (name, (dtype, shape, data)) in &tensors {
            let Some(short) = name.strip_prefix("extra.") else {
                continue;
            };
            if *dtype != Dtype::F32 {
                return Err(bad(&format!("tensor {name} must be F32")));
            }
            extra.insert(
                short.to_string(),
                KeyTensor {
                    shape: shape.clone(),
                    values: data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                },
            );
        }
        Ok(Self {
            meta,
            triggers,
            nonces,
            extra,
        })
    }

    /// SHA-256 over everything in the key that decides a verdict: the scheme, its parameters,
    /// the model spec and fingerprint, every tensor (trigger images and labels, nonces,
    /// projection matrices) and the `calibration` note when there is one; not what changes
    /// with use (spent items, reveals) or describes the run (times, versions, other notes).
    pub fn decision_digest(&self) -> Result<[u8; 32]> {
        let m = &self.meta;
        let decisive = serde_json::json!({
            "scheme": m.scheme,
            "params": m.params,
            "spec": m.spec,
            "model_sha256": m.model_sha256,
            "calibration": m.notes.get("calibration"),
        })
        .to_string();
        let hash = content_hash(&decisive, &self.tensors()?);
        let mut h = Sha256::new();
        h.update(b"nnmark-key-decision-v1\0");
        h.update(hash.as_bytes());
        Ok(h.finalize().into())
    }

    /// Gives the key a commitment salt if it has none; true when it added one (the key must
    /// then be saved again).
    pub fn ensure_commitment_salt(&mut self) -> Result<bool> {
        if self.meta.commitment_salt.is_some() {
            return Ok(false);
        }
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::Unsupported(format!("no OS random source: {e}")))?;
        self.meta.commitment_salt = Some(hex::encode(salt));
        Ok(true)
    }

    /// SHA-256 of the serialised key: names a key in evidence without revealing it.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(crate::io::sha256_hex(&self.to_bytes()?))
    }

    /// The trigger set, or an error naming the scheme when the key has none.
    pub fn trigger_set(&self) -> Result<&TriggerSet> {
        self.triggers.as_ref().ok_or_else(|| {
            Error::invalid("key", &self.meta.scheme, "this key holds no trigger set")
        })
    }

    /// A named extra tensor, or an error saying which is missing.
    pub fn extra_tensor(&self, name: &str) -> Result<&KeyTensor> {
        self.extra.get(name).ok_or_else(|| {
            Error::invalid(
                "key",
                &self.meta.scheme,
                format!("the key lacks its '{name}' tensor"),
            )
        })
    }
}

/// The current time in RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}
