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
    // An image shape that would ask for gigabytes per image.
    assert_clean_error(
        &nnmark(
            &[
                "data",
                "inspect",
                "--image-folders",
                "a",
                "b",
                "--image-shape",
                "1x100000x100000",
            ],
            d,
        ),
        &["1x100000x100000", "4096"],
    );
    assert_clean_error(
        &nnmark(&["train", "--epochs", "0"], d),
        &["epochs", "at least 1"],
    );
    assert_clean_error(&nnmark(&["--device", "tpu", "demo"], d), &["tpu"]);
}

/// `train --seeds`: one file per seed, trained side by side, each the file `--seed N` writes
/// alone (the same SHA-256); an output name without `{seed}` and bad seed lists are refused
/// before any training.
#[test]
fn train_with_several_seeds_writes_the_single_seed_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--model", "mlp", "--epochs", "1", "--json"];
        args.extend_from_slice(extra);
        let out = nnmark(&args, d);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let many = train(&["--seeds", "3-4", "--out", "mlp-{seed}.safetensors"]);
    let many = many.as_array().unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(
        (many[0]["seed"].as_u64(), many[1]["seed"].as_u64()),
        (Some(3), Some(4))
    );
    assert!(d.join("mlp-3.safetensors").exists() && d.join("mlp-4.safetensors").exists());
    assert_ne!(many[0]["sha256"], many[1]["sha256"]);
    let alone = train(&["--seed", "4", "--out", "alone.safetensors"]);
    assert_eq!(alone["sha256"], many[1]["sha256"], "side by side = alone");
    assert_eq!(alone["test_accuracy"], many[1]["test_accuracy"]);

    assert_clean_error(
        &nnmark(&["train", "--seeds", "1-2", "--out", "m.safetensors"], d),
        &["{seed}", "m.safetensors"],
    );
    assert!(!d.join("m.safetensors").exists());
    assert_clean_error(
        &nnmark(&["train", "--seeds", "5-2"], d),
        &["5-2", "backwards"],
    );
    assert_clean_error(&nnmark(&["train", "--seeds", "1,x"], d), &["'x'"]);
    assert_clean_error(&nnmark(&["train", "--seeds", "1,2,1"], d), &["twice"]);
    // A usage error: clap's own rendering (with the usage line), not a one-liner.
    let both = nnmark(&["train", "--seeds", "1", "--seed", "2"], d);
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(
        !both.status.success() && err.contains("cannot be used with"),
        "{err}"
    );
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

    // A label out of range for the model (12 with a 10-class model): the labels also skip
    // classes, which the data loader refuses first, naming the largest label.
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
        dir.path().join("o/lenet-mnist10k.safetensors").exists()
            && dir.path().join("o/owner.nnkey").exists(),
        "{text}"
    );
    // Each local verdict read from its own line: the marked model accused, the independent
    // one not.
    let verdict_of = |who: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("verify {who}:")))
            .unwrap_or_else(|| panic!("no verdict line for the {who}: {text}"))
            .rsplit("-> ")
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(verdict_of("watermarked model"), "WATERMARKED", "{text}");
    assert_eq!(verdict_of("independent model"), "not watermarked", "{text}");
    // The remote half: served on loopback, verified through the API, evidence signed.
    assert!(
        text.contains("verified it through the API: WATERMARKED")
            && text.contains("o/evidence.json"),
        "{text}"
    );
    let check = ok_stdout(&nnmark(
        &[
            "evidence",
            "check",
            "o/evidence.json",
            "--public-key",
            "o/owner-signing.pem.pub",
            "--key",
            "o/owner.nnkey",
        ],
        dir.path(),
    ));
    assert!(
        check.contains("signature valid") && check.contains("WATERMARKED"),
        "{check}"
    );
    let check = ok_stdout(&nnmark(
        &[
            "evidence",
            "check",
            "o/evidence.json",
            "--vk",
            "o/owner-vk.json",
        ],
        dir.path(),
    ));
    assert!(
        check.contains("commitment is the verification key's"),
        "{check}"
    );
    remote_commands(dir.path());
}

