//! The evaluation matrix: models × schemes × attacks × seeds, each cell a marked model
//! attacked and verified. Cells are content-addressed (SHA-256 of everything that determines
//! them) and cached on disk, so a rerun computes only what is missing, and shards
//! (`--shard i/n`, or the index from `SLURM_ARRAY_TASK_ID` / `JOB_COMPLETION_INDEX`) split the
//! work by (model, scheme, seed) group across machines; [`merge`] joins their outputs.

#![warn(missing_docs)]

mod config;
pub mod report;
mod run_file;

pub use config::{EvalConfig, ModelEntry, SchemeEntry};
pub use run_file::{MatrixRun, run_config_file};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use nnmark::attack::{self, AttackContext, GuardedOracle, TransformedOracle};
use nnmark::data::{self, DataSource, DataSplit, Dataset};
use nnmark::error::{Error, Result};
use nnmark::keyfile::KeyFile;
use nnmark::model::{Architecture, Model};
use nnmark::oracle::{LocalOracle, Reveal};
use nnmark::scheme::{self, EmbedMode, Suspect};
use nnmark::train::{self, Silent, TrainConfig};
use nnmark::verdict::{NullModel, Verdict};
use nnmark::watermark::{self, EmbedRequest};
use nnmark::weights::{self, WeightsMeta};
use nnmark::workflow::{self, CleanTraining, Start};

/// Which part of the matrix this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// The whole matrix.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `i/n`, or `n` alone with the index taken from `SLURM_ARRAY_TASK_ID` or
    /// `JOB_COMPLETION_INDEX` (looked up through `env`).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let bad = |why: &str| Error::invalid("shard", text, why);
        let (index, count) = match text.split_once('/') {
            Some((i, n)) => (
                i.trim()
                    .parse::<usize>()
                    .map_err(|_| bad("write i/n with whole numbers, e.g. 0/4"))?,
                n.trim()
                    .parse::<usize>()
                    .map_err(|_| bad("write i/n with whole numbers, e.g. 0/4"))?,
            ),
            None => {
                let n = text
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| bad("write i/n, or n with the index in SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX"))?;
                let (var, value) = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
                    .iter()
                    .find_map(|v| env(v).map(|x| (*v, x)))
                    .ok_or_else(|| {
                        bad("no index given and neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set")
                    })?;
                let i = value.trim().parse::<usize>().map_err(|_| {
                    Error::invalid(var, &value, "must be a whole number (the shard index)")
                })?;
                (i, n)
            }
        };
        if count == 0 || index >= count {
            return Err(bad("the index must be below the shard count (0-based)"));
        }
        Ok(Shard { index, count })
    }
}

/// Where and how to run.
pub struct EvalOptions<'a> {
    /// Output folder: the cache (`models/`, `cells/`) and the results.
    pub out_dir: &'a Path,
    /// Folder searched for named data sets (Fashion-MNIST).
    pub data_dir: Option<&'a Path>,
    /// The part of the matrix to run.
    pub shard: Shard,
    /// Compute device.
    pub device: &'a Device,
    /// Groups run at once; 0 runs one per core.
    pub jobs: usize,
}

/// Told about progress (the CLI draws a bar).
pub trait EvalProgress {
    /// The number of cells this shard has, cached ones included.
    fn start(&mut self, _cells: usize) {}
    /// A step of work that is not a cell (training a clean model, embedding).
    fn stage(&mut self, _what: &str) {}
    /// A cell is done.
    fn cell(&mut self, _record: &CellRecord, _cached: bool) {}
}

/// No progress output.
pub struct Quiet;
impl EvalProgress for Quiet {}

