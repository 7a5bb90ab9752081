//! Training: SGD (momentum, Nesterov, weight decay) and Adam, step and cosine schedules,
//! cross-entropy, early stopping on a validation split, evaluation and input gradients.
//!
//! Reproducibility: a run is a function of its data, [`TrainConfig`] (seed included) and the
//! initial model, and does not depend on the number of threads (tested: LeNet, mnist_cnn and
//! the ResNet on one and three threads; the MLP run twice). burn's random number generator is
//! global to the process, seeded by [`train`] and by whoever builds the initial model
//! ([`Model::seeded`]), and dropout draws from it while training: two trainings running at
//! once in one process would draw in an unpredictable interleaving. Every seeded sequence of
//! draws in nnmark (seed and initialise, a whole training run) therefore holds
//! [`rng_guard`], so trainings in one process run one at a time and the same seed gives the
//! same model whatever other threads do. [`train_many`] runs several trainings side by side
//! where none draws while training (the MLP and LeNet), drawing their lazily initialised
//! weights first under the guard: bit for bit the models [`train`] gives (tested).

mod batch;
mod eval;
mod grad;
mod sgd;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use batch::images_tensor;
pub(crate) use eval::model_device;
pub use eval::{Evaluation, evaluate, predict, predict_proba};
pub use grad::{fgsm, fgsm_step, input_gradients};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;

/// Optimiser and its hyper-parameters. PyTorch semantics: momentum without dampening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerConfig {
    /// Stochastic gradient descent.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor (0 for none).
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 weight decay.
        weight_decay: f64,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// L2 weight decay.
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// SGD with momentum 0.9, without Nesterov or weight decay: PyTorch's usual
    /// `SGD(lr, momentum=0.9)`, the optimiser of the papers' fine-tuning.
    pub fn sgd_momentum(lr: f64) -> Self {
        OptimizerConfig::Sgd {
            lr,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => *lr,
        }
    }

    /// The same optimiser at another base learning rate.
    pub fn with_lr(&self, new: f64) -> Self {
        let mut c = self.clone();
        match &mut c {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => *lr = new,
        }
        c
    }

    /// Adam's default learning rate (PyTorch's).
    pub const ADAM_LR: f64 = 0.001;

    fn build(&self, grad_clip: Option<f64>) -> burn::optim::ModuleOptimizer {
        let clip = grad_clip.map(|c| GradientClippingConfig::Norm(c as f32));
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let optim = burn::optim::ModuleOptimizer::from(sgd::Sgd::new(
                    momentum,
                    nesterov,
                    weight_decay,
                ));
                match clip {
                    Some(c) => optim.with_grad_clipping(c.init()),
                    None => optim,
                }
            }
            OptimizerConfig::Adam { weight_decay, .. } => AdamConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(
                    (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
                )
                .with_grad_clipping(clip.clone())
                .init(),
        }
    }
}

/// Learning-rate schedule over epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to 0 over the run.
    Cosine,
    /// Cosine annealing restarted every `period` epochs (Loshchilov and Hutter's warm
    /// restarts): the rate jumps back to the base rate at each cycle's start, the large steps
    /// that fine-tuning removal attacks rely on.
    Cyclic {
        /// Epochs per cycle.
        period: usize,
    },
}

impl LrSchedule {
    /// The rate for `epoch` (0-based) of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            LrSchedule::Cosine => {
                base * 0.5
                    * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64).cos())
            }
            LrSchedule::Cyclic { period } => {
                let period = period.max(1);
                base * 0.5
                    * (1.0 + (std::f64::consts::PI * (epoch % period) as f64 / period as f64).cos())
            }
        }
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = Error;
    /// `constant`, `cosine`, `cyclic:PERIOD`, or `step:STEP_SIZE:GAMMA`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "schedule",
                s,
                "expected constant, cosine, cyclic:PERIOD or step:STEP_SIZE:GAMMA, e.g. step:5:0.1",
            )
        };
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            _ if s.starts_with("cyclic:") => {
                let period: usize = s["cyclic:".len()..].parse().map_err(|_| bad())?;
                if period == 0 {
                    return Err(bad());
                }
                Ok(LrSchedule::Cyclic { period })
            }
            _ => {
                let rest = s.strip_prefix("step:").ok_or_else(bad)?;
                let (size, gamma) = rest.split_once(':').ok_or_else(bad)?;
                Ok(LrSchedule::Step {
                    step_size: size.parse().map_err(|_| bad())?,
                    gamma: gamma.parse().map_err(|_| bad())?,
                })
            }
        }
    }
}

