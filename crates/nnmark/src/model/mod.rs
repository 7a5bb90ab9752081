//! Classifier architectures, one small file each, behind one [`Network`] enum so training,
//! evaluation and storage are written once.

mod irnn;
mod lenet;
mod mlp;
mod mnist_cnn;
mod resnet;

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use irnn::Irnn;
pub use lenet::LeNet;
pub use mlp::Mlp;
pub use mnist_cnn::MnistCnn;
pub(crate) use resnet::RESNET_WIDTH;
pub use resnet::ResNet;

use crate::data::{Dataset, ImageShape};
use crate::error::{Error, Result};

/// The architectures nnmark builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// MLP 784-128-64-C.
    Mlp,
    /// LeNet-5.
    Lenet,
    /// Keras `mnist_cnn`.
    MnistCnn,
    /// ResNet-18 at base width 16.
    Resnet,
    /// ReLU RNN with identity-initialised recurrence, one image row per step.
    Irnn,
    /// A model trained outside nnmark (a PyTorch user's own network, marked with a key from
    /// the Python package): nnmark checks it through ONNX, an endpoint or a callable, and has
    /// no network of its own for it.
    External,
}

impl Architecture {
    /// Whether training this architecture may draw from burn's process-global random number
    /// generator (dropout), so that two runs at once would interleave their draws. Only the
    /// architectures whose concurrent training is tested bit for bit against training alone
    /// (the MLP and LeNet: no dropout) answer false; the others are treated as drawing.
    pub fn draws_while_training(&self) -> bool {
        !matches!(self, Architecture::Mlp | Architecture::Lenet)
    }

    /// Every architecture nnmark builds, for help texts (not [`Architecture::External`]).
    pub const ALL: [Architecture; 5] = [
        Architecture::Mlp,
        Architecture::Lenet,
        Architecture::MnistCnn,
        Architecture::Resnet,
        Architecture::Irnn,
    ];

    /// The name used on the command line and in files.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Mlp => "mlp",
            Architecture::Lenet => "lenet",
            Architecture::MnistCnn => "mnist-cnn",
            Architecture::Resnet => "resnet",
            Architecture::Irnn => "irnn",
            Architecture::External => "external",
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Architecture {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "external" {
            return Ok(Architecture::External);
        }
        Architecture::ALL
            .into_iter()
            .find(|a| {
                a.name() == s
                    || (s == "cnn" && *a == Architecture::MnistCnn)
                    || (s == "resnet18" && *a == Architecture::Resnet)
            })
            .ok_or_else(|| {
                let names: Vec<_> = Architecture::ALL.iter().map(|a| a.name()).collect();
                Error::invalid("model", s, format!("known models: {}", names.join(", ")))
            })
    }
}

/// The network itself: one variant per architecture. Saved without the variant name so
/// parameter paths match PyTorch's (`conv1.weight`, not `Lenet.conv1.weight`).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Network {
    /// See [`Mlp`].
    Mlp(Mlp),
    /// See [`LeNet`].
    Lenet(LeNet),
    /// See [`MnistCnn`].
    MnistCnn(MnistCnn),
    /// See [`ResNet`].
    Resnet(ResNet),
    /// See [`Irnn`].
    Irnn(Irnn),
}

impl Network {
    /// A freshly initialised network (initialisation draws from the device's seeded RNG).
    pub fn new(
        arch: Architecture,
        input: ImageShape,
        classes: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(match arch {
            Architecture::Mlp => Network::Mlp(Mlp::new(input.numel(), classes, device)),
            Architecture::Lenet => Network::Lenet(LeNet::new(input, classes, device)?),
            Architecture::MnistCnn => Network::MnistCnn(MnistCnn::new(input, classes, device)?),
            Architecture::Resnet => {
                Network::Resnet(ResNet::new(input, classes, RESNET_WIDTH, device))
            }
            Architecture::Irnn => Network::Irnn(Irnn::new(input, classes, device)),
            Architecture::External => {
                return Err(Error::invalid(
                    "model",
                    "external",
                    "a model trained outside nnmark has no nnmark network: check it as an ONNX file, an endpoint or (in Python) a callable",
                ));
            }
        })
    }

