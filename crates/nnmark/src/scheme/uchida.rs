//! Uchida, Nagai, Sakazawa, Satoh 2017, "Embedding watermarks into deep neural networks": a
//! white-box scheme. T bits b go into one convolution layer through a regulariser: with w the
//! layer's kernel averaged over its output filters and flattened (length M = S²·D) and a
//! secret M×T matrix X, training adds λ·E_R with E_R = Σⱼ BCE(σ(wᵀX)ⱼ, bⱼ) to the loss.
//! Extraction reads b̂ = 1[wᵀX ≥ 0] from the suspect's weights; the verdict counts equal bits
//! against a fair-coin null. Embedding works from scratch, by fine-tuning, and by distillation
//! (a new model trained on a teacher's predictions; see [`crate::scheme::EmbedMode`]).
//!
//! Improvement (option `owner`): X and b are drawn from a ChaCha20 stream seeded with
//! SHA-256("nnmark-uchida-v1" ‖ owner ‖ seed), and the key records that. Verification
//! regenerates them and refuses a key whose X does not derive from its owner id, so a third
//! party cannot fit an X to someone else's model and claim it (the ambiguity attack of Fan et
//! al. 2019): with X fixed by a hash, forging means searching seeds for a hash whose X happens
//! to read the right bits out of the model, 2⁻ᵀ per try.

use rand::seq::index::sample;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Access, EmbedContext, Extraction, KeyMaterial, KeygenContext, Suspect, TypedScheme};
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, KeyTensor};
use crate::model::{Architecture, Model};
use crate::train::{TrainExtras, TrainObserver, TrainReport, train_with};
use crate::verdict::NullModel;

/// How the secret matrix X is drawn (the paper's three kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatrixKind {
    /// Every entry N(0, 1).
    Random,
    /// Each column selects one weight (a one at a random row, distinct per column).
    Direct,
    /// Each column compares two weights (+1 and −1 at two random rows).
    Diff,
}

/// Uchida et al.'s parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UchidaParams {
    /// Convolution layer (PyTorch module name); default: `conv2` for LeNet and mnist-cnn,
    /// `layer2.0.conv2` for the ResNet.
    pub layer: Option<String>,
    /// Bits T; default min(256, M/2): the paper's 256 bits took 44% of its layer's M = 576;
    /// a small layer gets the same ratio (LeNet's conv2, M = 150, carries 75).
    pub bits: Option<usize>,
    /// Regulariser weight λ (the paper: 0.01).
    pub lambda: f64,
    /// Kind of X.
    pub matrix: MatrixKind,
    /// Owner id: derive X and b from SHA-256(owner ‖ seed) (the ambiguity-attack defence).
    pub owner: Option<String>,
    /// Text carried in the first 8·len bits (the rest random); default all random.
    pub message: Option<String>,
}

impl Default for UchidaParams {
    fn default() -> Self {
        Self {
            layer: None,
            bits: None,
            lambda: 0.01,
            matrix: MatrixKind::Random,
            owner: None,
            message: None,
        }
    }
}

/// The scheme.
pub struct Uchida;

/// The layer Uchida marks by default in each architecture.
pub(crate) fn default_layer(arch: Architecture) -> Option<&'static str> {
    match arch {
        Architecture::Lenet | Architecture::MnistCnn => Some("conv2"),
        Architecture::Resnet => Some("layer2.0.conv2"),
        Architecture::Mlp | Architecture::Irnn | Architecture::External => None,
    }
}

fn derivation_seed(owner: &str, seed: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"nnmark-uchida-v1");
    h.update((owner.len() as u64).to_le_bytes());
    h.update(owner.as_bytes());
    h.update(seed.to_le_bytes());
    h.finalize().into()
}