/// Key extraction as recorded in a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyResult {
    /// Key items queried (or bits read).
    pub queries: u64,
    /// Items (bits) as the key says.
    pub matches: u64,
    /// matches / queries (1 − BER for Uchida).
    pub match_rate: f64,
    /// Decoded message (AIME, Uchida messages).
    #[serde(default)]
    pub decoded: Option<String>,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    /// Content address of the cell.
    pub cell: String,
    /// Name of the matrix.
    pub config: String,
    /// Data set.
    pub dataset: String,
    /// Architecture.
    pub arch: String,
    /// Scheme name.
    pub scheme: String,
    /// Resolved scheme parameters.
    pub params: serde_json::Value,
    /// Embedding mode.
    pub mode: String,
    /// Seed of the repetition.
    pub seed: u64,
    /// The attack as described by the library (`none` for the baseline).
    pub attack: String,
    /// Test accuracy of the clean model.
    pub clean_accuracy: f64,
    /// Test accuracy of the marked model.
    pub marked_accuracy: f64,
    /// Test accuracy after the attack (through the query filter, for filter attacks).
    pub attacked_accuracy: f64,
    /// The key on the attacked model.
    pub key: KeyResult,
    /// The key on the marked model before the attack.
    pub marked_key: KeyResult,
    /// The decision, under the key's own null where it has one (the scheme's exact null, or
    /// shadow models stored in the key), else under the null calibrated on the reference
    /// models, else (no references configured) the scheme's analytic null.
    pub verdict: Verdict,
    /// The p-value the same matches would have under the null calibrated on the reference
    /// models, when there are any: descriptive, for comparing nulls. `verdict` is the one
    /// decision of the cell.
    #[serde(default)]
    pub reference_p_value: Option<f64>,
    /// Matches of each independent reference model on the key (the null distribution).
    #[serde(default)]
    pub null_matches: Vec<u64>,
    /// The attacked model stays within the plausibility bound of the marked model's accuracy.
    pub plausible: bool,
    /// The mark is gone (not detected) and the attack is plausible.
    pub removed: bool,
    /// Seconds spent on the attack and the verification.
    pub seconds: f64,
    /// Seconds the embedding took (shared by the cells of a group).
    pub embed_seconds: f64,
    /// What the thief's query detector flagged, for an attack that serves the model behind one
    /// (`guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardRecord>,
    /// nnmark and burn versions.
    pub versions: serde_json::Value,
}

/// A query detector's decisions in one cell: flagged key items (its true positives) and
/// flagged test images (its false positives on the ordinary traffic decoys stand for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardRecord {
    /// Key items flagged (none for a white-box key, read from the weights).
    pub key_flagged: usize,
    /// Key items asked.
    pub key_queries: usize,
    /// Test images flagged.
    pub test_flagged: usize,
    /// Test images asked.
    pub test_queries: usize,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Cells in this shard.
    pub cells: usize,
    /// Of those, computed now.
    pub computed: usize,
    /// Of those, read from the cache.
    pub cached: usize,
    /// The JSONL file written.
    pub results: PathBuf,
}

fn digest(value: &serde_json::Value) -> String {
    let h = Sha256::digest(serde_json::to_vec(value).expect("serialises"));
    hex::encode(&h[..12])
}

fn versions() -> serde_json::Value {
    serde_json::json!({ "nnmark": nnmark::VERSION, "burn": nnmark::BURN_VERSION })
}

/// One (model entry, scheme entry, seed) group: a clean model, a marked model, its key.
struct Group<'c> {
    model: &'c ModelEntry,
    scheme: &'c SchemeEntry,
    seed: u64,
}

/// The groups of the whole matrix, in a fixed order.
fn groups(cfg: &EvalConfig) -> Result<Vec<Group<'_>>> {
    let mut out = Vec::new();
    for m in &cfg.models {
        let arch: Architecture = m.arch.parse()?;
        for s in &cfg.schemes {
            if !s.archs.is_empty()
                && !s
                    .archs
                    .iter()
                    .any(|a| a.parse::<Architecture>().ok() == Some(arch))
            {
                continue;
            }
            for &seed in &cfg.seeds {
                out.push(Group {
                    model: m,
                    scheme: s,
                    seed,
                });
            }
        }
    }
    Ok(out)
}

fn clean_recipe(epochs: usize, seed: u64, arch: Architecture) -> TrainConfig {
    TrainConfig {
        epochs,
        seed,
        ..TrainConfig::default()
    }
    .fitted_to(arch)
}

