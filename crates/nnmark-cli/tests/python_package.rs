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
