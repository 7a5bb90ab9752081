//! Property tests over what a peer sends: the request parsers of the three wire protocols
//! (`serve` reads them from anyone), their response parsers (the client reads a suspect's
//! server), and the ONNX loader (a suspect's file). Inputs are valid messages with fields
//! replaced by arbitrary JSON, byte-mutated bodies, and arbitrary bytes; every parser must
//! answer `Ok` or a clean rejection, never panic, and a request must never decode to more
//! images than the batch limit. Seeded, a fixed number of cases (`NNMARK_FUZZ_CASES` raises
//! it).

use nnmark::data::ImageShape;
use nnmark::oracle::{Answer, Reveal};
use nnmark_remote::protocol::{
    ClassNames, labels_response, parse_labels_request, parse_labels_response, parse_tf_request,
    parse_tf_response, parse_v2_request, parse_v2_response, tf_response, v2_response,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

const MAX_BATCH: usize = 8;

fn cases() -> u32 {
    std::env::var("NNMARK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// Arbitrary JSON, with the numbers that break size arithmetic.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(784),
            Just(1_000_000_000),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(|n| json!(n)),
        prop_oneof![Just(u64::MAX), Just(1u64 << 61), any::<u64>()].prop_map(|n| json!(n)),
        prop_oneof![
            Just(0.5f64),
            Just(-0.0),
            Just(1e308),
            Just(f64::MIN_POSITIVE),
            any::<f64>()
        ]
        .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9_ ]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("FP32"),
            Just("UINT8"),
            Just("BYTES"),
            Just("INT64"),
            Just("input"),
            Just("probabilities")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn zeros(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

/// A valid v2 request whose fields are replaced by arbitrary values.
fn v2_request() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
    )
        .prop_map(|(shape, datatype, data, params)| {
            let mut t = json!({
                "name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": zeros(784)
            });
            if let Some(s) = shape {
                t["shape"] = s;
            }
            if let Some(d) = datatype {
                t["datatype"] = d;
            }
            if let Some(d) = data {
                t["data"] = d;
            }
            let mut body = json!({ "inputs": [t] });
            if let Some(p) = params {
                body["parameters"] = p;
            }
            serde_json::to_vec(&body).expect("serialises")
        })
}

fn byte_mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(move |edits| {
        let mut b = base.clone();
        for (i, v) in edits {
            let n = b.len();
            b[i % n] = v;
        }
        b
    })
}