/// Loads a cached model or trains it and caches it.
fn cached_model(
    path: &Path,
    device: &Device,
    make: impl FnOnce() -> Result<(Model, WeightsMeta)>,
) -> Result<Model> {
    if path.exists() {
        return Ok(weights::load(path, None, device)?.model);
    }
    let (model, meta) = make()?;
    weights::save(&model, &meta, path)?;
    Ok(model)
}

struct Prepared {
    marked: Model,
    key: KeyFile,
    clean_accuracy: f64,
    marked_accuracy: f64,
    embed_seconds: f64,
    marked_key: KeyResult,
    null_matches: Vec<u64>,
    calibrated: Option<NullModel>,
    null: NullModel,
}

fn key_result(x: &scheme::Extraction) -> KeyResult {
    KeyResult {
        queries: x.queries,
        matches: x.matches,
        match_rate: x.match_rate(),
        decoded: x.decoded.clone(),
    }
}

/// The progress sink shared by the threads that run groups.
struct SharedProgress<'p>(std::sync::Mutex<&'p mut (dyn EvalProgress + Send)>);

impl SharedProgress<'_> {
    fn with(&self, f: impl FnOnce(&mut dyn EvalProgress)) {
        // A panicking observer elsewhere must not stop the matrix from reporting.
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut **p)
    }
}

/// One group as planned: what it is, its cells, whether any must be computed.
struct Plan<'c> {
    group: &'c Group<'c>,
    dataset: &'static str,
    arch: Architecture,
    scheme: &'static dyn scheme::Scheme,
    mode: EmbedMode,
    group_hash: String,
    attacks: &'c [Option<Box<dyn attack::Attack>>],
    cell_ids: Vec<String>,
    missing: bool,
}

/// The cache file of the clean model of one recipe.
fn clean_path(
    models: &Path,
    dataset: &str,
    arch: Architecture,
    epochs: usize,
    seed: u64,
) -> PathBuf {
    let id = digest(&serde_json::json!({
        "dataset": dataset, "arch": arch, "epochs": epochs, "seed": seed, "nnmark": nnmark::VERSION,
    }));
    models.join(format!("clean-{id}.safetensors"))
}

/// The seeds of a group's independent reference models.
fn reference_seeds(cfg: &EvalConfig) -> Vec<u64> {
    (0..cfg.references).map(|j| 10_001 + j as u64).collect()
}

