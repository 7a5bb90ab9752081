//! `nnmark serve` against the official clients of the inference ecosystem, installed from PyPI
//! into `tools/.venv-interop` by `tools/setup-interop-venv.sh` (which the first test runs).
//! Each client script makes every call its client offers for a simple classification model
//! and compares the answers with nnmark's own prediction for the same images.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::oracle::{LocalOracle, Oracle, Reveal};
use nnmark::train::{Silent, TrainConfig};
use nnmark_remote::protocol::{ClassNames, Protocol};
use nnmark_remote::server::{RunningServer, ServeConfig, ServedModel};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interop venv's Python, the venv created on first use.
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let script = repo().join("tools/setup-interop-venv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{} failed (it installs the official clients from PyPI):\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        repo().join("tools/.venv-interop/bin/python")
    })
}

/// An MLP trained for one epoch on the embedded MNIST sample.
fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let split = nnmark::data::embedded_mnist10k().unwrap();
        let device = nnmark::device::parse_device("cpu").unwrap();
        let spec = ModelSpec {
            architecture: Architecture::Mlp,
            input: split.train.shape,
            num_classes: 10,
            normalization: Normalization::from_dataset(&split.train),
        };
        let cfg = TrainConfig {
            epochs: 1,
            seed: 3,
            ..TrainConfig::default()
        };
        let m = Model::seeded(spec, 3, &device).unwrap();
        nnmark::train::train(m, &split.train, &cfg, &device, &mut Silent)
            .unwrap()
            .0
    })
}

/// Images and nnmark's local prediction for them, as the client scripts read them.
fn fixture(dir: &Path, reveal: &str, count: usize) -> PathBuf {
    let split = nnmark::data::embedded_mnist10k().unwrap();
    let test = split.test.take(count);
    let mut local = LocalOracle::new(model().clone(), Reveal::Probabilities);
    let answers = local.query(test.pixels()).unwrap();
    let probabilities: Vec<Vec<f32>> = answers
        .iter()
        .map(|a| {
            let mut row = vec![0.0; 10];
            for &(c, p) in &a.scores {
                row[c] = p;
            }
            row
        })
        .collect();
    let doc = serde_json::json!({
        "images": test.pixels(),
        "shape": [test.shape.channels, test.shape.height, test.shape.width],
        "probabilities": probabilities,
        "labels": answers.iter().map(|a| a.label).collect::<Vec<_>>(),
        "reveal": reveal,
    });
    let path = dir.join(format!("fixture-{reveal}.json"));
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

fn serve(reveal: Reveal) -> RunningServer {
    let served = ServedModel::new(
        Box::new(LocalOracle::new(model().clone(), Reveal::Probabilities)),
        "nnmark-burn",
    );
    let cfg = ServeConfig::new(Protocol::V2, "mnist", reveal, ClassNames::indices(10));
    RunningServer::start(served, cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn run_client(script: &str, server: &RunningServer, fixture: &Path) -> serde_json::Value {
    let host = server.url().trim_start_matches("http://").to_string();
    let out = Command::new(python())
        .arg(repo().join("tools/interop").join(script))
        .arg(&host)
        .arg("mnist")
        .arg(fixture)
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} against nnmark serve failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the script's JSON line")
}

#[test]
fn tritons_official_http_client_gets_nnmarks_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    for (reveal, name) in [
        (Reveal::Probabilities, "probabilities"),
        (Reveal::TopK(3), "top-k"),
        (Reveal::Label, "label"),
    ] {
        let server = serve(reveal);
        let report = run_client("triton_client.py", &server, &fixture(dir.path(), name, 12));
        let checks = report["checks"].as_u64().unwrap();
        eprintln!("tritonclient, reveal {name}: {checks} checks passed");
        assert!(checks > 40, "{report}");
        server.stop().unwrap();
    }
}

#[test]
fn kserves_official_rest_client_gets_nnmarks_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    for (reveal, name) in [
        (Reveal::Probabilities, "probabilities"),
        (Reveal::Label, "label"),
    ] {
        let server = serve(reveal);
        let report = run_client("kserve_client.py", &server, &fixture(dir.path(), name, 12));
        let checks = report["checks"].as_u64().unwrap();
        eprintln!("kserve InferenceRESTClient, reveal {name}: {checks} checks passed");
        assert!(checks >= 18, "{report}");
        server.stop().unwrap();
    }
}