/// Stop when validation accuracy has not improved for `patience` epochs; keep the best model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Fraction of the training data held out (stratified) for validation.
    pub val_fraction: f64,
}

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Optimiser.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Optional early stopping.
    pub early_stopping: Option<EarlyStopping>,
    /// Seed for initialisation, shuffling and dropout.
    pub seed: u64,
    /// Clip each parameter's gradient to this L2 norm (recurrent nets need it at SGD rates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
}

impl Default for TrainConfig {
    /// SGD (lr 0.03, momentum 0.9), cosine schedule, batch 64, 10 epochs. Measured on the
    /// 8k MNIST sample (seeds 1-3): LeNet 98.0-98.2%, MLP 95.5-95.7%, against 97.1-97.4% and
    /// 93.8-94.3% for the constant lr 0.01 of the PyTorch MNIST example.
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            optimizer: OptimizerConfig::Sgd {
                lr: 0.03,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            },
            schedule: LrSchedule::Cosine,
            early_stopping: None,
            seed: 1,
            grad_clip: None,
        }
    }
}

impl TrainConfig {
    /// Epochs of the recipe that continues from a trained model ([`TrainConfig::for_mode`]).
    pub const FINE_TUNE_EPOCHS: usize = 3;
    /// Learning-rate factor of that recipe.
    pub const FINE_TUNE_LR_SCALE: f64 = 1.0 / 3.0;

    /// The default recipe, or with `fine_tune` the gentler one used when continuing from a
    /// trained model: 3 epochs at a third of the learning rate.
    pub fn for_mode(fine_tune: bool) -> Self {
        let mut c = TrainConfig::default();
        if fine_tune {
            c.epochs = Self::FINE_TUNE_EPOCHS;
            c.optimizer = c
                .optimizer
                .with_lr(c.optimizer.lr() * Self::FINE_TUNE_LR_SCALE);
        }
        c
    }

    /// Fills in what an architecture needs and the settings leave open: the IRNN gets gradient
    /// clipping at norm 1 (measured: at the default SGD rate it diverges within 4 steps
    /// without it).
    pub fn fitted_to(mut self, arch: crate::model::Architecture) -> Self {
        if arch == crate::model::Architecture::Irnn && self.grad_clip.is_none() {
            self.grad_clip = Some(1.0);
        }
        self
    }

    /// Rejects infeasible settings before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", 0, "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size", 0, "must be at least 1"));
        }
        let lr = self.optimizer.lr();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::invalid(
                "learning rate",
                lr,
                "must be a positive number",
            ));
        }
        if let OptimizerConfig::Sgd { momentum, .. } = self.optimizer
            && !(0.0..1.0).contains(&momentum)
        {
            return Err(Error::invalid("momentum", momentum, "must be in [0, 1)"));
        }
        if let Some(c) = self.grad_clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::invalid(
                "gradient clipping norm",
                c,
                "must be a positive number",
            ));
        }
        if let Some(es) = &self.early_stopping
            && !(es.val_fraction > 0.0 && es.val_fraction < 1.0)
        {
            return Err(Error::invalid(
                "validation fraction",
                es.val_fraction,
                "must be in (0, 1)",
            ));
        }
        Ok(())
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    /// 0-based epoch.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (on the fly, with dropout active).
    pub train_accuracy: f64,
    /// Validation accuracy, when early stopping holds out data.
    pub val_accuracy: Option<f64>,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Per-epoch statistics.
    pub epochs: Vec<EpochStats>,
    /// The epoch whose weights were kept (the last, or the best under early stopping).
    pub kept_epoch: usize,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
    /// True when the `stop_when` target was reached (and ended the run, possibly within the
    /// last epoch recorded).
    #[serde(default)]
    pub target_reached: bool,
    /// Optimiser steps taken in all.
    #[serde(default)]
    pub steps: usize,
}