/// Runs this shard of the matrix; returns what was done.
///
/// Groups (model × scheme × seed) run [`EvalOptions::jobs`] at a time after every clean and
/// reference model they need is trained (together, see [`train::train_many`]); a group's
/// records are the same whether it ran alone or beside others (tested), and the results file
/// lists them in the matrix's order.
pub fn run(
    cfg: &EvalConfig,
    opts: &EvalOptions<'_>,
    progress: &mut (dyn EvalProgress + Send),
) -> Result<EvalSummary> {
    cfg.check()?;
    // None stands for the unattacked baseline.
    type Attacks = Vec<Option<Box<dyn attack::Attack>>>;
    // Every attack that trains on the attacker's data also runs at each smaller budget.
    let parse = |list: &[String]| -> Result<Attacks> {
        let mut out: Attacks = Vec::new();
        for a in list {
            if a == "none" {
                out.push(None);
                continue;
            }
            let full = attack::parse(a)?;
            let trains = full.needs_data();
            out.push(Some(full));
            if trains {
                for b in cfg.attacker_budgets.iter().filter(|b| **b < 1.0) {
                    out.push(Some(attack::parse(&format!("budget:{b}+{a}"))?));
                }
            }
        }
        Ok(out)
    };
    let global = parse(&cfg.attacks)?;
    let per_scheme: Vec<Option<Attacks>> = cfg
        .schemes
        .iter()
        .map(|s| {
            if s.attacks.is_empty() {
                Ok(None)
            } else {
                parse(&s.attacks).map(Some)
            }
        })
        .collect::<Result<_>>()?;
    let attacks_of = |g: &Group<'_>| {
        let k = cfg
            .schemes
            .iter()
            .position(|s| std::ptr::eq(s, g.scheme))
            .expect("a scheme of the config");
        per_scheme[k].as_ref().unwrap_or(&global)
    };
    let all = groups(cfg)?;
    let mine: Vec<&Group<'_>> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % opts.shard.count == opts.shard.index)
        .map(|(_, g)| g)
        .collect();
    let out = opts.out_dir;
    for sub in ["models", "cells"] {
        std::fs::create_dir_all(out.join(sub)).map_err(|e| Error::io(out.join(sub), e))?;
    }
    let models = out.join("models");
    let progress = SharedProgress(std::sync::Mutex::new(progress));
    progress.with(|p| p.start(mine.iter().map(|g| attacks_of(g).len()).sum()));

    // Plan every group: its cells and which of them the cache lacks.
    let mut plans = Vec::new();
    for g in mine {
        let ds = data::canonical_name(&g.model.dataset).expect("checked");
        let arch: Architecture = g.model.arch.parse()?;
        let sc = scheme::by_name(&g.scheme.name)?;
        let params = sc.params(g.scheme.params.as_ref().unwrap_or(&serde_json::Value::Null))?;
        let mode: EmbedMode = g.scheme.mode.parse()?;
        let group_id = serde_json::json!({
            "dataset": ds, "arch": arch, "clean_epochs": g.model.epochs, "seed": g.seed,
            "scheme": sc.name(), "params": params, "mode": mode.name(),
            "embed_epochs": g.scheme.epochs, "lr": g.scheme.lr, "aux": g.scheme.aux_dataset, "nnmark": nnmark::VERSION,
        });
        let attacks = attacks_of(g);
        let cell_ids: Vec<String> = attacks
            .iter()
            .map(|a| {
                let desc = a.as_ref().map_or("none".to_string(), |a| a.describe());
                digest(&serde_json::json!({
                    "group": group_id, "attack": desc, "fpr": cfg.fpr,
                    "plausible_drop_pp": cfg.plausible_drop_pp, "references": cfg.references,
                }))
            })
            .collect();
        let missing = cell_ids
            .iter()
            .any(|h| !out.join("cells").join(format!("{h}.json")).exists());
        plans.push(Plan {
            group: g,
            dataset: ds,
            arch,
            scheme: sc,
            mode,
            group_hash: digest(&group_id),
            attacks: attacks.as_slice(),
            cell_ids,
            missing,
        });
    }

    // The data sets the groups to compute need, each loaded once.
    let mut datasets: HashMap<&'static str, (DataSplit, Dataset, Dataset)> = HashMap::new();
    for p in plans.iter().filter(|p| p.missing) {
        if !datasets.contains_key(p.dataset) {
            let split = data::load(&DataSource::Named(p.dataset.into()), opts.data_dir)?;
            let (owner, attacker) = attack::owner_attacker_split(&split.train)?;
            datasets.insert(p.dataset, (split, owner, attacker));
        }
    }

    // Every clean and reference model those groups need and the cache lacks, trained together
    // per model family (the same models as one by one) and cached.
    // (data set, architecture, clean epochs): a model family.
    type Family = (&'static str, Architecture, usize);
    let mut wanted: Vec<(Family, Vec<u64>)> = Vec::new();
    for p in plans.iter().filter(|p| p.missing) {
        let family = (p.dataset, p.arch, p.group.model.epochs);
        let at = match wanted.iter().position(|(f, _)| *f == family) {
            Some(i) => i,
            None => {
                wanted.push((family, Vec::new()));
                wanted.len() - 1
            }
        };
        for seed in std::iter::once(p.group.seed).chain(reference_seeds(cfg)) {
            let seeds = &mut wanted[at].1;
            if !seeds.contains(&seed)
                && !clean_path(&models, p.dataset, p.arch, family.2, seed).exists()
            {
                seeds.push(seed);
            }
        }
    }
    for ((ds, arch, epochs), seeds) in wanted.iter().filter(|(_, s)| !s.is_empty()) {
        progress.with(|p| {
            p.stage(&format!(
                "{} clean {arch} models on {ds}, seeds {seeds:?}",
                seeds.len()
            ))
        });
        let owner = &datasets[ds].1;
        let label = format!("{ds} (owner 2/3)");
        let reqs: Vec<CleanTraining<'_>> = seeds
            .iter()
            .map(|&seed| {
                CleanTraining::new(
                    *arch,
                    owner,
                    clean_recipe(*epochs, seed, *arch),
                    label.clone(),
                )
            })
            .collect();
        for (&seed, c) in seeds
            .iter()
            .zip(workflow::train_clean_many(&reqs, opts.device)?)
        {
            weights::save(
                &c.model,
                &c.meta,
                &clean_path(&models, ds, *arch, *epochs, seed),
            )?;
        }
    }

    // The groups, `jobs` at a time; each writes its cells as they are done.
    type GroupResult = Result<Vec<(CellRecord, bool)>>;
    let run_group = |plan: &Plan<'_>| -> GroupResult {
        let g = plan.group;
        let cell_path = |h: &str| out.join("cells").join(format!("{h}.json"));
        let prepared = if plan.missing {
            let (split, owner, _) = &datasets[plan.dataset];
            Some(prepare(cfg, opts, plan, split, owner, &progress).map_err(|e| in_group(g, e))?)
        } else {
            None
        };
        let mut done = Vec::new();
        for (cell_hash, att) in plan.cell_ids.iter().zip(plan.attacks) {
            let path = cell_path(cell_hash);
            if path.exists() {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let rec: CellRecord = serde_json::from_str(&text).map_err(|e| Error::Data {
                    source_name: path.display().to_string(),
                    problem: format!("not a cell record ({e}); delete it to recompute"),
                })?;
                progress.with(|p| p.cell(&rec, true));
                done.push((rec, true));
                continue;
            }
            let p = prepared.as_ref().expect("prepared when a cell is missing");
            let (split, _, attacker) = &datasets[plan.dataset];
            let rec = run_cell(
                cfg,
                opts,
                plan,
                split,
                attacker,
                p,
                att.as_deref(),
                cell_hash,
            )
            .map_err(|e| in_group(g, e))?;
            let text = serde_json::to_string_pretty(&rec).expect("serialises");
            nnmark::io::write_atomic(&path, text.as_bytes(), Some(0o644))?;
            progress.with(|p| p.cell(&rec, false));
            done.push((rec, false));
        }
        Ok(done)
    };
    let to_compute = plans.iter().filter(|p| p.missing).count();
    let jobs = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(to_compute.max(1));
    let results: Vec<std::sync::Mutex<Option<GroupResult>>> =
        plans.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let worker = || {
        use std::sync::atomic::Ordering;
        loop {
            // After a failure no new group starts; those running finish their cell.
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(plan) = plans.get(i) else { break };
            let r = run_group(plan);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    };
    if jobs <= 1 {
        worker();
    } else {
        // Each group's kernels run on a one-thread pool of its own: a small model's operations
        // split across the cores spend much of their time waiting for each other, and groups
        // sharing one pool would only queue behind each other's (measured: two groups at once on
        // the shared pool were no faster than one at a time). nnmark's results do not depend on
        // the thread count.
        let pools = (0..jobs)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid("evaluation", "thread pool", e.to_string()))?;
        std::thread::scope(|scope| {
            for pool in &pools {
                scope.spawn(move || pool.install(worker));
            }
        });
    }
    let mut records = Vec::new();
    let (mut computed, mut cached) = (0usize, 0usize);
    for r in results {
        // A group never started (after another failed) has no result; the failure comes first.
        let Some(r) = r.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            continue;
        };
        for (rec, was_cached) in r? {
            if was_cached {
                cached += 1;
            } else {
                computed += 1;
            }
            records.push(rec);
        }
    }
    let name = if opts.shard.count == 1 {
        "results.jsonl".to_string()
    } else {
        format!("results-{}-of-{}.jsonl", opts.shard.index, opts.shard.count)
    };
    let results = out.join(name);
    write_jsonl(&results, &records)?;
    Ok(EvalSummary {
        cells: records.len(),
        computed,
        cached,
        results,
    })
}