/// Starts `nnmark serve ARGS --listen 127.0.0.1:0` in `d` with `envs`; returns it and the
/// address its first line names. The line is read on a thread, so a server that hangs before
/// printing fails the test after a minute instead of hanging CI.
fn spawn_serve(d: &Path, args: &[&str], envs: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut server = Command::new(env!("CARGO_BIN_EXE_nnmark"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .envs(envs.iter().copied())
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = server.kill();
            let out = server.wait_with_output().unwrap();
            panic!(
                "serve printed no address within 60 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (server, url)
}

/// The status line of a raw HTTP/1.1 GET of `path` at `url` (`http://host:port`), with an
/// optional bearer token.
fn http_get_status(url: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// `serve` as a real process (token, TF Serving, top-k), `verify --endpoint` against it,
/// a refused token, graceful SIGTERM, the token from `NNMARK_SERVE_TOKEN`, `export` to ONNX
/// and the ONNX file as a suspect.
fn remote_commands(d: &Path) {
    std::fs::write(d.join("token"), "t0ps3cret\n").unwrap();
    let (mut server, url) = spawn_serve(
        d,
        &[
            "--model",
            "o/lenet-mnist10k-marked.safetensors",
            "--protocol",
            "tf-serving",
            "--reveal",
            "top-k:2",
            "--token-file",
            "token",
        ],
        &[],
    );
    let out = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "o/owner.nnkey",
            "--endpoint",
            &url,
            "--token-file",
            "token",
            "--evidence",
            "ev.json",
            "--signing-key",
            "o/owner-signing.pem",
            "--json",
        ],
        d,
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"]["watermarked"], true, "{v}");
    assert_eq!(v["suspect"]["protocol"], "tf-serving");
    assert!(v["decision"]["key_answers"].as_u64().unwrap() < 50, "{v}");
    // Without the token: a one-line error naming the status.
    let denied = nnmark(
        &[
            "verify",
            "--key",
            "o/owner.nnkey",
            "--endpoint",
            &url,
            "--protocol",
            "tf-serving",
        ],
        d,
    );
    assert_clean_error(&denied, &["401"]);
    // SIGTERM: the server finishes and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed().as_secs() < 15, "server ignored SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("/v1/models/model") && !log.contains("t0ps3cret"),
        "{log}"
    );
    // The token from the environment instead of a file: required, and accepted.
    let (mut env_server, env_url) = spawn_serve(
        d,
        &[
            "--model",
            "o/lenet-mnist10k-marked.safetensors",
            "--protocol",
            "tf-serving",
        ],
        &[("NNMARK_SERVE_TOKEN", "fr0m-env")],
    );
    let path = "/v1/models/model";
    assert!(http_get_status(&env_url, path, None).contains(" 401 "));
    assert!(http_get_status(&env_url, path, Some("wrong")).contains(" 401 "));
    assert!(http_get_status(&env_url, path, Some("fr0m-env")).contains(" 200 "));
    env_server.kill().unwrap();
    let _ = env_server.wait();
    // ONNX: export the marked model and verify the file directly.
    ok_stdout(&nnmark(
        &[
            "export",
            "--model",
            "o/lenet-mnist10k-marked.safetensors",
            "--onnx",
            "m.onnx",
        ],
        d,
    ));
    let out = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "o/owner.nnkey",
            "--model",
            "m.onnx",
            "--evidence",
            "onnx-ev.json",
        ],
        d,
    ));
    assert!(
        out.contains("WATERMARKED") && out.contains("unsigned"),
        "{out}"
    );
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The commitment `embed` wrote beside the key, timestamped at a local RFC 3161 authority
/// (`openssl ts`): `verify` says when the key was committed, refuses a foreign authority's
/// token, and refuses a commitment the key does not match.
fn key_commitment_and_timestamps(d: &Path) {
    use nnmark_tsp::local_authority::{KeyKind, LocalAuthority};
    let tsa = LocalAuthority::new(d, "tsa", KeyKind::Rsa, 10).unwrap();
    LocalAuthority::new(d, "foreign", KeyKind::EcP256, 10).unwrap();
    ok_stdout(&nnmark(
        &[
            "timestamp",
            "request",
            "--commitment",
            "owner.commitment.json",
            "--out",
            "c.tsq",
        ],
        d,
    ));
    let response = tsa.reply(&std::fs::read(d.join("c.tsq")).unwrap()).unwrap();
    std::fs::write(d.join("c.tsr"), response).unwrap();
    assert_clean_error(
        &nnmark(
            &[
                "timestamp",
                "attach",
                "--commitment",
                "owner.commitment.json",
                "--response",
                "c.tsr",
                "--tsa-cert",
                "foreign/ca.crt",
            ],
            d,
        ),
        &["does not chain to a trusted certificate"],
    );
    let text = ok_stdout(&nnmark(
        &[
            "timestamp",
            "attach",
            "--commitment",
            "owner.commitment.json",
            "--response",
            "c.tsr",
            "--tsa-cert",
            "tsa/ca.crt",
        ],
        d,
    ));
    assert!(text.contains("committed no later than 20"), "{text}");
    let verify = |cert: &str| {
        ok_stdout(&nnmark(
            &[
                "verify",
                "--key",
                "owner.nnkey",
                "--model",
                "marked.safetensors",
                "--tsa-cert",
                cert,
            ],
            d,
        ))
    };
    let text = verify("tsa/ca.crt");
    assert!(
        text.contains("the key matches its commitment")
            && text.contains("committed no later than 20")
            && text.contains("RFC 3161 timestamp by CN=tsa TSA"),
        "{text}"
    );
    let text = verify("foreign/ca.crt");
    assert!(
        text.contains("no verified timestamp") && text.contains("1 token(s) refused"),
        "{text}"
    );
    assert_clean_error(
        &nnmark(
            &[
                "timestamp",
                "verify",
                "--commitment",
                "owner.commitment.json",
                "--tsa-cert",
                "foreign/ca.crt",
            ],
            d,
        ),
        &["no timestamp verified"],
    );
    // `key commit` rewrites the same commitment for a key that has its salt.
    let text = ok_stdout(&nnmark(
        &[
            "key",
            "commit",
            "--key",
            "owner.nnkey",
            "--out",
            "again.commitment.json",
        ],
        d,
    ));
    assert!(
        text.contains("wrote key commitment again.commitment.json"),
        "{text}"
    );
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(f)).unwrap()).unwrap()
    };
    assert_eq!(
        read("again.commitment.json")["commitment"],
        read("owner.commitment.json")["commitment"]
    );
    // A commitment that is not this key's.
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("owner.commitment.json")).unwrap())
            .unwrap();
    other["commitment"] = hex::encode([7u8; 32]).into();
    std::fs::write(d.join("other.commitment.json"), other.to_string()).unwrap();
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "owner.nnkey",
                "--model",
                "marked.safetensors",
                "--commitment",
                "other.commitment.json",
            ],
            d,
        ),
        &["does not match the key"],
    );
}