/// Receives progress; the CLI draws a progress bar from it.
pub trait TrainObserver {
    /// A new epoch of `batches` steps begins.
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    /// A step finished with this batch loss and accuracy.
    fn batch_end(&mut self, _epoch: usize, _batch: usize, _loss: f64, _accuracy: f64) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _stats: &EpochStats) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {}

/// Steps between checks of [`TrainExtras::stop_when`] within an epoch.
pub const STOP_CHECK_STEPS: usize = 100;

/// Extra examples appended to every training batch: how trigger-set watermarks are embedded
/// (Adi et al.'s official code appends 2 trigger images to each batch, so a 100-item key is
/// seen hundreds of times per run instead of once per epoch).
#[derive(Debug, Clone, Copy)]
pub struct TriggerMix<'a> {
    /// The trigger inputs and the labels they are to be taught.
    pub triggers: &'a Dataset,
    /// Trigger items appended to each batch, cycling through a shuffled order.
    pub per_batch: usize,
}

/// Everything a watermark adds to ordinary training. Empty by default.
#[derive(Default, Clone, Copy)]
pub struct TrainExtras<'a> {
    /// Trigger items mixed into every batch.
    pub trigger_mix: Option<TriggerMix<'a>>,
    /// A term added to the loss (e.g. Uchida's weight regulariser), given the model being
    /// trained; it must return a one-element tensor on the autodiff device.
    pub regularizer: Option<&'a dyn Fn(&Model) -> Tensor<1>>,
    /// Checked on the current weights every [`STOP_CHECK_STEPS`] steps and after every
    /// epoch: training ends as soon as it returns true (frontier stitching fine-tunes "until
    /// the key is classified as labelled"; on 60k images an epoch is far more than needed).
    pub stop_when: Option<&'a dyn Fn(&Model) -> bool>,
    /// Soft targets, one probability row of `num_classes` per training example (distillation
    /// from a model that reveals its probabilities): the loss is the cross-entropy against
    /// them instead of the labels. Needs no early stopping; mixed-in trigger items keep their
    /// one-hot labels (AIME's anchored fine-tuning: the data follow the clean model, the key
    /// follows the signature).
    pub soft_targets: Option<&'a [f32]>,
}

/// The lock every seeded sequence of draws from burn's process-global random number generator
/// holds: seeding and initialising a model ([`Model::seeded`]), a training run ([`train_with`]),
/// an attack that re-initialises layers. It is re-entrant, so a caller may hold it across
/// several of those (seed, initialise, then train). Code that seeds burn itself should hold it
/// too; a thread that holds it must not wait for another thread that takes it.
pub fn rng_guard() -> parking_lot::ReentrantMutexGuard<'static, ()> {
    static RNG: parking_lot::ReentrantMutex<()> = parking_lot::const_reentrant_mutex(());
    RNG.lock()
}

