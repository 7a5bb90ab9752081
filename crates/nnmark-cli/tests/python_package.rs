//! The `nnmark` Python package (crates/nnmark-py): `tools/setup-python-package.sh` creates a
//! venv from PyPI (maturin, numpy, onnxruntime, pytest) and builds the bindings into it, then
//! pytest runs `crates/nnmark-py/tests` against this build's `nnmark` binary: keys round trip,
//! trigger arrays equal the CLI's export, an ONNX suspect's verdict equals the CLI's, callable
//! suspects, errors as Python exceptions.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_python_package_passes_its_tests_against_the_cli() {
    let script = repo().join("tools/setup-python-package.sh");
    let setup = Command::new("bash")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        setup.status.success(),
        "{} failed (it installs maturin, numpy, onnxruntime and pytest from PyPI and builds the bindings):\n{}",
        script.display(),
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8_lossy(&setup.stdout).trim().to_string();
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo().join("crates/nnmark-py/tests"))
        .env("NNMARK_BIN", env!("CARGO_BIN_EXE_nnmark"))
        .output()
        .expect("the venv's python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "pytest failed:\n{report}");
    assert!(
        report.contains("passed") && !report.contains("skipped"),
        "every test ran: {report}"
    );
}

/// The bring-your-own-model example end to end: a BatchNorm CNN nnmark does not ship, marked in
/// a plain PyTorch loop with the package's trigger mixer, exported to ONNX, served with
/// `nnmark serve` and checked with `nnmark verify --endpoint`; an independent PyTorch model
/// trained the same way must not be accused. Needs PyTorch 2.9 from PyPI (several GB):
/// `cargo test --release -p nnmark-cli --test python_package -- --ignored --nocapture`
/// (about 50 s once the venv exists).
#[test]
#[ignore]
fn the_pytorch_example_marks_its_own_model_and_proves_it_remotely() {
    let script = repo().join("tools/setup-python-package.sh");
    let setup = Command::new("bash")
        .arg(&script)
        .arg("torch")
        .output()
        .expect("bash runs");
    assert!(
        setup.status.success(),
        "{} torch failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8_lossy(&setup.stdout).trim().to_string();
    for scheme in ["adi", "frontier-stitching"] {
        let out_dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(&python)
            .args(["-W", "ignore"])
            .arg(repo().join("crates/nnmark-py/examples/pytorch_own_model.py"))
            .args([
                "--nnmark",
                env!("CARGO_BIN_EXE_nnmark"),
                "--scheme",
                scheme,
                "--out",
            ])
            .arg(out_dir.path())
            .output()
            .expect("the venv's python runs");
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{scheme}: the example's checks failed"
        );
        let r: serde_json::Value = serde_json::from_str(&report).expect("the example prints JSON");
        assert_eq!(r["marked"]["remote"]["watermarked"], true, "{scheme}");
        assert_eq!(r["independent"]["remote"]["watermarked"], false, "{scheme}");
    }
}