#[test]
fn embed_verify_reveal_and_public_check_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok_stdout(&nnmark(
        &[
            "train",
            "--epochs",
            "2",
            "--out",
            "clean.safetensors",
            "--quiet",
        ],
        d,
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_nnmark"))
        .args([
            "embed",
            "--scheme",
            "adi",
            "--model",
            "clean.safetensors",
            "--epochs",
            "3",
            "--lr",
            "0.02",
            "--param",
            "per_batch=24",
            "--out",
            "marked.safetensors",
            "--key",
            "owner.nnkey",
            "--quiet",
        ])
        .env("NNMARK_LOG", "trace")
        .current_dir(d)
        .output()
        .unwrap();
    let embed_text = ok_stdout(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(
        embed_text.contains("marked model matches") && embed_text.contains("provable at fpr 1e-6"),
        "{embed_text}"
    );
    // A mark the model has not learnt is refused before anything is written.
    assert_clean_error(
        &nnmark(
            &[
                "embed",
                "--scheme",
                "adi",
                "--model",
                "clean.safetensors",
                "--epochs",
                "1",
                "--param",
                "per_batch=1",
                "--out",
                "weak.safetensors",
                "--key",
                "weak.nnkey",
                "--quiet",
            ],
            d,
        ),
        &["proving ownership at fpr 1e-6 takes", "nothing was written"],
    );
    assert!(!d.join("weak.nnkey").exists() && !d.join("weak.safetensors").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("owner.nnkey"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Secrets never reach the output: no nonce appears, even with trace logging.
    let key = nnmark::KeyFile::load(&d.join("owner.nnkey")).unwrap();
    for n in key.nonces.as_ref().unwrap() {
        assert!(!embed_text.contains(&hex::encode(n)));
    }
    // Without --key-seed the trigger set comes from a seed drawn from the OS, not from the
    // public training seed (1): it is recorded in the key, and never printed.
    assert_ne!(key.meta.seed, 1);
    assert_eq!(key.meta.notes["train_seed"], 1);
    assert!(
        !embed_text.contains(&key.meta.seed.to_string())
            && embed_text.contains("drawn from the OS"),
        "{embed_text}"
    );

    let text = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
        ],
        d,
    ));
    assert!(
        text.contains("verdict: WATERMARKED")
            && text.contains("the key matches its commitment")
            && text.contains("no verified timestamp"),
        "{text}"
    );
    key_commitment_and_timestamps(d);
    let text = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "clean.safetensors",
        ],
        d,
    ));
    assert!(text.contains("not shown to carry the watermark"), "{text}");
    // Calibrated null: from model files, or from reference models trained on the spot.
    let text = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
            "--null",
            "calibrated",
            "--reference",
            "clean.safetensors",
        ],
        d,
    ));
    assert!(
        text.contains("reference clean.safetensors")
            && text.contains("calibrated on 1 reference models")
            && text.contains("verdict: WATERMARKED"),
        "{text}"
    );
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "owner.nnkey",
                "--model",
                "marked.safetensors",
                "--null",
                "calibrated",
            ],
            d,
        ),
        &["no reference model files"],
    );
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "owner.nnkey",
                "--model",
                "marked.safetensors",
                "--reference",
                "clean.safetensors",
            ],
            d,
        ),
        &["--null calibrated"],
    );
    let text = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "clean.safetensors",
            "--null",
            "calibrated",
            "--reference-seeds",
            "7",
            "--reference-epochs",
            "1",
        ],
        d,
    ));
    assert!(
        text.contains("reference lenet seed 7") && text.contains("not shown"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
            "--json",
            "--fpr",
            "1e-9",
        ],
        d,
    )))
    .unwrap();
    assert_eq!(json["verdict"]["watermarked"], true);
    assert_eq!(json["verdict"]["fpr"], 1e-9);
    assert_eq!(json["versions"]["burn"], "0.22.1");

    // Public verification: export the verification key, reveal 30 items, check publicly.
    ok_stdout(&nnmark(
        &["vk", "export", "--key", "owner.nnkey", "--out", "vk.json"],
        d,
    ));
    let text = ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
            "--reveal",
            "30",
            "--challenge",
            "judge-42",
            "--bundle",
            "reveal.json",
        ],
        d,
    ));
    assert!(text.contains("revealed 30 items"), "{text}");
    let public = |bundle: &str, challenge: &str, model: &str| {
        nnmark(
            &[
                "verify",
                "--public",
                bundle,
                "--vk",
                "vk.json",
                "--challenge",
                challenge,
                "--model",
                model,
                "--commitment",
                "owner.commitment.json",
            ],
            d,
        )
    };
    let text = ok_stdout(&public("reveal.json", "judge-42", "marked.safetensors"));
    assert!(
        text.contains("30 openings match")
            && text.contains("the verification key matches its commitment")
            && text.contains("verdict: WATERMARKED"),
        "{text}"
    );
    let text = ok_stdout(&public("reveal.json", "judge-42", "clean.safetensors"));
    assert!(text.contains("not shown to carry the watermark"), "{text}");
    // The bundle must answer the challenge the judge issued.
    assert_clean_error(
        &public("reveal.json", "judge-99", "marked.safetensors"),
        &[
            "reveal.json",
            "answers challenge 'judge-42', not the one the judge issued ('judge-99')",
        ],
    );
    let missing = nnmark(
        &[
            "verify",
            "--public",
            "reveal.json",
            "--vk",
            "vk.json",
            "--model",
            "marked.safetensors",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("--challenge <CHALLENGE>"),
        "{err}"
    );
    // A second reveal carries the first as proof of the items it skips.
    ok_stdout(&nnmark(
        &[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
            "--reveal",
            "30",
            "--challenge",
            "judge-43",
            "--bundle",
            "reveal2.json",
        ],
        d,
    ));
    let text = ok_stdout(&public("reveal2.json", "judge-43", "marked.safetensors"));
    assert!(
        text.contains("skipping the items of 1 earlier reveals")
            && text.contains("30 items spent by 1 earlier reveals, cap 70 of 100")
            && text.contains("verdict: WATERMARKED"),
        "{text}"
    );
    let mut unproved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("reveal2.json")).unwrap()).unwrap();
    unproved["prior"] = serde_json::json!([]);
    std::fs::write(d.join("unproved.json"), unproved.to_string()).unwrap();
    assert_clean_error(
        &public("unproved.json", "judge-43", "marked.safetensors"),
        &[
            "unproved.json",
            "no earlier reveal carried in the bundle opened it",
        ],
    );
    let inspect = ok_stdout(&nnmark(&["key", "inspect", "owner.nnkey"], d));
    assert!(
        inspect.contains("scheme        adi") && inspect.contains("(60 spent in 2 public reveals)"),
        "{inspect}"
    );
    for n in key.nonces.as_ref().unwrap() {
        assert!(!inspect.contains(&hex::encode(n)));
    }
    // A changed label in the bundle fails its commitment.
    let mut bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("reveal.json")).unwrap()).unwrap();
    let label = bundle["items"][3]["label"].as_u64().unwrap();
    bundle["items"][3]["label"] = ((label + 1) % 10).into();
    std::fs::write(d.join("forged.json"), bundle.to_string()).unwrap();
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--public",
                "forged.json",
                "--vk",
                "vk.json",
                "--challenge",
                "judge-42",
                "--model",
                "marked.safetensors",
            ],
            d,
        ),
        &["forged.json", "does not match its commitment"],
    );

    // Bad keys and mismatches are one-line errors.
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "owner.nnkey",
                "--model",
                "marked.safetensors",
                "--scheme",
                "zhang-noise",
            ],
            d,
        ),
        &["made by scheme 'adi'"],
    );
    std::fs::write(d.join("empty.nnkey"), b"").unwrap();
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "empty.nnkey",
                "--model",
                "marked.safetensors",
            ],
            d,
        ),
        &["empty.nnkey", "empty"],
    );
    let mut bytes = std::fs::read(d.join("owner.nnkey")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(d.join("corrupt.nnkey"), &bytes).unwrap();
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "corrupt.nnkey",
                "--model",
                "marked.safetensors",
            ],
            d,
        ),
        &["corrupt.nnkey", "integrity check"],
    );
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "marked.safetensors",
                "--model",
                "marked.safetensors",
            ],
            d,
        ),
        &["not an nnmark key"],
    );
    // A model with another class count.
    let p = write_idx(d, &[0, 1, 2, 0, 1, 2], true);
    ok_stdout(&nnmark(
        &[
            "train",
            "--idx",
            &p[0],
            &p[1],
            &p[2],
            &p[3],
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--out",
            "three.safetensors",
            "--quiet",
        ],
        d,
    ));
    assert_clean_error(
        &nnmark(
            &[
                "verify",
                "--key",
                "owner.nnkey",
                "--model",
                "three.safetensors",
            ],
            d,
        ),
        &["3 classes", "10-class"],
    );
    assert_clean_error(
        &nnmark(
            &[
                "embed",
                "--scheme",
                "adi",
                "--param",
                "itemz=5",
                "--from-scratch",
                "--out",
                "x",
                "--key",
                "k",
            ],
            d,
        ),
        &["itemz", "known parameters"],
    );
}

