//! Weights files: safetensors with PyTorch parameter names and layouts (Linear `[out, in]`,
//! BatchNorm `weight`/`bias`/`running_*`), plus one metadata entry `nnmark` holding a JSON
//! description (architecture, input, classes, normalisation, data set, seed, versions), so a
//! file is self-describing. PyTorch's `load_state_dict` reads the tensors as they are.
//!
//! The metadata is a single key on purpose: safetensors serialises its metadata map in hash
//! order, so several keys would make the same weights hash differently from run to run.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Model, ModelSpec};

/// Metadata key under which nnmark stores its JSON description.
pub(crate) const META_KEY: &str = "nnmark";
/// Version of the weights metadata layout.
pub const WEIGHTS_FORMAT_VERSION: u32 = 1;

/// The self-description stored with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsMeta {
    /// Layout version of this record.
    pub format_version: u32,
    /// Architecture, input shape, classes and normalisation.
    pub spec: ModelSpec,
    /// Data set the model was trained on.
    pub dataset: String,
    /// Seed of the run that produced it.
    pub seed: u64,
    /// nnmark version that wrote it.
    pub nnmark_version: String,
    /// burn version that wrote it.
    pub burn_version: String,
    /// Free-form provenance (training recipe, parent model hash, ...), sorted for stable bytes.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl WeightsMeta {
    /// Metadata for a model produced now by this build.
    pub fn new(spec: ModelSpec, dataset: impl Into<String>, seed: u64) -> Self {
        Self {
            format_version: WEIGHTS_FORMAT_VERSION,
            spec,
            dataset: dataset.into(),
            seed,
            nnmark_version: crate::VERSION.to_string(),
            burn_version: crate::BURN_VERSION.to_string(),
            extra: BTreeMap::new(),
        }
    }
}

/// torchvision calls a block's shortcut `downsample.0` (conv) and `downsample.1` (bn).
fn to_torch_names() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(r"\.downsample\.conv\.", ".downsample.0.")
        .expect("valid regex")
        .add_pattern(r"\.downsample\.bn\.", ".downsample.1.")
        .expect("valid regex")
}

fn from_torch_names() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(r"\.downsample\.0\.", ".downsample.conv.")
        .expect("valid regex")
        .add_pattern(r"\.downsample\.1\.", ".downsample.bn.")
        .expect("valid regex")
}

/// Serialises a model and its metadata to safetensors bytes.
pub fn to_bytes(model: &Model, meta: &WeightsMeta) -> Result<Vec<u8>> {
    let json = serde_json::to_string(meta).expect("metadata serialises");
    let mut store = SafetensorsStore::from_bytes(None)
        .clear_metadata()
        .metadata(META_KEY, json)
        .skip_enum_variants(true)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(to_torch_names());
    model
        .net
        .valid()
        .save_into(&mut store)
        .map_err(|e| Error::Unsupported(format!("cannot serialise weights: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| Error::Unsupported(format!("cannot serialise weights: {e}")))?;
    add_batch_counters(bytes, meta)
}

/// PyTorch's BatchNorm has a `num_batches_tracked` buffer that burn does not keep; add it so a
/// strict `load_state_dict` accepts the file.
fn add_batch_counters(bytes: Vec<u8>, meta: &WeightsMeta) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let parsed = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Unsupported(format!("re-reading weights: {e}")))?;
    let bn: Vec<String> = parsed
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_suffix(".running_var")
                .map(|p| format!("{p}.num_batches_tracked"))
        })
        .collect();
    if bn.is_empty() {
        return Ok(bytes);
    }
    let zero = 0i64.to_le_bytes();
    let mut views: Vec<(String, TensorView<'_>)> = parsed.tensors().into_iter().collect();
    for name in bn {
        views.push((
            name,
            TensorView::new(Dtype::I64, vec![], &zero).expect("scalar view"),
        ));
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut md = std::collections::HashMap::new();
    md.insert(
        META_KEY.to_string(),
        serde_json::to_string(meta).expect("metadata serialises"),
    );
    safetensors::serialize(views, Some(md))
        .map_err(|e| Error::Unsupported(format!("cannot serialise weights: {e}")))
}

/// Saves a model; returns the SHA-256 of the file written.
pub fn save(model: &Model, meta: &WeightsMeta, path: &Path) -> Result<String> {
    let bytes = to_bytes(model, meta)?;
    crate::io::write_atomic(path, &bytes, None)?;
    Ok(crate::io::sha256_hex(&bytes))
}

/// A loaded weights file.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The model.
    pub model: Model,
    /// Its metadata (synthesised from the given spec for foreign files).
    pub meta: WeightsMeta,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

/// Reads the nnmark metadata of a safetensors file, if it has any.
pub fn read_meta(path: &Path, bytes: &[u8]) -> Result<Option<WeightsMeta>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| Error::format(path, format!("unreadable nnmark metadata: {e}"))),
    }
}

