//! `nnmark verify --endpoint` against the servers suspects really run: KServe's model server
//! and MLServer (from PyPI, set up by `tools/setup-interop-venv.sh servers`), each hosting
//! nnmark's ONNX export through onnxruntime as a third party would wrap it: the input declared
//! channels first, channels last or flattened, the answer given as probabilities, logits or
//! labels. A marked LeNet must be accused and an independently trained one must not, with no
//! flag but `--endpoint` (the model, its input and its output are found from the metadata).
//!
//! Ignored (it installs MLServer from PyPI and starts 36 servers; 2 min 20 s on 2 cores, the
//! venvs' install included): `cargo test -p nnmark-cli --test interop_servers -- --ignored
//! --nocapture`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn nnmark(args: &[&str], cwd: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnmark"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nnmark {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /v2/health/ready` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/health/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn wait_ready(port: u16, server: &mut Server, log: &Path) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        if ready(port) {
            return;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "the server exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "no ready server after 90 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn start(kind: &str, onnx: &Path, layout: &str, output: &str, dir: &Path) -> (Server, u16) {
    let port = free_port();
    let log = dir.join(format!("{kind}-{layout}-{output}.log"));
    let interop = repo().join("tools/interop");
    let mut cmd = match kind {
        "kserve" => {
            let mut c = Command::new(repo().join("tools/.venv-interop/bin/python"));
            c.arg(interop.join("kserve_server.py"))
                .arg(port.to_string())
                .arg("digits");
            c
        }
        _ => {
            // An MLServer model repository: settings, and one model folder with its runtime.
            let root = dir.join(format!("mlserver-{layout}-{output}"));
            let model = root.join("digits");
            std::fs::create_dir_all(&model).unwrap();
            for f in ["mlserver_runtime.py", "onnx_model.py"] {
                std::fs::copy(interop.join(f), model.join(f)).unwrap();
            }
            let settings = serde_json::json!({
                "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "parallel_workers": 0,
            });
            std::fs::write(root.join("settings.json"), settings.to_string()).unwrap();
            let input = match layout {
                "nchw" => {
                    serde_json::json!({"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]})
                }
                "nhwc" => {
                    serde_json::json!({"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]})
                }
                _ => serde_json::json!({"name": "x", "datatype": "FP32", "shape": [-1, 784]}),
            };
            let out = match output {
                "labels" => {
                    serde_json::json!({"name": "label", "datatype": "INT64", "shape": [-1]})
                }
                name => serde_json::json!({"name": name, "datatype": "FP32", "shape": [-1, 10]}),
            };
            let settings = serde_json::json!({
                "name": "digits", "implementation": "mlserver_runtime.OnnxRuntimeModel",
                "inputs": [input], "outputs": [out],
            });
            std::fs::write(model.join("model-settings.json"), settings.to_string()).unwrap();
            let mut c = Command::new(repo().join("tools/.venv-mlserver/bin/mlserver"));
            c.arg("start").arg(&root);
            c
        }
    };
    let child = cmd
        .env("NNMARK_ONNX", onnx)
        .env("NNMARK_LAYOUT", layout)
        .env("NNMARK_OUTPUT", output)
        .env("NNMARK_SHAPE", "1,28,28")
        .env("NNMARK_CLASSES", "10")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::options().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut server = Server(child);
    wait_ready(port, &mut server, &log);
    (server, port)
}

#[test]
#[ignore = "installs MLServer from PyPI and starts 36 servers (about 2.5 minutes)"]
fn verify_finds_the_mark_through_kserve_and_mlserver_in_every_layout() {
    let setup = Command::new("bash")
        .arg(repo().join("tools/setup-interop-venv.sh"))
        .arg("servers")
        .status()
        .unwrap();
    assert!(
        setup.success(),
        "tools/setup-interop-venv.sh servers failed"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (seed, out) in [("1", "clean.safetensors"), ("2", "independent.safetensors")] {
        nnmark(
            &[
                "train", "--model", "lenet", "--epochs", "2", "--seed", seed, "--out", out,
            ],
            d,
        );
    }
    nnmark(
        &[
            "embed",
            "--scheme",
            "adi",
            "--model",
            "clean.safetensors",
            "--out",
            "marked.safetensors",
            "--key",
            "owner.nnkey",
        ],
        d,
    );
    for m in ["marked", "independent"] {
        nnmark(
            &[
                "export",
                "--model",
                &format!("{m}.safetensors"),
                "--onnx",
                &format!("{m}.onnx"),
            ],
            d,
        );
    }
    let mut rows = Vec::new();
    for kind in ["kserve", "mlserver"] {
        for layout in ["nchw", "nhwc", "flat"] {
            for output in ["probabilities", "logits", "labels"] {
                for suspect in ["marked", "independent"] {
                    let onnx = d.join(format!("{suspect}.onnx"));
                    let (server, port) = start(kind, &onnx, layout, output, d);
                    let evidence = format!("{kind}-{layout}-{output}-{suspect}.json");
                    nnmark(
                        &[
                            "verify",
                            "--key",
                            "owner.nnkey",
                            "--endpoint",
                            &format!("http://127.0.0.1:{port}"),
                            "--evidence",
                            &evidence,
                        ],
                        d,
                    );
                    drop(server);
                    let doc: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(d.join(&evidence)).unwrap()).unwrap();
                    let decision = &doc["body"]["decision"];
                    let watermarked = decision["watermarked"].as_bool().unwrap();
                    let row = format!(
                        "{kind:8} {layout:4} {output:13} {suspect:11} watermarked={watermarked} key items {} p={:.2e}",
                        decision["key_answers"],
                        decision["p_value"].as_f64().unwrap()
                    );
                    eprintln!("{row}");
                    assert_eq!(watermarked, suspect == "marked", "{row}");
                    rows.push(row);
                }
            }
        }
    }
    assert_eq!(rows.len(), 36);
}