/// The model-dependent schemes through the binary: frontier stitching on an MLP verified with
/// its exact random-label null (and the paper's labels refused as unprovable once shadow models
/// measure how often unmarked models match them), AIME's signature read back, Uchida distilled into a LeNet and read from
/// its weights; and their bad inputs as one-line errors.
#[test]
fn model_dependent_schemes_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| nnmark(args, d);
    ok_stdout(&run(&[
        "train",
        "--model",
        "mlp",
        "--epochs",
        "10",
        "--out",
        "mlp.safetensors",
        "--quiet",
    ]));
    ok_stdout(&run(&[
        "train",
        "--model",
        "lenet",
        "--epochs",
        "2",
        "--out",
        "lenet.safetensors",
        "--quiet",
    ]));

    let out = ok_stdout(&run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "frontier-stitching",
        "--model",
        "mlp.safetensors",
        "--epochs",
        "10",
        "--lr",
        "0.01",
        "--schedule",
        "constant",
        "--out",
        "fs.safetensors",
        "--key",
        "fs.nnkey",
        "--quiet",
    ]));
    assert!(out.contains("marked model matches 100/100"), "{out}");
    let out = ok_stdout(&run(&[
        "verify",
        "--key",
        "fs.nnkey",
        "--model",
        "fs.safetensors",
        "--fpr",
        "0.05",
    ]));
    assert!(
        out.contains("random labels other than the source class") && out.contains("WATERMARKED"),
        "{out}"
    );
    // The paper's labels: unmarked shadow models answer most items right, so no number of
    // matches proves anything at 1e-6, and nothing is written.
    let refused = run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "frontier-stitching",
        "--param",
        "labels=source",
        "--model",
        "mlp.safetensors",
        "--epochs",
        "10",
        "--lr",
        "0.01",
        "--schedule",
        "constant",
        "--shadows",
        "2",
        "--shadow-epochs",
        "2",
        "--shadow-cache",
        "shadows",
        "--out",
        "fs-source.safetensors",
        "--key",
        "fs-source.nnkey",
        "--quiet",
    ]);
    assert_clean_error(
        &refused,
        &["no mark on this key can be proved", "labels=random"],
    );
    assert!(!d.join("fs-source.nnkey").exists() && !d.join("fs-source.safetensors").exists());

    let out = ok_stdout(&run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "aime",
        "--param",
        "signature=FCIS",
        "--param",
        "width=2",
        "--param",
        "repeat=1",
        // The paper's 8-digit signature cannot reach fpr 1e-6 even when read exactly.
        "--allow-unprovable",
        "--model",
        "lenet.safetensors",
        "--epochs",
        "5",
        "--lr",
        "0.002",
        "--schedule",
        "constant",
        "--shadows",
        "2",
        "--shadow-epochs",
        "1",
        "--shadow-cache",
        "shadows",
        "--out",
        "aime.safetensors",
        "--key",
        "aime.nnkey",
        "--quiet",
    ]));
    assert!(
        out.contains("marked model matches 8/8") && out.contains("NOT PROVABLE at fpr 1e-6"),
        "{out}"
    );
    let out = ok_stdout(&run(&[
        "verify",
        "--key",
        "aime.nnkey",
        "--model",
        "aime.safetensors",
        "--fpr",
        "0.001",
    ]));
    assert!(out.contains("read \"FCIS\" (exact)"), "{out}");
    // Without shadow models an AIME key has no null to be judged by: nothing is written.
    let refused = run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "aime",
        "--param",
        "signature=FCIS",
        "--param",
        "width=2",
        "--model",
        "lenet.safetensors",
        "--epochs",
        "1",
        "--shadows",
        "0",
        "--out",
        "aime0.safetensors",
        "--key",
        "aime0.nnkey",
        "--quiet",
    ]);
    assert_clean_error(&refused, &["records no shadow models", "--shadows N"]);
    assert!(!d.join("aime0.nnkey").exists());

    let out = ok_stdout(&run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "uchida",
        "--distill",
        "--model",
        "lenet.safetensors",
        "--arch",
        "lenet",
        "--epochs",
        "5",
        "--param",
        "owner=alice",
        "--out",
        "uchida.safetensors",
        "--key",
        "uchida.nnkey",
        "--quiet",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["mode"], "distillation");
    assert_eq!(v["params"]["layer"], "conv2");
    assert_eq!(v["key_match_rate"], 1.0, "{v}");
    let out = ok_stdout(&run(&[
        "verify",
        "--key",
        "uchida.nnkey",
        "--model",
        "uchida.safetensors",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["verdict"]["watermarked"], true, "{v}");
    // White-box keys are committed too: the matrix and bits decide the verdict.
    assert_eq!(v["key_commitment"]["key_checked"], true, "{v}");
    let out = ok_stdout(&run(&[
        "verify",
        "--key",
        "uchida.nnkey",
        "--model",
        "lenet.safetensors",
    ]));
    assert!(out.contains("not shown"), "{out}");

    // Bad inputs: one line each, naming the value.
    for (args, needles) in [
        (
            vec!["--scheme", "aime", "--param", "signature=Zoë"],
            vec!["'ë'", "not printable ASCII"],
        ),
        (
            vec!["--scheme", "frontier-stitching", "--param", "epsilon=1.5"],
            vec!["epsilon", "1.5", "(0, 1]"],
        ),
        (
            vec!["--scheme", "uchida", "--param", "layer=conv7"],
            vec!["conv7", "conv1, conv2"],
        ),
        (
            vec!["--scheme", "uchida", "--param", "bits=400"],
            vec!["400", "exceeds M = 150"],
        ),
    ] {
        let mut full = vec!["embed", "--model", "lenet.safetensors", "--epochs", "1"];
        full.extend(args);
        full.extend(["--out", "x.safetensors", "--key", "x.nnkey", "--quiet"]);
        assert_clean_error(&run(&full), &needles);
        assert!(!d.join("x.nnkey").exists() && !d.join("x.safetensors").exists());
    }
    // Uchida needs a convolution.
    assert_clean_error(
        &run(&[
            "embed",
            "--scheme",
            "uchida",
            "--model",
            "mlp.safetensors",
            "--out",
            "x.safetensors",
            "--key",
            "x.nnkey",
            "--quiet",
        ]),
        &["mlp", "convolution"],
    );
}

/// `nnmark attack`: pruning and fine-tuning of a marked model with the attacker's third of the
/// data, JSON output, a query filter verified through `verify --through`, and bad attack specs
/// as one-line errors before any work.
#[test]
fn attack_command_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| nnmark(args, d);
    ok_stdout(&run(&[
        "train",
        "--model",
        "lenet",
        "--epochs",
        "2",
        "--out",
        "clean.safetensors",
        "--quiet",
    ]));
    ok_stdout(&run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "zhang-noise",
        "--model",
        "clean.safetensors",
        "--epochs",
        "3",
        "--shadows",
        "2",
        "--shadow-epochs",
        "1",
        "--shadow-cache",
        "shadows",
        "--out",
        "marked.safetensors",
        "--key",
        "owner.nnkey",
        "--quiet",
    ]));
    let out = ok_stdout(&run(&[
        "attack",
        "--model",
        "marked.safetensors",
        "--attack",
        "prune:0.3+ftll:epochs=1",
        "--out",
        "stolen.safetensors",
    ]));
    assert!(
        out.contains("prune:0.3+ftll:epochs=1,lr=0.01: accuracy")
            && out.contains("attacker data 2666 images")
            && !out.contains("watermark:"),
        "without a key the report says nothing about the mark: {out}"
    );
    // With the key, the report measures what the attack did to the mark: the key's verdict on
    // the model before and after, at the default false-positive rate against the key's null.
    let attacked = |attack: &str| -> serde_json::Value {
        let json: serde_json::Value = serde_json::from_str(&ok_stdout(&run(&[
            "attack",
            "--model",
            "marked.safetensors",
            "--attack",
            attack,
            "--key",
            "owner.nnkey",
            "--seed",
            "3",
            "--out",
            "attacked.safetensors",
            "--json",
        ])))
        .unwrap();
        let before = &json["watermark"]["before"];
        assert_eq!(before["watermarked"], true, "{json}");
        assert_eq!(before["queries"], 100, "{json}");
        json
    };
    let matches =
        |json: &serde_json::Value, when: &str| json["watermark"][when]["matches"].as_u64().unwrap();
    let json = attacked("quantize:4");
    assert_eq!(json["attack"], "quantize:4,scope=tensor");
    assert_eq!(json["seed"], 3);
    assert!(json["accuracy_after"].as_f64().unwrap() > 0.8, "{json}");
    assert!(json["versions"]["nnmark"].is_string());
    assert_eq!(json["watermark"]["after"]["watermarked"], true, "{json}");
    // Fine-tuning every layer at a high learning rate erases the noise triggers: the report
    // must show the mark lost, not echo the key's strength.
    let json = attacked("ftal:epochs=3,lr=0.05");
    let threshold = json["watermark"]["after"]["threshold"].as_u64().unwrap();
    assert_eq!(json["watermark"]["after"]["watermarked"], false, "{json}");
    assert!(
        matches(&json, "after") < threshold && matches(&json, "before") >= threshold + 20,
        "{json}"
    );
    // A query filter leaves the weights; its effect is measured through it, accuracy too.
    let json = attacked("blur:2");
    assert!(matches(&json, "after") < matches(&json, "before"), "{json}");
    assert!(
        json["accuracy_after"].as_f64().unwrap() < json["accuracy_before"].as_f64().unwrap(),
        "accuracy behind a strong blur is measured through it: {json}"
    );
    // The noise triggers survive a mild blur in front of the model, and verify says so.
    let through = |filter: &str| {
        ok_stdout(&run(&[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
            "--through",
            filter,
        ]))
    };
    let text = through("blur:0.5");
    assert!(
        text.contains("marked.safetensors through blur:0.5: ")
            && text.contains("verdict: WATERMARKED"),
        "{text}"
    );
    let text = through("noise:0.5");
    assert!(
        text.contains("verdict: not shown to carry the watermark"),
        "heavy noise in front of the model hides the mark: {text}"
    );
    // A key with no default null (the paper's one target class, no shadow models) still
    // sizes and names the attack; the report says why the mark was not measured.
    ok_stdout(&run(&[
        "embed",
        "--key-seed",
        "1",
        "--scheme",
        "zhang-noise",
        "--param",
        "labels=target",
        "--model",
        "clean.safetensors",
        "--epochs",
        "1",
        "--shadows",
        "0",
        "--allow-unprovable",
        "--out",
        "target.safetensors",
        "--key",
        "target.nnkey",
        "--quiet",
    ]));
    let out = ok_stdout(&run(&[
        "attack",
        "--model",
        "target.safetensors",
        "--attack",
        "quantize:8",
        "--key",
        "target.nnkey",
        "--out",
        "q8.safetensors",
    ]));
    assert!(
        out.contains("watermark: not measured") && out.contains("records no shadow models"),
        "{out}"
    );
    assert_clean_error(
        &run(&[
            "attack",
            "--model",
            "marked.safetensors",
            "--attack",
            "shrink:1",
            "--out",
            "x",
        ]),
        &["shrink", "known attacks", "fine-prune", "overwrite"],
    );
    assert_clean_error(
        &run(&[
            "attack",
            "--model",
            "marked.safetensors",
            "--attack",
            "prune:1.2",
            "--out",
            "x",
        ]),
        &["prune", "1.2", "[0, 1)"],
    );
    assert_clean_error(
        &run(&[
            "verify",
            "--key",
            "owner.nnkey",
            "--model",
            "marked.safetensors",
            "--through",
            "prune:0.5",
        ]),
        &["not a query filter"],
    );
    assert!(!d.join("x").exists(), "nothing written on a bad spec");
}