/// X (row-major M×T) and the bits b, from the parameters and seed alone.
fn draw(p: &UchidaParams, m: usize, t: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng: Box<dyn RngCore> = match &p.owner {
        Some(owner) => Box::new(ChaCha20Rng::from_seed(derivation_seed(owner, seed))),
        None => Box::new(ChaCha8Rng::seed_from_u64(seed ^ 0x0C41_DA17)),
    };
    let mut x = vec![0f32; m * t];
    match p.matrix {
        MatrixKind::Random => {
            for v in &mut x {
                *v = rng.sample(StandardNormal);
            }
        }
        MatrixKind::Direct => {
            for (j, i) in sample(&mut rng, m, t).into_iter().enumerate() {
                x[i * t + j] = 1.0;
            }
        }
        MatrixKind::Diff => {
            for j in 0..t {
                let pair = sample(&mut rng, m, 2);
                x[pair.index(0) * t + j] = 1.0;
                x[pair.index(1) * t + j] = -1.0;
            }
        }
    }
    let mut bits: Vec<f32> = (0..t).map(|_| rng.random_range(0..2u8) as f32).collect();
    if let Some(msg) = &p.message {
        for (i, byte) in msg.bytes().enumerate() {
            for k in 0..8 {
                bits[i * 8 + k] = ((byte >> (7 - k)) & 1) as f32;
            }
        }
    }
    (x, bits)
}

/// wᵀX for a kernel `[out, in, kh, kw]`, as a `[1, T]` tensor (differentiable).
fn project(weight: burn::tensor::Tensor<4>, x: &[f32], t: usize) -> burn::tensor::Tensor<2> {
    use burn::tensor::{Tensor, TensorData};
    let [_, cin, kh, kw] = weight.dims();
    let m = cin * kh * kw;
    let w: Tensor<2> = weight.mean_dim(0).reshape([1, m]);
    let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [m, t]), &w.device());
    w.matmul(xt)
}

impl Uchida {
    fn layer_of(p: &UchidaParams, arch: Architecture) -> Result<String> {
        match (&p.layer, default_layer(arch)) {
            (Some(l), _) => Ok(l.clone()),
            (None, Some(l)) => Ok(l.to_string()),
            (None, None) => Err(Error::invalid(
                "model",
                arch,
                "Uchida's scheme marks a convolution layer and this architecture has none",
            )),
        }
    }

    fn key_arrays<'k>(
        p: &UchidaParams,
        key: &'k KeyFile,
    ) -> Result<(String, &'k KeyTensor, &'k KeyTensor)> {
        let layer = Self::layer_of(p, key.meta.spec.architecture)?;
        let x = key.extra_tensor("x")?;
        let bits = key.extra_tensor("bits")?;
        if x.shape.len() != 2 || bits.shape != [x.shape[1]] {
            return Err(Error::invalid(
                "key",
                format!("x {:?}, bits {:?}", x.shape, bits.shape),
                "Uchida keys hold an M×T matrix and T bits",
            ));
        }
        // The ambiguity-attack defence: X and b must be what the owner id and seed produce.
        if p.owner.is_some() {
            let (m, t) = (x.shape[0], x.shape[1]);
            let (x2, b2) = draw(p, m, t, key.meta.seed);
            if x2 != x.values || b2 != bits.values {
                return Err(Error::invalid(
                    "key",
                    "uchida",
                    "its matrix X or bits do not derive from SHA-256(owner ‖ seed) as the key claims; it was altered or fitted to a model",
                ));
            }
        }
        Ok((layer, x, bits))
    }
}

impl TypedScheme for Uchida {
    type Params = UchidaParams;