#[test]
fn request_parsers_never_panic_and_respect_the_batch_limit() {
    let shape = ImageShape::MNIST;
    let valid = serde_json::to_vec(&json!({
        "inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": zeros(2 * 784)}]
    }))
    .expect("serialises");
    assert_eq!(parse_v2_request(&valid, shape, MAX_BATCH).unwrap().count, 2);
    let bodies = prop_oneof![
        v2_request(),
        json_value().prop_map(|v| serde_json::to_vec(&json!({ "instances": v })).expect("json")),
        json_value().prop_map(|v| serde_json::to_vec(&json!({ "inputs": v })).expect("json")),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        byte_mutated(valid.clone()),
        proptest::collection::vec(any::<u8>(), 0..256),
    ];
    runner(cases())
        .run(&bodies, |body| {
            let checks = [
                parse_v2_request(&body, shape, MAX_BATCH),
                parse_tf_request(&body, shape, MAX_BATCH),
                parse_labels_request(&body, "application/json", shape, MAX_BATCH),
                parse_labels_request(&body, "image/png", shape, MAX_BATCH),
            ];
            for images in checks.into_iter().flatten() {
                prop_assert!(images.count <= MAX_BATCH && images.count > 0);
                prop_assert_eq!(images.pixels.len(), images.count * shape.numel());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn response_parsers_never_panic() {
    let names = ClassNames::parse("fashion", 10).unwrap();
    let answers: Vec<Answer> = (0..3)
        .map(|i| Answer {
            label: i,
            scores: (0..10).map(|c| (c, 0.1)).collect(),
        })
        .collect();
    let valid = [
        v2_response("m", None, &answers, Reveal::Probabilities, 10, &names),
        tf_response(&answers, Reveal::Probabilities, 10, &names),
        labels_response(&answers, Reveal::TopK(3), &names, true),
    ];
    assert_eq!(parse_v2_response(&valid[0], 3, &names).unwrap().len(), 3);
    // Each valid answer with one field (at any depth up to 2) replaced by arbitrary JSON, or
    // arbitrary JSON outright.
    let mutated = (0usize..3, json_value(), any::<usize>(), any::<usize>()).prop_map(
        move |(which, v, i, j)| {
            let mut doc = valid[which].clone();
            replace_somewhere(&mut doc, v, i, j);
            doc
        },
    );
    runner(cases())
        .run(
            &(prop_oneof![mutated, json_value()], 0usize..6),
            |(doc, expected)| {
                for a in [
                    parse_v2_response(&doc, expected, &names),
                    parse_tf_response(&doc, expected, &names),
                    parse_labels_response(&doc, expected, &names),
                ]
                .into_iter()
                .flatten()
                {
                    prop_assert_eq!(a.len(), expected, "an answer count other than asked");
                    prop_assert!(a.iter().all(|x| x.label < 10));
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Replaces the value at a pseudo-random place (chosen by `i`, `j`) in `doc` with `v`.
fn replace_somewhere(doc: &mut Value, v: Value, i: usize, j: usize) {
    let slot = match doc {
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(i % m.len()).cloned().expect("non-empty");
            m.get_mut(&k)
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            a.get_mut(i % n)
        }
        _ => None,
    };
    match slot {
        Some(inner) if j.is_multiple_of(2) => replace_somewhere(inner, v, j / 2, i / 2),
        Some(inner) => *inner = v,
        None => *doc = v,
    }
}

#[test]
fn the_onnx_loader_never_panics() {
    use nnmark::Oracle;
    let device = nnmark::Device::flex();
    let spec = nnmark::model::ModelSpec {
        architecture: nnmark::model::Architecture::Mlp,
        input: ImageShape::MNIST,
        num_classes: 10,
        normalization: nnmark::model::Normalization::identity(1),
    };
    let model = nnmark::model::Model::seeded(spec.clone(), 1, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("m.safetensors");
    nnmark::weights::save(
        &model,
        &nnmark::weights::WeightsMeta::new(spec, "fuzz", 1),
        &weights,
    )
    .unwrap();
    let onnx = dir.path().join("m.onnx");
    nnmark_remote::export::export(&weights, &onnx).unwrap();
    let bytes = std::fs::read(&onnx).unwrap();
    let path = dir.path().join("suspect.onnx");
    runner(cases() / 8)
        .run(
            &prop_oneof![
                byte_mutated(bytes),
                proptest::collection::vec(any::<u8>(), 0..512)
            ],
            |b| {
                std::fs::write(&path, &b).unwrap();
                if let Ok(mut oracle) =
                    nnmark_remote::onnx::OnnxOracle::load(&path, None, Reveal::Label)
                {
                    let n = oracle.input_shape().numel();
                    let _ = oracle.query(&vec![0.5; n]);
                }
                Ok(())
            },
        )
        .unwrap();
}

/// A well-formed signed evidence body: 40 key items hidden among decoys, scored by the
/// library's own `score`, so `check` accepts it before any mutation.
fn evidence_body() -> nnmark_remote::verify::EvidenceBody {
    use nnmark_remote::client::SuspectInfo;
    use nnmark_remote::verify::{
        BinomialSummary, EVIDENCE_FORMAT, EvidenceBody, ItemKind, ItemRecord, KeyInfo, QueryRecord,
        RemoteVerifyOptions, ToolInfo, score,
    };
    let null = nnmark::verdict::NullModel::Chance { classes: 10 };
    let queries: Vec<QueryRecord> = (0..10u64)
        .map(|q| QueryRecord {
            seq: q,
            sent_at: "2026-11-30T00:00:00Z".into(),
            latency_ms: 1.5,
            retries: 0,
            status: 200,
            request_sha256: "00".repeat(32),
            response_sha256: "11".repeat(32),
            items: (0..8usize)
                .map(|i| {
                    let key = i % 2 == 0;
                    ItemRecord {
                        kind: if key { ItemKind::Key } else { ItemKind::Decoy },
                        item: q as usize * 8 + i,
                        answer: i,
                        matched: key.then_some(q % 3 != 0),
                    }
                })
                .collect(),
        })
        .collect();
    let opts = RemoteVerifyOptions::default();
    let (sequential, verdict, decision) =
        score(&queries, &null, opts.fpr, 40, opts.sequential).expect("scores");
    EvidenceBody {
        format: EVIDENCE_FORMAT.into(),
        tool: ToolInfo {
            name: "nnmark".into(),
            version: nnmark::VERSION.into(),
            burn: nnmark::BURN_VERSION.into(),
        },
        started_at: "2026-11-30T00:00:00Z".into(),
        finished_at: "2026-11-30T00:00:01Z".into(),
        suspect: SuspectInfo {
            kind: "http".into(),
            location: "http://127.0.0.1:9/".into(),
            protocol: None,
            model_name: Some("model".into()),
            metadata: json!({}),
            request: None,
        },
        key: KeyInfo {
            fingerprint: "22".repeat(32),
            scheme: "adi".into(),
            items_eligible: 100,
        },
        settings: opts,
        null,
        queries,
        abandoned_requests: 0,
        sequential,
        binomial: BinomialSummary::of(&verdict),
        decision,
        commitments: None,
        key_commitment: None,
    }
}

/// Evidence files come from whoever ran the verification, possibly the party it accuses:
/// `evidence check` must reject or accept every mutation of one cleanly (never panic), and
/// with the signer pinned it must never accept a file whose signed body bytes changed.
#[test]
fn evidence_check_never_panics_and_never_accepts_a_changed_body() {
    use nnmark_remote::evidence;
    let dir = tempfile::tempdir().unwrap();
    let signer_path = dir.path().join("owner.pem");
    evidence::generate_keypair(&signer_path).unwrap();
    let signer = evidence::load_signing_key(&signer_path).unwrap();
    let pinned = signer.verifying_key();
    let body = evidence_body();
    let original = dir.path().join("evidence.json");
    evidence::write(&original, &body, Some(&signer)).unwrap();
    let report = evidence::check(&original, Some(&pinned), None, false).unwrap();
    assert!(report.signed && report.statistics_match);
    let file_bytes = std::fs::read(&original).unwrap();
    // The signed bytes: the body exactly as it stands in the file.
    let body_text = |bytes: &[u8]| -> Option<String> {
        let file: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(bytes).ok()?;
        Some(file.get("body")?.get().to_string())
    };
    let original_body = body_text(&file_bytes).expect("written file has a body");
    let body_json = serde_json::to_value(&body).unwrap();
    let case = dir.path().join("case.json");
    let strategy = prop_oneof![
        // The body with one value replaced, re-signed by the owner's key (a signer's own
        // inconsistent evidence: the statistics check must catch it or accept it cleanly).
        (json_value(), any::<usize>(), any::<usize>(), any::<bool>()).prop_map(
            move |(v, i, j, sign)| {
                let mut b = body_json.clone();
                replace_somewhere(&mut b, v, i, j);
                (b.to_string().into_bytes(), sign)
            }
        ),
        // The signed file with bytes changed anywhere.
        byte_mutated(file_bytes.clone()).prop_map(|b| (b, false)),
        // Arbitrary bytes.
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|b| (b, false)),
    ];
    runner(cases() / 2)
        .run(&strategy, |(bytes, resign)| {
            let written = if resign {
                // A re-signed mutated body: only well-typed bodies can be written.
                match serde_json::from_slice::<nnmark_remote::verify::EvidenceBody>(&bytes) {
                    Ok(b) => {
                        evidence::write(&case, &b, Some(&signer)).unwrap();
                        true
                    }
                    Err(_) => false,
                }
            } else {
                false
            };
            if !written {
                std::fs::write(&case, &bytes).unwrap();
            }
            let pinned_result = evidence::check(&case, Some(&pinned), None, false);
            let _ = evidence::check(&case, None, None, true);
            if pinned_result.is_ok() && !written {
                let now = body_text(&std::fs::read(&case).unwrap());
                prop_assert_eq!(
                    now.as_deref(),
                    Some(original_body.as_str()),
                    "a changed signed body was accepted"
                );
            }
            Ok(())
        })
        .unwrap();
}