/// Trains `model` on `data` and returns the trained model (on `device`, without autodiff).
pub fn train(
    model: Model,
    data: &Dataset,
    cfg: &TrainConfig,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<(Model, TrainReport)> {
    train_with(model, data, cfg, device, observer, TrainExtras::default())
}

/// [`train`] with watermark extras: triggers mixed into each batch and/or a loss regulariser.
pub fn train_with(
    model: Model,
    data: &Dataset,
    cfg: &TrainConfig,
    device: &Device,
    observer: &mut dyn TrainObserver,
    extras: TrainExtras<'_>,
) -> Result<(Model, TrainReport)> {
    cfg.validate()?;
    check_inputs(&model, data, cfg, &extras)?;
    // Seeding and every draw of the run, with no other thread drawing in between. A fresh
    // model's parameters are drawn here, just after seeding (where the run's first step would
    // draw them); an architecture without dropout then draws nothing more, so the lock goes
    // and runs on other threads (the evaluation matrix's groups) train at the same time, with
    // the same result as alone (what `train_many` relies on too).
    let rng = rng_guard();
    device.seed(cfg.seed);
    model.materialise();
    let _rng = if model.spec.architecture.draws_while_training() {
        Some(rng)
    } else {
        drop(rng);
        None
    };
    run_training(model, data, cfg, device, observer, extras)
}

/// Trains several models on the same data at once, each with its own recipe (seed, data
/// order, optimiser state), and returns each result in order: **bit for bit** what [`train`]
/// returns for it alone (tested), because each run is the same computation and nnmark's
/// kernels give the same result on any number of threads.
///
/// Small models cannot keep the cores busy one at a time (a LeNet step at batch 64 is a
/// handful of small operations, each its own parallel region); running several side by side
/// fills them. Up to `available_parallelism` runs go at once, each on one core (its kernels
/// on a one-thread pool of its own). Architectures that draw from
/// burn's process-global random number generator while training (dropout: mnist_cnn) are
/// trained one after another instead, since concurrent draws would interleave.
pub fn train_many(
    jobs: Vec<(Model, TrainConfig)>,
    data: &Dataset,
    device: &Device,
) -> Result<Vec<(Model, TrainReport)>> {
    for (model, cfg) in &jobs {
        cfg.validate()?;
        check_inputs(model, data, cfg, &TrainExtras::default())?;
    }
    let draws_while_training = jobs
        .iter()
        .any(|(m, _)| m.spec.architecture.draws_while_training());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    if draws_while_training || workers <= 1 {
        return jobs
            .into_iter()
            .map(|(m, cfg)| train(m, data, &cfg, device, &mut Silent))
            .collect();
    }
    {
        // What `train` does before its first step: seed burn's generator with the run's seed.
        // A fresh model's parameters draw their values at first use, so they are drawn here,
        // under the lock, before the runs go their own ways (each run then draws nothing).
        let _rng = rng_guard();
        for (model, cfg) in &jobs {
            device.seed(cfg.seed);
            model.materialise();
        }
    }
    let slots: Vec<parking_lot::Mutex<Option<(Model, TrainConfig)>>> = jobs
        .into_iter()
        .map(|j| parking_lot::Mutex::new(Some(j)))
        .collect();
    type Slot<T> = parking_lot::Mutex<Option<T>>;
    let results: Vec<Slot<Result<(Model, TrainReport)>>> = slots
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Each worker's kernels run on a one-thread pool of its own: one small model's operations
    // split across the cores mostly wait for each other, and runs sharing one pool queue behind
    // each other's; one core per run keeps every core busy with useful work. The results do
    // not depend on the thread count.
    let pools = (0..workers)
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("training run", "thread pool", e.to_string()))?;
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { break };
            let Some((model, cfg)) = slot.lock().take() else {
                continue;
            };
            // No seeding: these runs draw nothing from burn's generator.
            let r = run_training(
                model,
                data,
                &cfg,
                device,
                &mut Silent,
                TrainExtras::default(),
            );
            *results[i].lock() = Some(r);
        }
    };
    std::thread::scope(|scope| {
        for pool in &pools {
            scope.spawn(move || pool.install(work));
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner().unwrap_or_else(|| {
                Err(Error::invalid(
                    "training run",
                    "worker",
                    "ended without a result",
                ))
            })
        })
        .collect()
}

/// One training run, the random number generator already seeded where the model draws from
/// it.
fn run_training(
    model: Model,
    data: &Dataset,
    cfg: &TrainConfig,
    device: &Device,
    observer: &mut dyn TrainObserver,
    extras: TrainExtras<'_>,
) -> Result<(Model, TrainReport)> {
    let (train_set, val_set) = match &cfg.early_stopping {
        Some(es) => {
            let (t, v) = data.split_stratified(es.val_fraction, cfg.seed ^ 0x5EED_0001)?;
            (t, Some(v))
        }
        None => (data.clone(), None),
    };
    let ad = device.clone().autodiff();
    let mut model = model.to_device(&ad);
    model.net = model.net.train();
    let mut run = Run {
        cfg,
        extras,
        data: &train_set,
        device: ad,
        optim: cfg.optimizer.build(cfg.grad_clip),
        triggers: TriggerCycle::new(cfg.seed),
        steps: 0,
    };
    let mut report = TrainReport {
        epochs: Vec::new(),
        kept_epoch: 0,
        stopped_early: false,
        target_reached: false,
        steps: 0,
    };
    let mut best: Option<(f64, usize, Model)> = None;
    for epoch in 0..cfg.epochs {
        let started = std::time::Instant::now();
        let (trained, mut stats, mut target_reached) = run.epoch(model, epoch, observer)?;
        model = trained;
        stats.val_accuracy = match &val_set {
            Some(v) => Some(evaluate(&snapshot(&model), v, 256)?.accuracy),
            None => None,
        };
        stats.seconds = started.elapsed().as_secs_f64();
        observer.epoch_end(&stats);
        let val_accuracy = stats.val_accuracy;
        report.epochs.push(stats);
        target_reached = target_reached
            || run
                .extras
                .stop_when
                .is_some_and(|stop| stop(&snapshot(&model)));
        if target_reached {
            // The weights that reached the target are the result, whatever early stopping
            // would have kept.
            report.target_reached = true;
            report.kept_epoch = epoch;
            report.steps = run.steps;
            return Ok((snapshot(&model).to_device(device), report));
        }
        if let (Some(es), Some(acc)) = (&cfg.early_stopping, val_accuracy) {
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                best = Some((acc, epoch, snapshot(&model)));
            } else if epoch - best.as_ref().map_or(0, |(_, e, _)| *e) >= es.patience {
                report.stopped_early = true;
                break;
            }
        }
    }
    report.steps = run.steps;
    let result = match best {
        Some((_, epoch, m)) => {
            report.kept_epoch = epoch;
            m
        }
        None => {
            report.kept_epoch = cfg.epochs - 1;
            snapshot(&model)
        }
    };
    Ok((result.to_device(device), report))
}