/// `nnmark eval --config`: a tiny matrix, its cache on rerun, shards, merge and report, and a
/// bad configuration as a one-line error.
#[test]
fn eval_matrix_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| nnmark(args, d);
    std::fs::write(
        d.join("tiny.toml"),
        r#"
name = "tiny"
seeds = [1]
fpr = 1e-3
attacks = ["none", "prune:0.5", "quantize:8"]
[[models]]
dataset = "mnist10k"
arch = "mlp"
epochs = 2
[[schemes]]
name = "zhang-noise"
epochs = 2
lr = 0.01
"#,
    )
    .unwrap();
    let out = ok_stdout(&run(&[
        "eval",
        "--config",
        "tiny.toml",
        "--out",
        "ev",
        "--quiet",
    ]));
    assert!(
        out.contains("tiny: 3 cells (3 computed, 0 cached)"),
        "{out}"
    );
    assert!(d.join("ev/report.html").exists() && d.join("ev/report.md").exists());
    let out = ok_stdout(&run(&[
        "eval",
        "--config",
        "tiny.toml",
        "--out",
        "ev",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["summary"]["computed"], 0);
    assert_eq!(json["summary"]["cached"], 3);
    let out = ok_stdout(&run(&[
        "eval",
        "--config",
        "tiny.toml",
        "--out",
        "ev",
        "--shard",
        "0/2",
        "--quiet",
    ]));
    assert!(out.contains("shard 0/2"), "{out}");
    ok_stdout(&run(&[
        "eval",
        "--config",
        "tiny.toml",
        "--out",
        "ev",
        "--shard",
        "1/2",
        "--quiet",
    ]));
    let out = ok_stdout(&run(&[
        "eval",
        "merge",
        "ev/results-0-of-2.jsonl",
        "ev/results-1-of-2.jsonl",
        "--out",
        "merged.jsonl",
    ]));
    assert!(out.contains("merged 3 cells"), "{out}");
    let out = ok_stdout(&run(&["eval", "report", "merged.jsonl", "--out", "rep"]));
    assert!(out.contains("report.html"), "{out}");
    let md = std::fs::read_to_string(d.join("rep/report.md")).unwrap();
    assert!(md.contains("mnist10k / mlp / zhang-noise"), "{md}");

    std::fs::write(
        d.join("bad.toml"),
        std::fs::read_to_string(d.join("tiny.toml"))
            .unwrap()
            .replace("prune:0.5", "prune:1.5"),
    )
    .unwrap();
    assert_clean_error(
        &run(&["eval", "--config", "bad.toml", "--out", "ev2"]),
        &["prune", "1.5"],
    );
    assert!(!d.join("ev2").exists(), "nothing done for a bad config");
    assert_clean_error(
        &run(&[
            "eval",
            "--config",
            "tiny.toml",
            "--out",
            "ev",
            "--shard",
            "4",
        ]),
        &["SLURM_ARRAY_TASK_ID"],
    );
}
