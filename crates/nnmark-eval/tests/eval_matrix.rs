//! The evaluation matrix on a smoke configuration (MNIST sample, MLP, two schemes, four
//! attacks, two seeds): every cell computed once and then read from the cache, shards that
//! partition the matrix and merge back to the same cells, the report, and bad configurations
//! rejected before any work.

use burn::prelude::Device;
use nnmark_eval::{self as eval, EvalConfig, EvalOptions, Quiet, Shard};

const SMOKE: &str = r#"
name = "smoke"
seeds = [1, 2]
fpr = 1e-3
references = 2
attacks = ["none", "prune:0.5", "quantize:4", "blur:0.5"]

[[models]]
dataset = "mnist10k"
arch = "mlp"
epochs = 3

[[schemes]]
name = "frontier-stitching"
params = { epsilon = 0.1 }
epochs = 5
lr = 0.01

[[schemes]]
name = "zhang-noise"
epochs = 3
lr = 0.01
"#;

fn run(cfg: &EvalConfig, out: &std::path::Path, shard: Shard) -> eval::EvalSummary {
    run_jobs(cfg, out, shard, 0)
}

fn run_jobs(
    cfg: &EvalConfig,
    out: &std::path::Path,
    shard: Shard,
    jobs: usize,
) -> eval::EvalSummary {
    eval::run(
        cfg,
        &EvalOptions {
            out_dir: out,
            data_dir: None,
            shard,
            device: &Device::flex(),
            jobs,
        },
        &mut Quiet,
    )
    .unwrap()
}