/// Refuses data, trigger mixes and soft targets the model or each other cannot take, before
/// any training.
fn check_inputs(
    model: &Model,
    data: &Dataset,
    cfg: &TrainConfig,
    extras: &TrainExtras<'_>,
) -> Result<()> {
    model.check_data(data)?;
    if let Some(mix) = &extras.trigger_mix {
        model.check_data(mix.triggers)?;
        if mix.per_batch == 0 || mix.triggers.is_empty() {
            return Err(Error::invalid(
                "triggers per batch",
                mix.per_batch,
                "trigger mixing needs at least one trigger item per batch and a non-empty trigger set",
            ));
        }
    }
    if let Some(q) = extras.soft_targets
        && (q.len() != data.len() * data.num_classes || cfg.early_stopping.is_some())
    {
        return Err(Error::invalid(
            "soft targets",
            q.len(),
            format!(
                "need one row of {} probabilities per example ({} values), and no early stopping",
                data.num_classes,
                data.len() * data.num_classes
            ),
        ));
    }
    if data.is_empty() {
        return Err(Error::Data {
            source_name: data.name.clone(),
            problem: "no training examples".into(),
        });
    }
    Ok(())
}

/// The trigger items mixed into batches: the trigger set in a fresh seeded order each pass.
struct TriggerCycle {
    seed: u64,
    order: Vec<usize>,
    cursor: usize,
    passes: u64,
}

impl TriggerCycle {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            order: Vec::new(),
            cursor: 0,
            passes: 0,
        }
    }

    /// The next `count` trigger indices.
    fn next(&mut self, triggers: &Dataset, count: usize) -> Vec<usize> {
        let mut picks = Vec::with_capacity(count);
        for _ in 0..count {
            if self.cursor == self.order.len() {
                self.order = triggers
                    .permutation((self.seed ^ 0x7816_6E0F_D00D).wrapping_add(self.passes << 20));
                self.cursor = 0;
                self.passes += 1;
            }
            picks.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        picks
    }
}

/// The weights of a model in training, for evaluation (no autodiff, dropout off).
fn snapshot(model: &Model) -> Model {
    Model {
        spec: model.spec.clone(),
        net: model.net.valid(),
    }
}

/// A training run in progress: what it trains on, its optimiser, the trigger cycle and the
/// steps taken. The model passes through by value, so the optimiser updates weights nothing
/// else holds.
struct Run<'a> {
    cfg: &'a TrainConfig,
    extras: TrainExtras<'a>,
    data: &'a Dataset,
    device: Device,
    optim: burn::optim::ModuleOptimizer,
    triggers: TriggerCycle,
    steps: usize,
}