    fn name(&self) -> &'static str {
        "uchida"
    }

    fn summary(&self) -> &'static str {
        "Uchida et al. 2017 (white-box): bits in a conv layer's mean kernel through a regulariser"
    }

    fn access(&self) -> Access {
        Access::WhiteBox
    }

    fn defaults(&self) -> UchidaParams {
        UchidaParams::default()
    }

    fn check(&self, p: &mut UchidaParams) -> Result<()> {
        if !(p.lambda > 0.0 && p.lambda.is_finite()) {
            return Err(Error::invalid(
                "uchida parameter lambda",
                p.lambda,
                "must be a positive number (the paper: 0.01)",
            ));
        }
        if p.bits == Some(0) {
            return Err(Error::invalid(
                "uchida parameter bits",
                0,
                "must be at least 1",
            ));
        }
        if let Some(m) = &p.message
            && let Some(t) = p.bits
            && m.len() * 8 > t
        {
            return Err(Error::invalid(
                "uchida parameter message",
                m,
                format!("needs {} bits but only {t} are embedded", m.len() * 8),
            ));
        }
        Ok(())
    }

    fn keygen(&self, p: &UchidaParams, ctx: &KeygenContext<'_>) -> Result<KeyMaterial> {
        // The key records the bit count and layer it settles on.
        let mut p = p.clone();
        let layer = Self::layer_of(&p, ctx.spec.architecture)?;
        let [_, cin, kh, kw] = match ctx.clean {
            Some(m) => m.net.conv_weight(&layer)?.dims(),
            None => {
                // A throwaway model for the layer's shape: its lazily drawn weights take from
                // burn's global generator, so under the lock like every other draw.
                let _rng = crate::train::rng_guard();
                Model::new(ctx.spec.clone(), ctx.device)?
                    .net
                    .conv_weight(&layer)?
                    .dims()
            }
        };
        let m = cin * kh * kw;
        let t = match p.bits {
            Some(t) if t > m => {
                return Err(Error::invalid(
                    "uchida parameter bits",
                    t,
                    format!(
                        "T = {t} exceeds M = {m} (the kernel weights of layer '{layer}', {cin}×{kh}×{kw}); wᵀX cannot take every sign pattern; use bits ≤ {m} or a wider layer"
                    ),
                ));
            }
            Some(t) => t,
            None => (m / 2).clamp(1, 256),
        };
        if let Some(msg) = &p.message
            && msg.len() * 8 > t
        {
            return Err(Error::invalid(
                "uchida parameter message",
                msg,
                format!("needs {} bits but only {t} are embedded", msg.len() * 8),
            ));
        }
        // Record what was resolved, so the key alone says how to read the mark.
        p.layer = Some(layer);
        p.bits = Some(t);
        let (x, bits) = draw(&p, m, t, ctx.seed);
        let mut extra = std::collections::BTreeMap::new();
        extra.insert(
            "x".to_string(),
            KeyTensor {
                shape: vec![m, t],
                values: x,
            },
        );
        extra.insert(
            "bits".to_string(),
            KeyTensor {
                shape: vec![t],
                values: bits,
            },
        );
        Ok(KeyMaterial {
            triggers: None,
            nonces: None,
            extra,
            params: Some(serde_json::to_value(&p).expect("serialises")),
        })
    }

    fn embed(
        &self,
        p: &UchidaParams,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)> {
        let layer = Self::layer_of(p, ctx.base.spec.architecture)?;
        ctx.base.net.conv_weight(&layer)?;
        let x = &key.extra["x"];
        let bits = key.extra["bits"].values.clone();
        let t = x.shape[1];
        let lambda = p.lambda as f32;
        let regularizer = |model: &Model| {
            use burn::tensor::{Tensor, TensorData, activation::softplus};
            let w = model
                .net
                .conv_weight(&layer)
                .expect("the layer was checked before training");
            let y = project(w, &x.values, t);
            let b = Tensor::<2>::from_data(TensorData::new(bits.clone(), [1, t]), &y.device());
            // BCE(σ(y), b) = softplus(y) − b·y, summed over the bits.
            ((softplus(y.clone(), 1.0) - y * b).sum()) * lambda
        };
        train_with(
            ctx.base,
            ctx.data,
            ctx.train,
            ctx.device,
            observer,
            TrainExtras {
                trigger_mix: None,
                regularizer: Some(&regularizer),
                stop_when: None,
                ..Default::default()
            },
        )
    }

    fn extract(
        &self,
        p: &UchidaParams,
        key: &KeyFile,
        suspect: &mut Suspect<'_>,
    ) -> Result<Extraction> {
        let (layer, x, bits) = Self::key_arrays(p, key)?;
        let model = suspect.model().ok_or_else(|| {
            Error::invalid(
                "suspect",
                "query interface",
                "Uchida's scheme is white-box: it reads the suspect's weights",
            )
        })?;
        let weight = model.net.conv_weight(&layer)?;
        let [_, cin, kh, kw] = weight.dims();
        let (m, t) = (x.shape[0], x.shape[1]);
        if cin * kh * kw != m {
            return Err(Error::invalid(
                "suspect",
                format!("layer {layer} with {cin}×{kh}×{kw} kernels"),
                format!("the key's matrix X needs M = {m} kernel weights"),
            ));
        }
        let y: Vec<f32> = project(weight, &x.values, t)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("float tensor");
        let answers: Vec<usize> = y.iter().map(|&v| usize::from(v >= 0.0)).collect();
        let matches = answers
            .iter()
            .zip(&bits.values)
            .filter(|&(&a, &b)| a as f32 == b)
            .count();
        let decoded = p.message.as_ref().map(|msg| {
            answers
                .chunks(8)
                .take(msg.len())
                .map(|c| {
                    let byte = c.iter().fold(0u8, |a, &b| (a << 1) | b as u8);
                    if byte.is_ascii_graphic() || byte == b' ' {
                        byte as char
                    } else {
                        '?'
                    }
                })
                .collect()
        });
        Ok(Extraction {
            queries: t as u64,
            matches: matches as u64,
            answers,
            decoded,
        })
    }

    /// Bits of an unmarked layer are fair coins.
    fn analytic_null(&self, _p: &UchidaParams, _key: &KeyFile) -> NullModel {
        NullModel::FairCoin
    }

    /// Exact when the bits are random (no message: each key bit is a fair coin drawn
    /// independently of the suspect, whatever it reads off its weights) or X is Gaussian (for
    /// non-zero weights each column's projection is a centred normal variable, its sign a fair
    /// coin, independent across columns). A message read through a direct or difference
    /// matrix is neither: a model whose weights lean one way reads biased bits.
    fn null_is_exact(&self, p: &UchidaParams, _key: &KeyFile) -> bool {
        p.matrix == MatrixKind::Random || p.message.is_none()
    }

    fn message(&self, p: &UchidaParams, _key: &KeyFile) -> Result<Option<String>> {
        Ok(p.message.clone())
    }

    fn message_chance(&self, p: &UchidaParams, _key: &KeyFile, p0: f64) -> Result<Option<f64>> {
        Ok(p.message.as_ref().map(|m| p0.powi(8 * m.len() as i32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_derivation_is_deterministic_and_owner_specific() {
        let p = UchidaParams {
            owner: Some("alice".into()),
            ..Default::default()
        };
        let (x1, b1) = draw(&p, 50, 20, 7);
        let (x2, b2) = draw(&p, 50, 20, 7);
        assert_eq!((&x1, &b1), (&x2, &b2));
        let q = UchidaParams {
            owner: Some("mallory".into()),
            ..Default::default()
        };
        assert_ne!(draw(&q, 50, 20, 7).0, x1);
        assert_ne!(draw(&p, 50, 20, 8).0, x1);
        let direct = UchidaParams {
            matrix: MatrixKind::Direct,
            ..Default::default()
        };
        let (xd, _) = draw(&direct, 30, 30, 1);
        // A permutation matrix: one 1 per column and per row.
        assert_eq!(xd.iter().filter(|&&v| v == 1.0).count(), 30);
        for j in 0..30 {
            assert_eq!((0..30).filter(|&i| xd[i * 30 + j] == 1.0).count(), 1);
        }
        let msg = UchidaParams {
            message: Some("Hi".into()),
            ..Default::default()
        };
        let (_, bits) = draw(&msg, 100, 64, 1);
        let h: Vec<f32> = [0, 1, 0, 0, 1, 0, 0, 0].iter().map(|&v| v as f32).collect();
        assert_eq!(&bits[..8], &h[..]);
    }
}
