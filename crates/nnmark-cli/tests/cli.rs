//! The binary end to end: bad input is a one-line error naming the file and the problem, with a
//! non-zero exit and no panic; good input trains, evaluates and writes.

use std::path::Path;
use std::process::{Command, Output};

fn nnmark(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnmark"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' missing from: {err}");
    }
}

fn write_idx(dir: &Path, labels: &[u8], magic_ok: bool) -> [String; 4] {
    let n = labels.len();
    let mut images = nnmark::data::idx::encode_images(28, 28, &vec![128u8; n * 784]);
    if !magic_ok {
        images[3] = 0x01;
    }
    let lab = nnmark::data::idx::encode_labels(labels);
    let paths = ["tr-img", "tr-lab", "te-img", "te-lab"].map(|p| dir.join(p).display().to_string());
    std::fs::write(&paths[0], &images).unwrap();
    std::fs::write(&paths[1], &lab).unwrap();
    std::fs::write(&paths[2], &images).unwrap();
    std::fs::write(&paths[3], &lab).unwrap();
    paths
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Missing file.
    let out = nnmark(&["eval", "--model", "nope.safetensors"], d);
    assert_clean_error(&out, &["nope.safetensors", "No such file"]);

    // Wrong IDX magic.
    let p = write_idx(d, &[1, 2, 3], false);
    let out = nnmark(&["data", "inspect", "--idx", &p[0], &p[1], &p[2], &p[3]], d);
    assert_clean_error(&out, &["tr-img", "magic 0x00000801"]);

    // Truncated IDX.
    let p = write_idx(d, &[1, 2, 3], true);
    let bytes = std::fs::read(&p[0]).unwrap();
    std::fs::write(&p[0], &bytes[..bytes.len() - 100]).unwrap();
    let out = nnmark(&["data", "inspect", "--idx", &p[0], &p[1], &p[2], &p[3]], d);
    assert_clean_error(&out, &["tr-img", "truncated"]);

    // Corrupt gzip.
    let gz = d.join("x.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
    let g = gz.display().to_string();
    let out = nnmark(&["data", "inspect", "--idx", &g, &p[1], &p[2], &p[3]], d);
    assert_clean_error(&out, &["x.gz", "gzip"]);

    // Unknown data set, model, schedule, zero epochs.
    assert_clean_error(
        &nnmark(&["train", "--dataset", "cifar"], d),
        &["cifar", "mnist10k"],
    );
    assert_clean_error(&nnmark(&["train", "--model", "vgg"], d), &["vgg", "lenet"]);
    assert_clean_error(&nnmark(&["train", "--schedule", "step:x"], d), &["step:x"]);
    assert_clean_error(
        &nnmark(&["train", "--epochs", "0"], d),
        &["epochs", "at least 1"],
    );
    assert_clean_error(&nnmark(&["--device", "tpu", "demo"], d), &["tpu"]);
}

#[test]
fn train_eval_and_model_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = nnmark(
        &[
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--out",
            "mlp.safetensors",
            "--json",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["seed"], 3);
    assert_eq!(report["versions"]["nnmark"], nnmark::VERSION);
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.85);

    let out = nnmark(&["eval", "--model", "mlp.safetensors", "--per-class"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("class 9") && text.contains("confusion"),
        "{text}"
    );

    // A weights file of another architecture.
    let out = nnmark(
        &["eval", "--model", "mlp.safetensors", "--arch", "lenet"],
        d,
    );
    assert_clean_error(&out, &["mlp.safetensors", "holds a mlp model", "lenet"]);

    // A label out of range for the model (12 with a 10-class model).
    let p = write_idx(d, &[1, 12, 3], true);
    let out = nnmark(
        &[
            "eval",
            "--model",
            "mlp.safetensors",
            "--idx",
            &p[0],
            &p[1],
            &p[2],
            &p[3],
        ],
        d,
    );
    assert_clean_error(&out, &["label 12", "10 classes"]);

    // A file that is not safetensors at all.
    std::fs::write(
        d.join("junk.safetensors"),
        b"\x05\x00\x00\x00\x00\x00\x00\x00hello",
    )
    .unwrap();
    let out = nnmark(&["eval", "--model", "junk.safetensors"], d);
    assert_clean_error(&out, &["junk.safetensors", "not a safetensors file"]);
}

#[test]
fn demo_trains_and_writes_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = nnmark(
        &["demo", "--epochs", "1", "--out-dir", "o", "--quiet"],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("test accuracy") && dir.path().join("o/lenet-mnist10k.safetensors").exists(),
        "{text}"
    );
}