impl Run<'_> {
    /// One pass over the data in a seeded order; true when [`TrainExtras::stop_when`] was met
    /// within it (the pass ends there). Validation accuracy and timing are the caller's.
    fn epoch(
        &mut self,
        mut model: Model,
        epoch: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, EpochStats, bool)> {
        let cfg = self.cfg;
        let lr = cfg.schedule.lr(cfg.optimizer.lr(), epoch, cfg.epochs);
        let order = self.data.permutation(
            cfg.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(epoch as u64),
        );
        observer.epoch_start(epoch, self.data.len().div_ceil(cfg.batch_size));
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut target_reached = false;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let (trained, loss, hits, n) = self.step(model, chunk, lr).map_err(|e| match e {
                StepError::Diverged(loss) => Error::invalid(
                    "learning rate",
                    lr,
                    format!(
                        "training diverged at epoch {} step {b} (loss {loss}); lower the learning rate or clip gradients (--grad-clip 1)",
                        epoch + 1
                    ),
                ),
            })?;
            model = trained;
            loss_sum += loss * n as f64;
            correct += hits;
            seen += n;
            observer.batch_end(epoch, b, loss, hits as f64 / n as f64);
            self.steps += 1;
            if let Some(stop) = self.extras.stop_when
                && self.steps.is_multiple_of(STOP_CHECK_STEPS)
                && stop(&snapshot(&model))
            {
                target_reached = true;
                break;
            }
        }
        let stats = EpochStats {
            epoch,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_accuracy: None,
            seconds: 0.0,
        };
        Ok((model, stats, target_reached))
    }

    /// One optimiser step on the examples `chunk` (plus the trigger items mixed in): the
    /// updated model, the loss, the examples classified right before the step, and the batch
    /// size.
    fn step(
        &mut self,
        mut model: Model,
        chunk: &[usize],
        lr: f64,
    ) -> std::result::Result<(Model, f64, usize, usize), StepError> {
        let (data, ad) = (self.data, &self.device);
        let shape = data.shape;
        let mut picks = Vec::new();
        let (x, y) = match &self.extras.trigger_mix {
            None => (
                batch::gather_images(data, chunk, shape, ad),
                batch::gather_labels(data, chunk, ad),
            ),
            Some(mix) => {
                picks = self.triggers.next(mix.triggers, mix.per_batch);
                batch::gather_mixed(data, chunk, mix.triggers, &picks, shape, ad)
            }
        };
        let batch_n = y.dims()[0];
        let logits = model.forward(x);
        let hits = batch::count_correct(&logits, &y);
        let mut loss = match self.extras.soft_targets {
            None => crate::kernel::cross_entropy(logits, y),
            Some(q) => {
                let c = data.num_classes;
                let mut rows: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| q[i * c..(i + 1) * c].iter().copied())
                    .collect();
                if let Some(mix) = &self.extras.trigger_mix {
                    // Mixed-in trigger items keep their one-hot labels.
                    for &i in &picks {
                        let mut one_hot = vec![0f32; c];
                        one_hot[mix.triggers.labels()[i] as usize] = 1.0;
                        rows.extend(one_hot);
                    }
                }
                let t = Tensor::<2>::from_data(TensorData::new(rows, [batch_n, c]), ad);
                let log_p = burn::tensor::activation::log_softmax(logits, 1);
                (t * log_p).sum_dim(1).mean().neg()
            }
        };
        if let Some(reg) = self.extras.regularizer {
            loss = loss + reg(&model);
        }
        let loss_value: f64 = loss.clone().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            return Err(StepError::Diverged(loss_value));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model.net);
        model.net = self.optim.step(lr, model.net, grads);
        Ok((model, loss_value, hits, batch_n))
    }
}

/// Why a step failed.
enum StepError {
    /// The loss was not finite.
    Diverged(f64),
}

#[cfg(test)]
mod schedule_tests {
    use super::LrSchedule;

    #[test]
    fn cyclic_schedules_restart_at_each_cycle() {
        let s: LrSchedule = "cyclic:2".parse().unwrap();
        assert_eq!(s, LrSchedule::Cyclic { period: 2 });
        let r: Vec<f64> = (0..5).map(|e| s.lr(0.1, e, 5)).collect();
        let want = [0.1, 0.05, 0.1, 0.05, 0.1];
        assert!(
            r.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{r:?}"
        );
        let s: LrSchedule = "cyclic:4".parse().unwrap();
        assert!((s.lr(1.0, 2, 8) - 0.5).abs() < 1e-12 && s.lr(1.0, 4, 8) == 1.0);
        for bad in ["cyclic:0", "cyclic:x", "cyclic:"] {
            assert!(bad.parse::<LrSchedule>().is_err(), "{bad}");
        }
    }
}
