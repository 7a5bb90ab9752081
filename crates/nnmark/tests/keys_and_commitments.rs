//! Key files and Adi commitments, without training: integrity checks, tamper detection,
//! reveal/open, cherry-picking detection, spent items.

mod common;

use std::path::Path;

use nnmark::commit::{self, RevealBundle, VerificationKey};
use nnmark::data::ImageShape;
use nnmark::keyfile::{KeyFile, KeyTensor};

fn sample_key(items: usize) -> KeyFile {
    let pixels: Vec<u8> = (0..items * ImageShape::MNIST.numel())
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let labels: Vec<u8> = (0..items).map(|i| (i * 3 % 10) as u8).collect();
    let mut key = common::mnist_adi_key(pixels, labels);
    key.extra.insert(
        "matrix".to_string(),
        KeyTensor {
            shape: vec![2, 3],
            values: vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0],
        },
    );
    key
}

fn err_of<T: std::fmt::Debug>(r: nnmark::Result<T>) -> String {
    r.expect_err("must fail").to_string()
}

#[test]
fn key_round_trips_with_mode_0600_and_a_stable_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.nnkey");
    let key = sample_key(20);
    key.save(&path).unwrap();
    let back = KeyFile::load(&path).unwrap();
    assert_eq!(back, key);
    assert_eq!(back.fingerprint().unwrap(), key.fingerprint().unwrap());
    assert_eq!(
        back.to_bytes().unwrap(),
        key.to_bytes().unwrap(),
        "bytes are deterministic"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "keys must be readable by their owner only");
    }
}