fn apply_errors(path: &Path, spec: &ModelSpec, result: burn::store::ApplyResult) -> Result<()> {
    let mut problems = Vec::new();
    if !result.errors.is_empty() {
        problems.push(format!(
            "{} tensor(s) do not fit: {}",
            result.errors.len(),
            result
                .errors
                .iter()
                .take(3)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !result.missing.is_empty() {
        problems.push(format!(
            "missing {}",
            result
                .missing
                .iter()
                .take(4)
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let unused: Vec<&String> = result
        .unused
        .iter()
        .filter(|u| !u.ends_with("num_batches_tracked"))
        .collect();
    if !unused.is_empty() {
        problems.push(format!(
            "unexpected {}",
            unused
                .iter()
                .take(4)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Weights {
            path: path.to_path_buf(),
            problem: format!(
                "does not hold a {} model with {} classes for {} inputs: {}",
                spec.architecture,
                spec.num_classes,
                spec.input,
                problems.join("; ")
            ),
        })
    }
}

/// A store error while applying tensors: the file does not fit the requested model.
fn mismatch(path: &Path, spec: &ModelSpec, e: impl std::fmt::Display) -> Error {
    let mut detail = e.to_string();
    if detail.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| detail.is_char_boundary(i))
            .unwrap_or(0);
        detail.truncate(cut);
        detail.push_str("...");
    }
    Error::Weights {
        path: path.to_path_buf(),
        problem: format!(
            "does not hold a {} model with {} classes for {} inputs: {detail}",
            spec.architecture, spec.num_classes, spec.input
        ),
    }
}

/// Float weights as F32, checked: PyTorch's `.half()`, `.bfloat16()` and `.double()` files
/// are widened or narrowed to F32 (burn's CPU backend computes in F32 and used to panic on
/// them later), and a non-finite value is refused with the tensor's name. Integer tensors
/// (BatchNorm's `num_batches_tracked`) pass unchanged. Returns the bytes unchanged when every
/// float tensor was F32 already.
fn normalise_floats(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let bad = |problem: String| Error::Weights {
        path: path.to_path_buf(),
        problem,
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let parsed = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let mut converted: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut changed = false;
    for (name, view) in parsed.tensors() {
        let data = view.data();
        let values: Option<Vec<f32>> = match view.dtype() {
            Dtype::F32 => Some(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F16 => Some(
                data.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => Some(
                data.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::F64 => Some(
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
            ),
            _ => None,
        };
        match values {
            Some(v) => {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!(
                        "tensor '{name}' holds a non-finite value ({}) at element {i}; refusing a model that cannot compute",
                        v[i]
                    )));
                }
                changed |= view.dtype() != Dtype::F32;
                let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                converted.push((name, Dtype::F32, view.shape().to_vec(), le));
            }
            None => converted.push((name, view.dtype(), view.shape().to_vec(), data.to_vec())),
        }
    }
    if !changed {
        return Ok(bytes);
    }
    tracing::info!(file = %path.display(), "converted floating-point weights to F32");
    let views: Vec<(String, TensorView<'_>)> = converted
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(format!("tensor '{name}': {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, header.metadata().clone())
        .map_err(|e| bad(format!("cannot rewrite the weights as F32: {e}")))
}

/// A `.pth` file's tensors with every float one as F32 and finite, like [`normalise_floats`]
/// does for safetensors: `torch.save` after `.half()`, `.bfloat16()` or `.double()` stores
/// those types, which burn's CPU backend accepts on loading and panics on when computing.
fn pth_tensors_as_f32(
    path: &Path,
    store: &mut PytorchStore,
) -> Result<Vec<burn::store::burn_pack::Tensor>> {
    use burn::store::bridge;
    let bad = |problem: String| Error::Weights {
        path: path.to_path_buf(),
        problem,
    };
    let tensors: Vec<_> = store
        .get_all_tensors()
        .map_err(|e| bad(format!("not a readable PyTorch file: {e}")))?
        .values()
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !t.dtype.is_float() {
            out.push(t);
            continue;
        }
        let (name, param_id) = (t.name.clone(), t.param_id);
        let data = bridge::into_data(t)
            .map_err(|e| bad(format!("tensor '{name}' cannot be read: {e}")))?
            .convert::<f32>();
        let values = data
            .as_slice::<f32>()
            .map_err(|e| bad(format!("tensor '{name}' cannot be read as floats: {e:?}")))?;
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "tensor '{name}' holds a non-finite value ({}) at element {i}; refusing a model that cannot compute",
                values[i]
            )));
        }
        out.push(bridge::from_data(data, name, param_id));
    }
    Ok(out)
}

/// Loads a weights file. nnmark files describe themselves; a foreign file (PyTorch
/// `state_dict` as safetensors or `.pth`) needs `spec`. When both exist they must agree.
pub fn load(path: &Path, spec: Option<&ModelSpec>, device: &Device) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = crate::io::sha256_hex(&bytes);
    let is_pth = path.extension().is_some_and(|e| e == "pth" || e == "pt");
    let stored = if is_pth {
        None
    } else {
        read_meta(path, &bytes)?
    };
    let meta = match (stored, spec) {
        (Some(m), Some(s))
            if m.spec.architecture != s.architecture
                || m.spec.num_classes != s.num_classes
                || m.spec.input != s.input =>
        {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                problem: format!(
                    "holds a {} model ({} classes, {} inputs) but a {} model ({} classes, {} inputs) was asked for",
                    m.spec.architecture,
                    m.spec.num_classes,
                    m.spec.input,
                    s.architecture,
                    s.num_classes,
                    s.input
                ),
            });
        }
        (Some(m), _) => m,
        (None, Some(s)) => WeightsMeta::new(s.clone(), "unknown", 0),
        (None, None) => {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                problem: "has no nnmark metadata; say which architecture it holds (--arch)".into(),
            });
        }
    };
    // A std of 0 (or a non-finite statistic) in the metadata would turn every input into
    // NaN or infinity: every answer garbage, silently.
    let n = &meta.spec.normalization;
    if let Some((what, v)) = n
        .mean
        .iter()
        .map(|&m| ("mean", m))
        .chain(n.std.iter().map(|&s| ("std", s)))
        .find(|&(what, v)| !v.is_finite() || (what == "std" && v <= 0.0))
    {
        return Err(Error::Weights {
            path: path.to_path_buf(),
            problem: format!(
                "normalisation {what} {v} in its metadata is unusable (a std must be positive and finite, a mean finite)"
            ),
        });
    }
    let mut model = Model::new(meta.spec.clone(), device)?;
    let result = if is_pth {
        let mut store = PytorchStore::from_file(path)
            .skip_enum_variants(true)
            .remap(from_torch_names())
            .allow_partial(true);
        let tensors = pth_tensors_as_f32(path, &mut store)?;
        model
            .net
            .apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true)
    } else {
        let bytes = normalise_floats(path, bytes)?;
        let mut store = SafetensorsStore::from_bytes(Some(bytes))
            .skip_enum_variants(true)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(from_torch_names())
            .allow_partial(true);
        model
            .net
            .load_from(&mut store)
            .map_err(|e| mismatch(path, &meta.spec, e))?
    };
    apply_errors(path, &meta.spec, result)?;
    Ok(LoadedModel {
        model,
        meta,
        sha256,
    })
}
