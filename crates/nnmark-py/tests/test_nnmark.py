"""The `nnmark` Python package against the command line it shares its code with.

Needs numpy and onnxruntime only (no torch). The command-line comparisons need the `nnmark`
binary in NNMARK_BIN (the Rust test `python_package` sets it); they are skipped without it.
Run: NNMARK_BIN=target/release/nnmark tools/.venv-py/bin/python -m pytest crates/nnmark-py/tests
"""

import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import nnmark

BIN = os.environ.get("NNMARK_BIN")
needs_cli = pytest.mark.skipif(not BIN, reason="NNMARK_BIN not set")


def cli(*args, cwd):
    out = subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def read_grey_png(path):
    """An 8-bit greyscale, non-interlaced PNG (what `key inspect --export-triggers` writes)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 0), "8-bit grey"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows, prev = [], bytearray(width)
    for r in range(height):
        line = raw[r * (width + 1) : (r + 1) * (width + 1)]
        f, cur = line[0], bytearray(line[1:])
        for i in range(width):
            a = cur[i - 1] if i else 0
            b = prev[i]
            c = prev[i - 1] if i else 0
            if f == 1:
                cur[i] = (cur[i] + a) & 255
            elif f == 2:
                cur[i] = (cur[i] + b) & 255
            elif f == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 255
        rows.append(bytes(cur))
        prev = cur
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width)


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """A CLI-made owner: a clean MLP on the embedded MNIST sample, an Adi mark, its ONNX."""
    if not BIN:
        pytest.skip("NNMARK_BIN not set")
    d = tmp_path_factory.mktemp("owner")
    cli("train", "--model", "mlp", "--epochs", "2", "--seed", "1", "--out", "clean.safetensors", "--quiet", cwd=d)
    cli("embed", "--scheme", "adi", "--model", "clean.safetensors", "--epochs", "3", "--seed", "2",
        "--out", "marked.safetensors", "--key", "owner.nnkey", cwd=d)
    cli("export", "--model", "marked.safetensors", "--onnx", "marked.onnx", cwd=d)
    cli("train", "--model", "mlp", "--epochs", "2", "--seed", "9", "--out", "other.safetensors", "--quiet", cwd=d)
    cli("export", "--model", "other.safetensors", "--onnx", "other.onnx", cwd=d)
    return d


def onnx_predict(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x.astype(np.float32)})[0]


def test_generate_save_load_round_trip(tmp_path):
    key = nnmark.Key.generate("adi", input_shape=(1, 28, 28), classes=10, seed=7)
    assert key.scheme == "adi" and key.input_shape == (1, 28, 28) and key.classes == 10
    x, y = key.triggers()
    assert x.shape == (100, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.uint8
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(set(y.tolist())) > 5, "labels drawn at random over the classes"
    key.save(tmp_path / "k.nnkey")
    back = nnmark.Key.load(tmp_path / "k.nnkey")
    assert back.fingerprint == key.fingerprint
    bx, by = back.triggers()
    assert np.array_equal(bx, x) and np.array_equal(by, y)
    assert back.meta()["spec"]["architecture"] == "external"
    # The same seed gives the same triggers; another seed other ones.
    again = nnmark.Key.generate("adi", input_shape=(1, 28, 28), classes=10, seed=7)
    assert np.array_equal(again.triggers()[0], x)
    other = nnmark.Key.generate("adi", input_shape=(1, 28, 28), classes=10, seed=8)
    assert not np.array_equal(other.triggers()[0], x)
    # Without a seed, a fresh one from the OS: two default keys differ, each records its own.
    a = nnmark.Key.generate("adi", (1, 28, 28), 10)
    b = nnmark.Key.generate("adi", (1, 28, 28), 10)
    assert a.seed != b.seed and not np.array_equal(a.triggers()[0], b.triggers()[0])
    assert np.array_equal(nnmark.Key.generate("adi", (1, 28, 28), 10, seed=a.seed).triggers()[0], a.triggers()[0])


def test_zhang_keys_stamp_the_owners_images():
    rng = np.random.default_rng(0)
    images = rng.random((200, 1, 28, 28), dtype=np.float32) * 0.5
    labels = np.repeat(np.arange(10), 20)
    key = nnmark.Key.generate(
        "zhang-content", input_shape=(1, 28, 28), classes=10, images=images, labels=labels, seed=3
    )
    x, y = key.triggers()
    assert len(y) > 0 and x.shape[1:] == (1, 28, 28)
    # Stamped text is brighter than the owner's dim images somewhere in every trigger.
    assert (x.reshape(len(x), -1).max(axis=1) > 0.5).all()
    # Uint8 images are accepted and scaled.
    key8 = nnmark.Key.generate(
        "zhang-content", (1, 28, 28), 10, images=(images * 255).astype(np.uint8), labels=labels, seed=3
    )
    assert key8.triggers()[0].shape == x.shape


def test_bind_model_returns_a_commitment_and_records_the_fingerprint(tmp_path):
    key = nnmark.Key.generate("adi", (1, 28, 28), 10, seed=1)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model, but its bytes are what gets bound")
    c = key.bind_model(model)
    assert len(c["commitment"]) == 64 and c["scheme"] == "adi"
    import hashlib

    assert key.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()


def test_trigger_mixer_visits_every_item_once_per_pass():
    key = nnmark.Key.generate("adi", (1, 28, 28), 10, seed=4)
    x, y = key.triggers()
    mixer = nnmark.TriggerMixer(key, per_batch=10, seed=0)
    seen = []
    for _ in range(10):
        bx, by = next(mixer)
        assert bx.shape == (10, 1, 28, 28) and by.shape == (10,)
        seen.extend(map(bytes, (bx * 255).round().astype(np.uint8).reshape(10, -1)))
    assert len(set(seen)) == len(y) == 100


@needs_cli
def test_triggers_equal_the_cli_export(marked, tmp_path):
    key = nnmark.Key.load(marked / "owner.nnkey")
    cli("key", "inspect", str(marked / "owner.nnkey"), "--export-triggers", str(tmp_path), "--quiet", cwd=marked)
    files = sorted(tmp_path.glob("*.png"))
    x, y = key.triggers()
    assert len(files) == len(y)
    for i, f in enumerate(files):
        assert int(f.stem.split("-label-")[1]) == y[i]
        png = read_grey_png(f)
        assert np.array_equal(png, (x[i, 0] * 255).round().astype(np.uint8)), f.name


@needs_cli
def test_onnx_verdict_equals_the_cli(marked):
    key = nnmark.Key.load(marked / "owner.nnkey")
    out = json.loads(
        cli("verify", "--key", "owner.nnkey", "--model", "marked.onnx", "--evidence", "cli.json", "--json", cwd=marked)
    )
    v = nnmark.verify(key, marked / "marked.onnx", evidence=marked / "py.json")
    assert v.watermarked and out["decision"]["watermarked"]
    assert v.p_value == out["decision"]["p_value"]
    assert (v.matches, v.queries) == (out["binomial"]["matches"], out["binomial"]["queries"])
    assert v.method == out["decision"]["method"]
    assert json.loads(Path(v.evidence).read_text())["body"]["decision"]["p_value"] == v.p_value
    other = nnmark.verify(key, marked / "other.onnx")
    assert not other.watermarked


@needs_cli
def test_callable_suspects(marked):
    key = nnmark.Key.load(marked / "owner.nnkey")
    logits = onnx_predict(marked / "marked.onnx")
    v = nnmark.verify(key, logits)
    assert v.watermarked and v.method == "fixed-n-binomial", v
    assert json.loads(v.to_json())["verdict"]["watermarked"]
    # Classes instead of scores work the same.
    assert nnmark.verify(key, lambda x: logits(x).argmax(axis=1)).p_value == v.p_value
    assert not nnmark.verify(key, onnx_predict(marked / "other.onnx")).watermarked


@needs_cli
def test_frontier_keys_for_an_outside_model(marked):
    """Frontier stitching for a model nnmark only sees through onnxruntime: gradients by
    finite differences of its scores, the same key from the file and from the callable, items
    near the clean model's frontier (half flipped, half not), labels drawn at random."""
    cli("export", "--model", "clean.safetensors", "--onnx", "clean.onnx", cwd=marked)
    (x, y), _ = nnmark.load_dataset("mnist10k")
    x, y = x[:1000], y[:1000]
    clean = onnx_predict(marked / "clean.onnx")
    from_file = nnmark.Key.generate(
        "frontier-stitching", (1, 28, 28), 10, images=x, labels=y, model=marked / "clean.onnx", seed=4
    )
    from_callable = nnmark.Key.generate(
        "frontier-stitching", (1, 28, 28), 10, images=x, labels=y, model=clean, seed=4
    )
    tx, ty = from_file.triggers()
    assert tx.shape == (100, 1, 28, 28) and np.array_equal(tx, from_callable.triggers()[0])
    assert np.array_equal(ty, from_callable.triggers()[1])
    assert from_file.meta()["params"]["labels"] == "random"
    # Each item is a training image moved by +-epsilon (or clipped) on every pixel.
    eps = from_file.meta()["params"]["epsilon"]
    pred = clean(tx).argmax(axis=1)
    flipped = 0
    for item, label_of_item in zip(tx, pred):
        d = np.abs(x.reshape(len(x), -1) - item.reshape(1, -1)).max(axis=1)
        source = int(np.argmin(d))
        assert d[source] <= eps + 1.5 / 255
        flipped += int(label_of_item != y[source])
    assert flipped == 50, flipped
    # The clean model does not answer the random labels (that is what training adds).
    assert (pred == ty).mean() < 0.3
    # A gradient callable is used when given (here the same finite differences, in numpy),
    # and a model answering classes alone needs one.
    calls = []

    def gradient(batch, labels):
        calls.append(len(batch))
        out = np.empty_like(batch)
        h, n = 1 / 255, batch[0].size
        for i, (image, label) in enumerate(zip(batch, labels)):
            plus = np.repeat(image.reshape(1, -1), n, axis=0) + h * np.eye(n, dtype=np.float32)
            minus = plus - 2 * h * np.eye(n, dtype=np.float32)
            z = clean(np.concatenate([plus, minus]).reshape(2 * n, *image.shape)).astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            loss = np.log(np.exp(z).sum(axis=1)) - z[:, label]
            out[i] = ((loss[:n] - loss[n:]) / (2 * h)).reshape(image.shape)
        return out

    with_gradient = nnmark.Key.generate(
        "frontier-stitching", (1, 28, 28), 10, images=x, labels=y, model=clean, gradient=gradient, seed=4
    )
    assert calls and with_gradient.triggers()[0].shape == tx.shape
    same = (with_gradient.triggers()[0] == tx).all(axis=(1, 2, 3)).mean()
    assert same > 0.8, same
    with pytest.raises(nnmark.NnmarkError, match="gradient"):
        nnmark.Key.generate(
            "frontier-stitching", (1, 28, 28), 10, images=x, labels=y, model=lambda b: clean(b).argmax(axis=1), seed=4
        )
    with pytest.raises(nnmark.NnmarkError, match="nnmark's own models only"):
        nnmark.Key.generate("aime", (1, 28, 28), 10, images=x, labels=y, model=clean, seed=4)


