//! Loopback load test of `nnmark serve` (issue 6): single-image v2 inference requests against a
//! LeNet served by the release binary in its own process, from `--concurrency` client tasks.
//! Prints throughput, latency percentiles and the server's resident memory every 10,000
//! requests (flat memory = no per-request leak).
//!
//! `cargo build --release -p nnmark-cli -p nnmark-bench && ./target/release/serve_load [--requests N] [--concurrency C]`

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use nnmark::data::ImageShape;
use nnmark::model::{Architecture, Model, ModelSpec, Normalization};
use nnmark::weights::{self, WeightsMeta};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let requests = arg("--requests", 100_000);
    let concurrency = arg("--concurrency", 8);
    let dir = tempfile_dir();
    let model_path = dir.join("lenet.safetensors");
    let device = nnmark::device::parse_device("cpu").unwrap();
    device.seed(1);
    let spec = ModelSpec {
        architecture: Architecture::Lenet,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: Normalization::identity(1),
    };
    let model = Model::new(spec.clone(), &device).unwrap();
    weights::save(&model, &WeightsMeta::new(spec, "mnist10k", 1), &model_path).unwrap();
    let exe = std::env::current_exe().unwrap().with_file_name("nnmark");
    let mut server = Command::new(&exe)
        .args(["serve", "--model"])
        .arg(&model_path)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--protocol",
            "v2",
            "--reveal",
            "probabilities",
        ])
        .env("NNMARK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (build nnmark-cli --release first): {e}",
                exe.display()
            )
        });
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("address")
        .to_string();
    let pid = server.id();
    // One MNIST-sized image of mid-grey pixels, sent as a v2 FP32 tensor.
    let body = serde_json::to_vec(&serde_json::json!({"inputs": [{
        "name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![0.5f32; 784]}]}))
    .unwrap();
    let infer = format!("{url}/v2/models/model/infer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rss_before = rss_kib(pid);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let done = Arc::new(AtomicUsize::new(0));
    let mut rss_series = vec![(0usize, rss_before)];
    let started = Instant::now();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        // Warm-up.
        for _ in 0..200 {
            client
                .post(&infer)
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        let mut stream = futures::stream::iter(0..requests)
            .map(|_| {
                let (client, infer, body) = (client.clone(), infer.clone(), body.clone());
                async move {
                    let t = Instant::now();
                    let r = client.post(&infer).body(body).send().await.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                }
            })
            .buffer_unordered(concurrency);
        while let Some(ms) = stream.next().await {
            latencies.lock().unwrap().push(ms);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(10_000) {
                rss_series.push((n, rss_kib(pid)));
            }
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    println!(
        "machine: {} cores; {requests} single-image LeNet requests over v2, {concurrency} in flight, client and server on the same machine",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "throughput {:.0} inferences/s ({secs:.1} s); latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        requests as f64 / secs,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        l[l.len() - 1]
    );
    println!(
        "server RSS (KiB) by requests served: {}",
        rss_series
            .iter()
            .map(|(n, r)| format!("{n}: {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nnmark-serve-load-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