    /// Logits for a normalised (N, C, H, W) batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Mlp(m) => m.forward(x),
            Network::Lenet(m) => m.forward(x),
            Network::MnistCnn(m) => m.forward(x),
            Network::Resnet(m) => m.forward(x),
            Network::Irnn(m) => m.forward(x),
        }
    }

    /// The last hidden layer's activations for a normalised batch: the inputs of
    /// [`Network::head_mut`]'s layer.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Mlp(m) => m.features(x),
            Network::Lenet(m) => m.features(x),
            Network::MnistCnn(m) => m.features(x),
            Network::Resnet(m) => m.features(x),
            Network::Irnn(m) => m.features(x),
        }
    }

    /// The final classification layer.
    pub fn head_mut(&mut self) -> &mut burn::nn::Linear {
        match self {
            Network::Mlp(m) => m.head_mut(),
            Network::Lenet(m) => m.head_mut(),
            Network::MnistCnn(m) => m.head_mut(),
            Network::Resnet(m) => m.head_mut(),
            Network::Irnn(m) => m.head_mut(),
        }
    }

    /// The convolution layers by PyTorch module name (`conv2`, `layer2.0.conv1`,
    /// `layer2.0.downsample.0`), in forward order. Empty for MLP and IRNN.
    pub fn conv_layers(&self) -> Vec<(String, &Conv2d)> {
        match self {
            Network::Mlp(_) | Network::Irnn(_) => Vec::new(),
            Network::Lenet(m) => m.conv_layers(),
            Network::MnistCnn(m) => m.conv_layers(),
            Network::Resnet(m) => m.conv_layers(),
        }
    }

    /// The weight `[out, in, kh, kw]` of the convolution named `name` (see
    /// [`Network::conv_layers`]), or an error listing the names that exist.
    pub fn conv_weight(&self, name: &str) -> Result<Tensor<4>> {
        let layers = self.conv_layers();
        if layers.is_empty() {
            return Err(Error::invalid(
                "layer",
                name,
                "this model has no convolution layers",
            ));
        }
        match layers.iter().find(|(n, _)| n == name) {
            Some((_, conv)) => Ok(conv.weight.val()),
            None => Err(Error::invalid(
                "layer",
                name,
                format!(
                    "no such convolution layer; this model has: {}",
                    layers
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// Per-channel input normalisation `(x - mean) / std`, applied inside [`Model::forward`] so every
/// caller (and every attack gradient) works in [0, 1] pixel space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// The identity (no normalisation) for `channels` channels.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Mean and standard deviation per channel of a data set's pixels.
    pub fn from_dataset(data: &Dataset) -> Self {
        let c = data.shape.channels;
        let plane = data.shape.height * data.shape.width;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for (i, &v) in data.pixels().iter().enumerate() {
            let ch = (i / plane) % c;
            sum[ch] += v as f64;
            sq[ch] += (v as f64) * (v as f64);
        }
        let n = (data.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / n - m * m).max(1e-12)).sqrt() as f32)
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }
}

/// What a model is: architecture, input, classes and normalisation. Stored with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Architecture.
    pub architecture: Architecture,
    /// Input image shape.
    pub input: ImageShape,
    /// Number of output classes.
    pub num_classes: usize,
    /// Input normalisation.
    pub normalization: Normalization,
}

/// A network with its spec: the unit everything in nnmark trains, attacks and verifies.
#[derive(Debug, Clone)]
pub struct Model {
    /// What this model is.
    pub spec: ModelSpec,
    /// Its weights.
    pub net: Network,
}

impl Model {
    /// A freshly initialised model drawn from `seed` (see [`crate::train::rng_guard`]).
    ///
    /// burn initialises parameters lazily, at their first use: a model handed straight to
    /// [`crate::train::train`] draws its weights there, just after the run seeds the generator
    /// with the training seed (nnmark's flows use one seed for both, so the weights follow
    /// it). Call [`Model::materialise`] under the guard to fix them here instead.
    pub fn seeded(spec: ModelSpec, seed: u64, device: &Device) -> Result<Self> {
        let _rng = crate::train::rng_guard();
        device.seed(seed);
        Self::new(spec, device)
    }

    /// Draws every parameter that is still lazily initialised, in the order the module
    /// declares them. burn initialises parameters at their first use, not when the network is
    /// built, so the values a fresh model gets are drawn from burn's global generator as it
    /// stands at that first use (in [`crate::train::train`]: just after it seeds the run).
    pub fn materialise(&self) {
        struct Touch;
        impl burn::module::ModuleVisitor for Touch {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                let _ = param.val();
            }
        }
        use burn::module::Module;
        self.net.visit(&mut Touch);
    }

    /// A freshly initialised model, drawn from burn's random number generator as it stands
    /// (seed it first under [`crate::train::rng_guard`], or use [`Model::seeded`]).
    pub fn new(spec: ModelSpec, device: &Device) -> Result<Self> {
        if spec.normalization.mean.len() != spec.input.channels
            || spec.normalization.std.len() != spec.input.channels
        {
            return Err(Error::invalid(
                "normalization",
                format!("{:?}", spec.normalization),
                format!(
                    "needs one mean and std per channel ({})",
                    spec.input.channels
                ),
            ));
        }
        let net = Network::new(spec.architecture, spec.input, spec.num_classes, device)?;
        Ok(Self { spec, net })
    }

    /// Logits for a batch of [0, 1] images (normalisation applied here).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.net.forward(self.normalize(x))
    }

    /// Applies the model's input normalisation.
    pub fn normalize(&self, x: Tensor<4>) -> Tensor<4> {
        let n = &self.spec.normalization;
        if n.mean.iter().all(|&m| m == 0.0) && n.std.iter().all(|&s| s == 1.0) {
            return x;
        }
        let c = n.mean.len();
        let device = x.device();
        let mean = Tensor::<1>::from_floats(n.mean.as_slice(), &device).reshape([1, c, 1, 1]);
        let std = Tensor::<1>::from_floats(n.std.as_slice(), &device).reshape([1, c, 1, 1]);
        (x - mean) / std
    }

    /// Checks that a data set fits this model (shape and labels).
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        if data.shape != self.spec.input {
            return Err(Error::Data {
                source_name: data.name.clone(),
                problem: format!(
                    "images are {} but the {} model takes {}",
                    data.shape, self.spec.architecture, self.spec.input
                ),
            });
        }
        if let Some(&l) = data
            .labels()
            .iter()
            .find(|&&l| l as usize >= self.spec.num_classes)
        {
            return Err(Error::Data {
                source_name: data.name.clone(),
                problem: format!(
                    "label {l} is out of range for a model with {} classes",
                    self.spec.num_classes
                ),
            });
        }
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.net.num_params()
    }

    /// The model moved to another device (e.g. with or without autodiff).
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            spec: self.spec,
            net: self.net.to_device(device),
        }
    }
}