@needs_cli
def test_attack_and_verification_key(marked, tmp_path):
    """nnmark.attack runs the CLI's attack (the same accuracy and verdict after it, for the same
    seed); the verification key equals `nnmark vk export`'s."""
    report = nnmark.attack(
        marked / "marked.safetensors", "prune:0.5", tmp_path / "py.safetensors", key=marked / "owner.nnkey", seed=3
    )
    assert report["attack"] and 0.0 < report["accuracy_after"] <= 1.0
    assert report["watermark"]["before"]["watermarked"]
    cli_report = json.loads(
        cli("attack", "--model", "marked.safetensors", "--attack", "prune:0.5", "--key", "owner.nnkey",
            "--seed", "3", "--out", str(tmp_path / "cli.safetensors"), "--json", cwd=marked)
    )
    assert cli_report["accuracy_after"] == report["accuracy_after"]
    assert cli_report["watermark"]["after"]["p_value"] == report["watermark"]["after"]["p_value"]
    with pytest.raises(nnmark.NnmarkError, match="no-such-attack"):
        nnmark.attack(marked / "marked.safetensors", "no-such-attack", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    key = nnmark.Key.load(marked / "owner.nnkey")
    vk = key.export_verification_key(tmp_path / "vk.json")
    cli("vk", "export", "--key", "owner.nnkey", "--out", str(tmp_path / "cli-vk.json"), cwd=marked)
    from_cli = json.loads((tmp_path / "cli-vk.json").read_text())
    assert json.loads((tmp_path / "vk.json").read_text()) == vk
    assert {k: v for k, v in from_cli.items() if k != "created"} == {k: v for k, v in vk.items() if k != "created"}
    assert len(vk["commitments"]) == 100
    with pytest.raises(nnmark.NnmarkError):
        nnmark.Key.generate("zhang-noise", (1, 28, 28), 10, images=np.zeros((20, 1, 28, 28)), labels=np.arange(20) % 10, seed=1).export_verification_key(tmp_path / "z.json")


def test_errors_are_python_exceptions_with_nnmarks_messages(tmp_path):
    with pytest.raises(nnmark.NnmarkError, match="no-such.nnkey"):
        nnmark.Key.load(tmp_path / "no-such.nnkey")
    with pytest.raises(nnmark.NnmarkError, match="adi"):
        nnmark.Key.generate("no-such-scheme", (1, 28, 28), 10)
    with pytest.raises(nnmark.NnmarkError, match=r"\[0, 1\]"):
        nnmark.Key.generate("zhang-content", (1, 28, 28), 10, images=np.full((20, 1, 28, 28), 3.0), labels=np.zeros(20))
    bad = tmp_path / "bad.nnkey"
    bad.write_bytes(b"garbage")
    with pytest.raises(nnmark.NnmarkError, match="bad.nnkey"):
        nnmark.Key.load(bad)
    key = nnmark.Key.generate("adi", (1, 28, 28), 10, seed=1)
    with pytest.raises(nnmark.NnmarkError, match="shape"):
        nnmark.verify(key, lambda x: np.zeros((len(x), 2, 2)))
    with pytest.raises(nnmark.NnmarkError, match="not a class"):
        nnmark.verify(key, lambda x: np.full(len(x), 12))
    with pytest.raises(nnmark.NnmarkError, match="per_batch"):
        nnmark.TriggerMixer(key, per_batch=0)


def test_load_dataset_gives_the_embedded_sample():
    (x, y), (tx, ty) = nnmark.load_dataset("mnist10k")
    assert x.shape == (8000, 1, 28, 28) and tx.shape == (2000, 1, 28, 28)
    assert x.dtype == np.float32 and y.dtype == np.uint8 and set(y.tolist()) == set(range(10))
    with pytest.raises(nnmark.NnmarkError, match="known data sets"):
        nnmark.load_dataset("imagenet")


@needs_cli
def test_signed_evidence_checks_and_tampering_is_caught(marked, tmp_path):
    key = nnmark.Key.load(marked / "owner.nnkey")
    public, fingerprint = nnmark.new_signing_key(tmp_path / "owner.pem")
    assert Path(public).exists() and len(fingerprint) == 64
    with pytest.raises(nnmark.NnmarkError, match="exists already"):
        nnmark.new_signing_key(tmp_path / "owner.pem")
    ev = tmp_path / "evidence.json"
    v = nnmark.verify(key, marked / "marked.onnx", evidence=ev, signing_key=tmp_path / "owner.pem")
    report = nnmark.check_evidence(ev, public_key=public, key=marked / "owner.nnkey")["check"]
    assert report["signed"] and report["statistics_match"] and report["key_checked"]
    assert report["watermarked"] == v.watermarked and report["p_value"] == v.p_value
    # The CLI checks the file the package wrote.
    cli("evidence", "check", str(ev), "--public-key", public, cwd=tmp_path)
    body = json.loads(ev.read_text())
    body["body"]["decision"]["p_value"] = 0.5
    ev.write_text(json.dumps(body))
    with pytest.raises(nnmark.NnmarkError):
        nnmark.check_evidence(ev, public_key=public)