fn prepare(
    cfg: &EvalConfig,
    opts: &EvalOptions<'_>,
    plan: &Plan<'_>,
    split: &DataSplit,
    owner: &Dataset,
    progress: &SharedProgress<'_>,
) -> Result<Prepared> {
    let device = opts.device;
    let models = opts.out_dir.join("models");
    let (g, ds, arch, sc, mode) = (plan.group, plan.dataset, plan.arch, plan.scheme, plan.mode);
    let group_hash = &plan.group_hash;
    // Trained before the groups start; trained here only if the cache lost it since.
    let clean_model = |seed: u64| {
        cached_model(
            &clean_path(&models, ds, arch, g.model.epochs, seed),
            device,
            || {
                let c = workflow::train_clean(
                    &CleanTraining::new(
                        arch,
                        owner,
                        clean_recipe(g.model.epochs, seed, arch),
                        format!("{ds} (owner 2/3)"),
                    ),
                    device,
                    &mut Silent,
                )?;
                Ok((c.model, c.meta))
            },
        )
    };
    let clean = clean_model(g.seed)?;
    let marked_path = models.join(format!("marked-{group_hash}.safetensors"));
    let key_path = models.join(format!("key-{group_hash}.nnkey"));
    let (marked, key, embed_seconds) = if marked_path.exists() && key_path.exists() {
        let key = KeyFile::load(&key_path)?;
        let secs = key
            .meta
            .notes
            .get("eval_embed_seconds")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        (weights::load(&marked_path, None, device)?.model, key, secs)
    } else {
        progress.with(|p| p.stage(&format!("embed {} into {arch}, seed {}", sc.name(), g.seed)));
        let started = std::time::Instant::now();
        let train_cfg = match (mode, g.scheme.lr) {
            // The same SGD recipe the attacks fine-tune with.
            (EmbedMode::FineTune, Some(lr)) => attack::attacker_recipe(g.scheme.epochs, lr, g.seed),
            _ => TrainConfig {
                epochs: g.scheme.epochs,
                seed: g.seed,
                ..TrainConfig::default()
            },
        }
        .fitted_to(arch);
        let start = match mode {
            EmbedMode::FineTune => Start::FineTune(clean.clone()),
            EmbedMode::FromScratch => Start::FromScratch(arch),
            EmbedMode::Distillation => Start::Distill {
                teacher: clean.clone(),
                arch,
            },
        };
        let (base, teacher) = workflow::start_models(start, owner, g.seed, device)?;
        let aux = workflow::aux_data_for(sc, ds, g.scheme.aux_dataset.as_deref(), opts.data_dir)?;
        let mut e = watermark::embed(
            EmbedRequest {
                scheme: sc,
                // The overrides as written: the scheme resolves them itself.
                params: g.scheme.params.clone().unwrap_or(serde_json::Value::Null),
                mode,
                base,
                teacher,
                data: owner,
                aux: aux.as_ref(),
                key_seed: g.seed,
                train: train_cfg,
                dataset_name: format!("{ds} (owner 2/3)"),
                shadow_cache: Some(models.join("shadows")),
            },
            device,
            &mut Silent,
        )?;
        let secs = started.elapsed().as_secs_f64();
        e.key
            .meta
            .notes
            .insert("eval_embed_seconds".into(), secs.into());
        nnmark::io::write_atomic(&marked_path, &e.model_bytes, None)?;
        e.key.save(&key_path)?;
        (e.model, e.key, secs)
    };
    let marked_key = key_result(&sc.extract(&key, &mut Suspect::Model(&marked))?);
    let refs = reference_seeds(cfg)
        .into_iter()
        .map(clean_model)
        .collect::<Result<Vec<_>>>()?;
    let mut null_matches = Vec::new();
    for r in &refs {
        null_matches.push(sc.extract(&key, &mut Suspect::Model(r))?.matches);
    }
    let calibrated = if refs.is_empty() {
        None
    } else {
        Some(watermark::calibrate(
            &key,
            sc,
            refs.iter()
                .enumerate()
                .map(|(j, r)| (format!("seed {}", 10_001 + j), Suspect::Model(r))),
            0.99,
        )?)
    };
    let null = match watermark::key_null(&key, sc) {
        Ok(own) => own,
        Err(_) => match &calibrated {
            Some(c) => c.clone(),
            None => {
                tracing::warn!(
                    scheme = sc.name(),
                    "no exact null, no shadows and no reference models: the verdict uses the analytic null, which may detect marks that are gone (set `references`)"
                );
                sc.analytic_null(&key)
            }
        },
    };
    Ok(Prepared {
        null,
        clean_accuracy: train::evaluate(&clean, &split.test, 256)?.accuracy,
        marked_accuracy: train::evaluate(&marked, &split.test, 256)?.accuracy,
        marked,
        key,
        embed_seconds,
        marked_key,
        null_matches,
        calibrated,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_cell(
    cfg: &EvalConfig,
    opts: &EvalOptions<'_>,
    plan: &Plan<'_>,
    split: &DataSplit,
    attacker: &Dataset,
    p: &Prepared,
    att: Option<&dyn attack::Attack>,
    cell_hash: &str,
) -> Result<CellRecord> {
    let started = std::time::Instant::now();
    let (g, sc, mode) = (plan.group, plan.scheme, plan.mode);
    let ctx = AttackContext {
        data: Some(attacker),
        device: opts.device,
        seed: g.seed,
        key_items: p.key.triggers.as_ref().map(|t| t.labels.len()),
        scheme: Some(sc),
    };
    let attacked = match att {
        None => p.marked.clone(),
        Some(a) => a.remove(p.marked.clone(), &ctx)?,
    };
    let filter = att.and_then(|a| a.query_transform());
    let guard = match att {
        Some(a) => a.query_guard(&attacked, &ctx)?,
        None => None,
    };
    let white_box = sc.access() == scheme::Access::WhiteBox;
    let mut guard_record = None;
    let (extraction, attacked_accuracy) = match (guard, &filter, white_box) {
        (Some(guard), _, _) => {
            // Served behind the detector (and the input filter, when the attack has one).
            let mut served = GuardedOracle::new(attacked.clone(), guard, Reveal::Label);
            let x = if white_box {
                sc.extract(&p.key, &mut Suspect::Model(&attacked))?
            } else {
                match &filter {
                    Some(t) => {
                        let mut through = TransformedOracle::new(&mut served, t.clone());
                        sc.extract(&p.key, &mut Suspect::Oracle(&mut through))?
                    }
                    None => sc.extract(&p.key, &mut Suspect::Oracle(&mut served))?,
                }
            };
            let key_flags = served.flags().to_vec();
            served.clear_flags();
            let accuracy = match &filter {
                Some(t) => {
                    let mut through = TransformedOracle::new(&mut served, t.clone());
                    nnmark::oracle::accuracy(&mut through, &split.test)?
                }
                None => nnmark::oracle::accuracy(&mut served, &split.test)?,
            };
            guard_record = Some(GuardRecord {
                key_flagged: key_flags.iter().filter(|f| **f).count(),
                key_queries: key_flags.len(),
                test_flagged: served.flags().iter().filter(|f| **f).count(),
                test_queries: served.flags().len(),
            });
            (x, accuracy)
        }
        (None, Some(t), false) => {
            let mut local = LocalOracle::new(attacked.clone(), Reveal::Label);
            let mut through = TransformedOracle::new(&mut local, t.clone());
            let x = sc.extract(&p.key, &mut Suspect::Oracle(&mut through))?;
            let mut local = LocalOracle::new(attacked, Reveal::Label);
            let mut through = TransformedOracle::new(&mut local, t.clone());
            (x, nnmark::oracle::accuracy(&mut through, &split.test)?)
        }
        (None, Some(t), true) => {
            // The owner reads the weights; the thief's filter only changes what users get.
            let x = sc.extract(&p.key, &mut Suspect::Model(&attacked))?;
            let mut local = LocalOracle::new(attacked, Reveal::Label);
            let mut through = TransformedOracle::new(&mut local, t.clone());
            (x, nnmark::oracle::accuracy(&mut through, &split.test)?)
        }
        (None, None, _) => (
            sc.extract(&p.key, &mut Suspect::Model(&attacked))?,
            train::evaluate(&attacked, &split.test, 256)?.accuracy,
        ),
    };
    let verdict = Verdict::decide(
        extraction.matches,
        extraction.queries,
        p.null.clone(),
        cfg.fpr,
    )?;
    let reference_p_value = match &p.calibrated {
        Some(null) => Some(
            Verdict::decide(
                extraction.matches,
                extraction.queries,
                null.clone(),
                cfg.fpr,
            )?
            .p_value,
        ),
        None => None,
    };
    let plausible = attacked_accuracy >= p.marked_accuracy - cfg.plausible_drop_pp / 100.0;
    Ok(CellRecord {
        cell: cell_hash.to_string(),
        config: cfg.name.clone(),
        dataset: data::canonical_name(&g.model.dataset)
            .expect("checked")
            .to_string(),
        arch: g.model.arch.parse::<Architecture>()?.to_string(),
        scheme: sc.name().into(),
        // As resolved into the key (the defaults filled in, model-dependent ones decided).
        params: p.key.meta.params.clone(),
        mode: mode.name().into(),
        seed: g.seed,
        attack: att.map_or("none".to_string(), |a| a.describe()),
        clean_accuracy: p.clean_accuracy,
        marked_accuracy: p.marked_accuracy,
        attacked_accuracy,
        key: key_result(&extraction),
        marked_key: p.marked_key.clone(),
        removed: plausible && !verdict.watermarked,
        verdict,
        reference_p_value,
        null_matches: p.null_matches.clone(),
        plausible,
        seconds: started.elapsed().as_secs_f64(),
        embed_seconds: p.embed_seconds,
        guard: guard_record,
        versions: versions(),
    })
}

/// Names the group an error happened in.
fn in_group(g: &Group<'_>, e: Error) -> Error {
    Error::invalid(
        "evaluation group",
        format!(
            "{} / {} / {} seed {}",
            g.model.dataset, g.model.arch, g.scheme.name, g.seed
        ),
        e.to_string(),
    )
}

/// Writes records as JSON lines, atomically.
pub(crate) fn write_jsonl(path: &Path, records: &[CellRecord]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r).expect("serialises"));
        text.push('\n');
    }
    nnmark::io::write_atomic(path, text.as_bytes(), Some(0o644))
}