#[test]
fn tampered_truncated_empty_and_foreign_keys_are_rejected() {
    let key = sample_key(10);
    let bytes = key.to_bytes().unwrap();
    let p = Path::new("k.nnkey");
    // A flipped bit in the trigger data (the end of the file is tensor data).
    let mut t = bytes.clone();
    let last = t.len() - 5;
    t[last] ^= 1;
    let e = err_of(KeyFile::from_bytes(p, &t));
    assert!(
        e.contains("k.nnkey") && e.contains("integrity check"),
        "{e}"
    );
    // An edited label inside the JSON metadata (same length, still valid JSON).
    let text = String::from_utf8_lossy(&bytes).to_string();
    // The seed inside the (escaped) metadata JSON: change its digit 1 to 2, same length.
    let at = text.find("seed").expect("metadata names the seed");
    let digit = at + text[at..].find(":1").expect("seed 1") + 1;
    let mut edited = bytes.clone();
    edited[digit] = b'2';
    let e = err_of(KeyFile::from_bytes(p, &edited));
    assert!(e.contains("integrity check"), "{e}");
    // Truncated.
    let e = err_of(KeyFile::from_bytes(p, &bytes[..bytes.len() / 2]));
    assert!(
        e.contains("k.nnkey") && e.contains("truncated or corrupt"),
        "{e}"
    );
    // Empty.
    let e = err_of(KeyFile::from_bytes(p, &[]));
    assert!(e.contains("empty"), "{e}");
    // A safetensors file that is not a key (e.g. a model).
    let other = safetensors::serialize(
        [(
            "w",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = err_of(KeyFile::from_bytes(p, &other));
    assert!(e.contains("not an nnmark key"), "{e}");
}

#[test]
fn reveal_opens_against_the_public_key_and_spends_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = sample_key(30);
    let vk = VerificationKey::from_key(&key).unwrap();
    let vk_path = dir.path().join("vk.json");
    vk.save(&vk_path).unwrap();
    let vk = VerificationKey::load(&vk_path).unwrap();
    assert_eq!(vk.commitments.len(), 30);

    let bundle = commit::reveal(&mut key, 10, "judge-2026").unwrap();
    assert_eq!(key.meta.spent.len(), 10);
    let bpath = dir.path().join("reveal.json");
    bundle.save(&bpath).unwrap();
    let bundle = RevealBundle::load(&bpath).unwrap();
    // Anyone can open it with the public key alone.
    let opened = bundle.open(&vk, &bpath).unwrap();
    assert_eq!((opened.skipped, opened.spent), (0, 0));
    let opened = opened.items;
    assert_eq!(opened.len(), 10);
    let t = key.triggers.as_ref().unwrap();
    for (k, o) in bundle.items.iter().enumerate() {
        assert_eq!(opened.image_u8(k), t.image_u8(o.index));
        assert_eq!(opened.labels[k], t.labels[o.index]);
    }
    // A second reveal never reuses spent items.
    let second = commit::reveal(&mut key, 10, "judge-2027").unwrap();
    assert!(
        second
            .items
            .iter()
            .all(|o| !bundle.items.iter().any(|b| b.index == o.index))
    );
    assert_eq!(second.previously_spent.len(), 10);
    assert_eq!(second.prior.len(), 1, "the first reveal travels as proof");
    let opened = second.open(&vk, &bpath).unwrap();
    assert_eq!(opened.spent, 10);
    assert!(opened.skipped <= 10);
    // 30 items allow 21 reveals in all (the default cap, 7 in 10).
    assert_eq!(vk.cap(), 21);
    let e = err_of(commit::reveal(&mut key, 2, "x"));
    assert!(
        e.contains("at most 21 of 30") && e.contains("at most 1 more"),
        "{e}"
    );
    let e = err_of(commit::reveal(&mut key, 11, "x"));
    assert!(e.contains("10 of 30 items are unspent"), "{e}");
}

#[test]
fn altered_openings_and_cherry_picked_subsets_fail_clearly() {
    let mut key = sample_key(30);
    let vk = VerificationKey::from_key(&key).unwrap();
    let bundle = commit::reveal(&mut key, 5, "c").unwrap();
    let p = Path::new("reveal.json");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;

    let mut pixel = bundle.clone();
    let mut px = b64.decode(&pixel.items[2].pixels).unwrap();
    px[100] = px[100].wrapping_add(1);
    pixel.items[2].pixels = b64.encode(&px);
    let e = err_of(pixel.open(&vk, p));
    assert!(
        e.contains(&format!("item {}", bundle.items[2].index))
            && e.contains("does not match its commitment"),
        "{e}"
    );

    let mut label = bundle.clone();
    label.items[0].label = (label.items[0].label + 1) % 10;
    assert!(err_of(label.open(&vk, p)).contains("does not match its commitment"));

    let mut nonce = bundle.clone();
    nonce.items[4].nonce = hex::encode([7u8; 32]);
    assert!(err_of(nonce.open(&vk, p)).contains("does not match its commitment"));

    // Swapping in another item (even a correctly opened one) is cherry-picking.
    let mut other_key = key.clone();
    other_key.meta.spent.clear();
    other_key.meta.reveals.clear();
    let picked = commit::reveal(&mut other_key, 21, "c").unwrap();
    let mut cherry = bundle.clone();
    cherry.items[1] = picked.items[20].clone();
    let e = err_of(cherry.open(&vk, p));
    assert!(e.contains("cherry-picked"), "{e}");

    // A bundle for another verification key.
    let vk2 = VerificationKey::from_key(&sample_key(30)).unwrap();
    assert!(err_of(bundle.open(&vk2, p)).contains("belongs to verification key"));
}

#[test]
fn an_altered_verification_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = sample_key(8);
    let mut vk = VerificationKey::from_key(&key).unwrap();
    vk.commitments[3] = hex::encode([1u8; 32]);
    let path = dir.path().join("vk.json");
    vk.save(&path).unwrap();
    let e = err_of(VerificationKey::load(&path));
    assert!(e.contains("Merkle root does not match"), "{e}");
}

#[test]
fn key_commitments_bind_what_decides_the_verdict_and_hide_it() {
    use nnmark::commit::KeyCommitment;
    let dir = tempfile::tempdir().unwrap();
    let mut key = sample_key(12);
    let e = err_of(KeyCommitment::for_key(&key));
    assert!(
        e.contains("no commitment salt") && e.contains("key commit"),
        "{e}"
    );
    assert!(key.ensure_commitment_salt().unwrap());
    assert!(
        !key.ensure_commitment_salt().unwrap(),
        "a salt is added once"
    );
    let c = KeyCommitment::for_key(&key).unwrap();
    let path = dir.path().join("owner.commitment.json");
    c.save(&path).unwrap();
    let c = KeyCommitment::load(&path).unwrap();
    assert!(c.matches_key(&key).unwrap());
    // Adi keys name their verification key, so a judge holding only that can tie it in.
    let vk = VerificationKey::from_key(&key).unwrap();
    assert_eq!(c.vk_digest.as_deref(), Some(vk.digest().as_str()));
    c.check(Some(&key), Some(&vk), &[]).unwrap();

    // Use does not change it: spending items, notes, the creation time.
    let mut used = key.clone();
    commit::reveal(&mut used, 3, "judge").unwrap();
    used.meta.notes.insert("epochs".into(), 7.into());
    used.meta.created = "2030-01-01T00:00:00Z".into();
    assert!(c.matches_key(&used).unwrap());

    // Anything that decides a verdict does.
    let mut label = key.clone();
    let t = label.triggers.as_mut().unwrap();
    t.labels[5] = (t.labels[5] + 1) % 10;
    let mut pixel = key.clone();
    pixel.triggers.as_mut().unwrap().pixels[99] ^= 1;
    let mut matrix = key.clone();
    matrix.extra.get_mut("matrix").unwrap().values[0] = 1.5;
    let mut params = key.clone();
    params.meta.params["per_batch"] = 3.into();
    let mut model = key.clone();
    model.meta.model_sha256 = "ef".repeat(32);
    let mut calibration = key.clone();
    calibration
        .meta
        .notes
        .insert("calibration".into(), serde_json::json!({"p0": 0.1}));
    for (what, k) in [
        ("label", &label),
        ("pixel", &pixel),
        ("matrix", &matrix),
        ("params", &params),
        ("model", &model),
        ("calibration", &calibration),
    ] {
        assert!(
            !c.matches_key(k).unwrap(),
            "{what} must change the commitment"
        );
        let e = err_of(c.check(Some(k), None, &[]));
        assert!(e.contains("does not match the key"), "{e}");
    }
    // The same material under another salt gives another commitment: nothing guessable leaks.
    let mut resalted = key.clone();
    resalted.meta.commitment_salt = None;
    resalted.ensure_commitment_salt().unwrap();
    assert_ne!(
        KeyCommitment::for_key(&resalted).unwrap().commitment,
        c.commitment
    );
    // A verification key that is not the committed one.
    let other_vk = VerificationKey::from_key(&sample_key(12)).unwrap();
    let e = err_of(c.check(None, Some(&other_vk), &[]));
    assert!(e.contains("verification key digest"), "{e}");
    // An unverified token is reported, never silently trusted.
    let mut tokened = c.clone();
    tokened.rfc3161_tokens.push("AAAA".into());
    let r = tokened.check(Some(&key), None, &[]).unwrap();
    assert!(r.committed_no_later_than.is_none());
    assert!(r.refused_timestamps[0].contains("not checked"), "{r:?}");
    // The commitment round-trips through the key file (the salt is kept).
    let kpath = dir.path().join("owner.nnkey");
    key.save(&kpath).unwrap();
    assert!(c.matches_key(&KeyFile::load(&kpath).unwrap()).unwrap());
}

/// Records the images it is asked about (as bytes) and answers class 0.
struct Recorder {
    seen: Vec<Vec<u8>>,
}

impl nnmark::Oracle for Recorder {
    fn input_shape(&self) -> ImageShape {
        ImageShape::MNIST
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn describe(&self) -> String {
        "recorder".into()
    }
    fn query(&mut self, pixels: &[f32]) -> nnmark::Result<Vec<nnmark::oracle::Answer>> {
        let n = ImageShape::MNIST.numel();
        for image in pixels.chunks(n) {
            self.seen
                .push(image.iter().map(|p| (p * 255.0).round() as u8).collect());
        }
        Ok(vec![
            nnmark::oracle::Answer {
                label: 0,
                scores: Vec::new(),
            };
            pixels.len() / n
        ])
    }
    fn queries_made(&self) -> u64 {
        self.seen.len() as u64
    }
}

/// Private verification after a public reveal asks the suspect only the unspent items (the
/// revealed ones are public, so a thief may have trained on them), and a key with every item
/// spent cannot be verified privately.
#[test]
fn private_verification_queries_only_unspent_items() {
    let mut key = sample_key(30);
    commit::reveal(&mut key, 10, "judge-2026").unwrap();
    let adi = nnmark::scheme::by_name("adi").unwrap();
    let mut rec = Recorder { seen: Vec::new() };
    let x = adi
        .extract(&key, &mut nnmark::Suspect::Oracle(&mut rec))
        .unwrap();
    assert_eq!(x.queries, 20);
    assert_eq!(rec.seen.len(), 20);
    let t = key.triggers.as_ref().unwrap();
    for i in 0..30 {
        let asked = rec.seen.iter().any(|s| s.as_slice() == t.image_u8(i));
        assert_eq!(asked, !key.meta.spent.contains(&i), "item {i}");
    }
    key.meta.spent = (0..30).collect();
    let e = err_of(adi.extract(&key, &mut nnmark::Suspect::Oracle(&mut rec)));
    assert!(e.contains("every trigger item has been revealed"), "{e}");
}