#[test]
fn smoke_matrix_caches_shards_merges_and_reports() {
    let cfg = EvalConfig::from_toml(SMOKE, "smoke.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = run(&cfg, &out, Shard::ALL);
    assert_eq!((first.cells, first.computed, first.cached), (16, 16, 0));
    let records = eval::read_jsonl(&first.results).unwrap();
    assert_eq!(records.len(), 16);
    for r in &records {
        assert_eq!(r.null_matches.len(), 2, "two reference models");
        assert!(
            r.reference_p_value
                .is_some_and(|p| (0.0..=1.0).contains(&p))
        );
        assert_eq!(r.removed, r.plausible && !r.verdict.watermarked);
        assert_eq!(
            r.plausible,
            r.attacked_accuracy >= r.marked_accuracy - 0.05,
            "{r:?}"
        );
        assert_eq!(r.versions["nnmark"], nnmark::VERSION);
        if r.attack == "none" {
            assert_eq!(r.key, r.marked_key);
            assert_eq!(r.attacked_accuracy, r.marked_accuracy);
            assert!(r.verdict.watermarked, "the baseline is detected: {r:?}");
        }
        eprintln!(
            "{} seed {} {}: acc {:.4} -> {:.4}, key {}/{}, p {:.1e}, removed {}",
            r.scheme,
            r.seed,
            r.attack,
            r.marked_accuracy,
            r.attacked_accuracy,
            r.key.matches,
            r.key.queries,
            r.verdict.p_value,
            r.removed
        );
    }
    // Same seed, same cells: the two schemes share the clean model of a seed.
    let clean: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r.seed == 1)
        .map(|r| format!("{:.6}", r.clean_accuracy))
        .collect();
    assert_eq!(clean.len(), 1);

    // A rerun computes nothing and gives the same records.
    let again = run(&cfg, &out, Shard::ALL);
    assert_eq!((again.computed, again.cached), (0, 16));
    let again_records = eval::read_jsonl(&again.results).unwrap();
    assert_eq!(
        serde_json::to_string(&again_records).unwrap(),
        serde_json::to_string(&records).unwrap()
    );

    // Two shards, each run from an empty folder as on two machines, partition the cells;
    // merged they are the unsharded run's records exactly, wall times aside.
    let s0 = run(
        &cfg,
        &dir.path().join("shard0"),
        Shard { index: 0, count: 2 },
    );
    let s1 = run(
        &cfg,
        &dir.path().join("shard1"),
        Shard { index: 1, count: 2 },
    );
    assert_eq!((s0.cached, s1.cached), (0, 0), "fresh folders");
    assert_eq!(s0.cells + s1.cells, 16);
    assert!(s0.cells > 0 && s1.cells > 0);
    let merged = out.join("merged.jsonl");
    assert_eq!(
        eval::merge(&[s0.results.clone(), s1.results.clone()], &merged).unwrap(),
        16
    );
    let without_times = |records: Vec<eval::CellRecord>| -> Vec<String> {
        let mut lines: Vec<String> = records
            .into_iter()
            .map(|mut r| {
                r.seconds = 0.0;
                r.embed_seconds = 0.0;
                serde_json::to_string(&r).unwrap()
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        without_times(eval::read_jsonl(&merged).unwrap()),
        without_times(records.clone()),
        "sharded from scratch and merged = unsharded"
    );
    // Merging is idempotent: the merge with itself and with a shard again is the same file.
    let twice = out.join("twice.jsonl");
    eval::merge(
        &[merged.clone(), merged.clone(), s0.results.clone()],
        &twice,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&twice).unwrap(),
        std::fs::read(&merged).unwrap()
    );
    // A cell whose two copies disagree (another version's result) is refused by name.
    let mut changed = eval::read_jsonl(&s1.results).unwrap();
    changed[0].attacked_accuracy += 0.01;
    let conflicting = out.join("conflicting.jsonl");
    std::fs::write(
        &conflicting,
        changed
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let e = eval::merge(&[merged.clone(), conflicting], &out.join("bad.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&changed[0].cell) && e.contains("different results"),
        "{e}"
    );

    let (md, html) = eval::report::write(&records, &dir.path().join("report")).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    assert!(md.contains("## Survival") && md.contains("mnist10k / mlp / frontier-stitching"));
    // The headline names, per row, the plausible attack with the lowest mean key match.
    assert!(md.find("## Strongest plausible attack") < md.find("## Survival"));
    for scheme in ["frontier-stitching", "zhang-noise"] {
        let row = format!("mnist10k / mlp / {scheme}");
        let mut by_attack: std::collections::BTreeMap<&str, Vec<&eval::CellRecord>> =
            Default::default();
        for r in records
            .iter()
            .filter(|r| r.scheme == scheme && r.attack != "none")
        {
            by_attack.entry(r.attack.as_str()).or_default().push(r);
        }
        let best = by_attack
            .iter()
            .filter(|(_, c)| c.iter().all(|r| r.plausible))
            .map(|(a, c)| {
                let m = c.iter().map(|r| r.key.match_rate).sum::<f64>() / c.len() as f64;
                (m, *a)
            })
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .map(|(_, a)| a);
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap();
        match best {
            Some(a) => assert!(line.starts_with(&format!("| {row} | {a} |")), "{line}"),
            None => assert!(line.contains("no attack stayed within the bound"), "{line}"),
        }
    }
    assert!(html.contains("Accuracy loss against key match"));
    assert!(md.contains("| 50% |"), "pruning table: {md}");
    assert!(md.contains("Independent models on the keys"));
    assert!(
        html.matches("<svg").count() >= 4,
        "heat map, Pareto, pruning, null plots"
    );
}

#[test]
fn shard_specs_and_bad_configs_fail_before_any_work() {
    let env = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "3".to_string());
    assert_eq!(
        Shard::parse("4", env).unwrap(),
        Shard { index: 3, count: 4 }
    );
    assert_eq!(
        Shard::parse("1/2", |_| None).unwrap(),
        Shard { index: 1, count: 2 }
    );
    let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "0".to_string());
    assert_eq!(
        Shard::parse("2", k8s).unwrap(),
        Shard { index: 0, count: 2 }
    );
    for bad in ["2/2", "x/3", "0/0"] {
        assert!(Shard::parse(bad, |_| None).is_err(), "{bad}");
    }
    let e = Shard::parse("3", |_| None).unwrap_err().to_string();
    assert!(e.contains("SLURM_ARRAY_TASK_ID"), "{e}");

    let err = |text: String| {
        EvalConfig::from_toml(&text, "bad.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err(SMOKE.replace("\"prune:0.5\"", "\"shrink:0.5\""));
    assert!(
        e.contains("known attacks") && e.contains("fine-prune"),
        "{e}"
    );
    let e = err(SMOKE.replace("\"prune:0.5\"", "\"prune:1.2\""));
    assert!(e.contains("1.2"), "{e}");
    let e = err(SMOKE.replace("epochs = 3\n\n[[schemes]]", "epochs = 0\n\n[[schemes]]"));
    assert!(e.contains("epochs"), "{e}");
    let e = err(SMOKE.replace("name = \"zhang-noise\"", "name = \"zhang\""));
    assert!(e.contains("known schemes"), "{e}");
    let e = err(SMOKE.replace("references = 2", "references = 2\ncolour = 1"));
    assert!(e.contains("bad.toml") && e.contains("colour"), "{e}");
    let e = err(SMOKE.replace("arch = \"mlp\"", "arch = \"vgg\""));
    assert!(e.contains("known models"), "{e}");
    let e = err(SMOKE.replace(
        "references = 2",
        "references = 2\nattacker_budgets = [0.1, 0]",
    ));
    assert!(
        e.contains("attacker_budgets") && e.contains("(0, 1]"),
        "{e}"
    );
}

/// Attacker budgets are a matrix axis: every attack that trains also runs on the smaller
/// shares of the attacker's data (`budget:B+attack`); the others run once.
#[test]
fn attacker_budgets_add_cells_for_attacks_that_train() {
    let text = r#"
name = "budgets"
seeds = [1]
fpr = 1e-3
attacks = ["none", "ftll:epochs=1", "prune:0.5"]
attacker_budgets = [0.1, 1.0]

[[models]]
dataset = "mnist10k"
arch = "mlp"
epochs = 2

[[schemes]]
name = "zhang-noise"
epochs = 2
lr = 0.01
"#;
    let cfg = EvalConfig::from_toml(text, "budgets.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&cfg, &dir.path().join("out"), Shard::ALL);
    let records = eval::read_jsonl(&summary.results).unwrap();
    let mut attacks: Vec<&str> = records.iter().map(|r| r.attack.as_str()).collect();
    attacks.sort();
    assert_eq!(
        attacks,
        [
            "budget:0.1+ftll:epochs=1,lr=0.01",
            "ftll:epochs=1,lr=0.01",
            "none",
            "prune:0.5"
        ]
    );
    // The budgeted fine-tuning saw a tenth of the data: another model than the full one.
    let acc = |a: &str| {
        records
            .iter()
            .find(|r| r.attack == a)
            .map(|r| r.attacked_accuracy)
            .unwrap()
    };
    assert_ne!(
        acc("budget:0.1+ftll:epochs=1,lr=0.01"),
        acc("ftll:epochs=1,lr=0.01")
    );
}

/// Groups run side by side (two threads, whatever the machine has) give the records of the
/// groups run one at a time, wall times aside, in the same order: LeNets and MLPs trained at
/// once, attacks that re-initialise a layer (drawing from burn's global generator) or train a
/// new model beside others that train.
#[test]
fn groups_run_at_once_give_the_records_of_one_at_a_time() {
    let text = r#"
name = "jobs"
seeds = [1, 2]
fpr = 1e-3
references = 1
attacks = ["none", "rtal:epochs=1", "ftll:epochs=1", "distill:epochs=1", "prune:0.5"]

[[models]]
dataset = "mnist10k"
arch = "lenet"
epochs = 1

[[models]]
dataset = "mnist10k"
arch = "mlp"
epochs = 2

[[schemes]]
name = "adi"
epochs = 1
lr = 0.01
"#;
    let cfg = EvalConfig::from_toml(text, "jobs.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one = run_jobs(&cfg, &dir.path().join("one"), Shard::ALL, 1);
    let two = run_jobs(&cfg, &dir.path().join("two"), Shard::ALL, 2);
    assert_eq!((one.computed, two.computed), (20, 20));
    let without_times = |path: &std::path::Path| -> Vec<String> {
        eval::read_jsonl(path)
            .unwrap()
            .into_iter()
            .map(|mut r| {
                r.seconds = 0.0;
                r.embed_seconds = 0.0;
                serde_json::to_string(&r).unwrap()
            })
            .collect()
    };
    let (a, b) = (without_times(&one.results), without_times(&two.results));
    assert_eq!(a.len(), 20);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "one group at a time vs two at once");
    }
    // The attacks did something: the re-initialised head and the student are other models.
    let records = eval::read_jsonl(&one.results).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.attack.starts_with("rtal") && r.attacked_accuracy != r.marked_accuracy)
    );
}

/// The committed configuration of the seed papers' experiments parses and checks.
#[test]
fn the_committed_seeds_matrix_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/seeds.toml");
    let cfg =
        EvalConfig::from_toml(&std::fs::read_to_string(&path).unwrap(), "seeds.toml").unwrap();
    assert!(cfg.seeds.len() >= 3);
    assert_eq!(cfg.models.len(), 3);
    // The strongest-attack matrix runs every registered attack at least once.
    let path = path.with_file_name("strongest.toml");
    let cfg =
        EvalConfig::from_toml(&std::fs::read_to_string(&path).unwrap(), "strongest.toml").unwrap();
    for name in nnmark::attack::names() {
        assert!(
            cfg.attacks.iter().any(|a| a
                .split('+')
                .any(|stage| stage.split(':').next() == Some(name))),
            "eval/strongest.toml runs no '{name}' attack"
        );
    }
}