/// Reads a JSONL file of cell records; errors name the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<CellRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Data {
                source_name: format!("{}:{}", path.display(), i + 1),
                problem: format!("not a cell record: {e}"),
            })
        })
        .collect()
}

/// Two records of one cell agree on everything but wall time (a cell computed twice, in two
/// shards or runs, differs only there).
fn same_result(a: &CellRecord, b: &CellRecord) -> bool {
    let strip = |r: &CellRecord| {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("seconds");
            o.remove("embed_seconds");
        }
        v
    };
    strip(a) == strip(b)
}

/// Joins shard outputs: one record per cell, in a stable order. A cell found twice must hold
/// the same result (wall time aside): identical duplicates collapse, so merging is idempotent,
/// and conflicting ones are an error naming the cell and both files.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<usize> {
    let mut by_cell: std::collections::BTreeMap<String, (CellRecord, &Path)> =
        std::collections::BTreeMap::new();
    for p in inputs {
        for r in read_jsonl(p)? {
            match by_cell.get(&r.cell) {
                Some((seen, from)) if !same_result(seen, &r) => {
                    return Err(Error::invalid(
                        "eval results",
                        &r.cell,
                        format!(
                            "{} and {} hold different results for this cell (another nnmark version or configuration?); merge files of one run",
                            from.display(),
                            p.display()
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    by_cell.insert(r.cell.clone(), (r, p.as_path()));
                }
            }
        }
    }
    let by_cell: std::collections::BTreeMap<String, CellRecord> =
        by_cell.into_iter().map(|(k, (r, _))| (k, r)).collect();
    let mut all: Vec<CellRecord> = by_cell.into_values().collect();
    all.sort_by(|a, b| {
        (&a.dataset, &a.arch, &a.scheme, &a.attack, a.seed)
            .cmp(&(&b.dataset, &b.arch, &b.scheme, &b.attack, b.seed))
    });
    write_jsonl(out, &all)?;
    Ok(all.len())
}
