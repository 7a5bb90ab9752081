"""Bring your own model: mark a PyTorch network nnmark does not ship, then prove it remotely.

A small CNN with batch normalisation and global average pooling is trained in a plain PyTorch
loop on the MNIST sample, with nnmark's key items mixed into every batch; an independent copy
(another seed, no key) is trained the same way. With `--scheme adi` (default) the key needs no
model and the mark is trained in from the start; with `--scheme frontier-stitching` a clean
model is trained first, the key is built from its decision frontier (its gradients come from
PyTorch's autograd) and the mark is fine-tuned in. Both are checked locally as callables, exported
to ONNX, served with `nnmark serve` and checked with `nnmark verify --endpoint`: the marked one
must be accused at false-positive rate 1e-6, the independent one not.

    python crates/nnmark-py/examples/pytorch_own_model.py --nnmark target/release/nnmark --out /tmp/byom [--scheme frontier-stitching]

Needs torch and the nnmark package (`tools/setup-python-package.sh torch` makes such a venv).
"""

import argparse
import copy
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nnmark


class SmallBnCnn(nn.Module):
    """conv-BN-ReLU ×4 (16, 32, 64, 128 channels; the last three with stride 2), global average
    pool, a linear head: a family nnmark's own model zoo does not have."""

    def __init__(self, classes: int = 10):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(1, 16, 1), block(16, 32, 2), block(32, 64, 2), block(64, 128, 2)
        )
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def train(seed, x, y, key=None, epochs=4, per_batch=16, start=None, lr=2e-3):
    torch.manual_seed(seed)
    model = SmallBnCnn() if start is None else copy.deepcopy(start)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    mixer = nnmark.TriggerMixer(key, per_batch=per_batch, seed=seed) if key else None
    for _ in range(epochs):
        model.train()
        for idx in np.array_split(rng.permutation(len(x)), len(x) // 64):
            bx, by = x[idx], y[idx].astype(np.int64)
            if mixer:
                kx, ky = next(mixer)
                bx, by = np.concatenate([bx, kx]), np.concatenate([by, ky])
            loss = nn.functional.cross_entropy(model(torch.from_numpy(bx)), torch.from_numpy(by))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def predictor(model):
    def predict(batch):
        with torch.no_grad():
            return model(torch.from_numpy(batch)).numpy()

    return predict


def loss_gradient(model):
    """The cross-entropy loss's gradient with respect to the input, by autograd: what
    frontier stitching's FGSM needs."""

    def gradient(batch, labels):
        x = torch.from_numpy(batch).requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), torch.from_numpy(labels.astype(np.int64)), reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        return g.numpy()

    return gradient


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def verify_served(nnmark_bin, onnx, key_path, out):
    port = free_port()
    server = subprocess.Popen(
        [nnmark_bin, "serve", "--model", str(onnx), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        run = subprocess.run(
            [nnmark_bin, "verify", "--key", str(key_path), "--endpoint", f"http://127.0.0.1:{port}",
             "--evidence", str(out), "--json"],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            sys.exit(f"nnmark verify failed: {run.stderr}")
        return json.loads(run.stdout)["decision"]
    finally:
        server.terminate()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnmark", required=True, help="the nnmark binary")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--scheme", default="adi", choices=["adi", "frontier-stitching"])
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    (x, y), (tx, ty) = nnmark.load_dataset("mnist10k")
    # dataset="mnist10k": remote verification draws its decoys from the sample's test images.
    if a.scheme == "adi":
        key = nnmark.Key.generate("adi", input_shape=(1, 28, 28), classes=10, seed=11, dataset="mnist10k")
        marked = train(1, x, y, key=key, epochs=a.epochs)
    else:
        clean = train(1, x, y, epochs=a.epochs)
        key = nnmark.Key.generate("frontier-stitching", input_shape=(1, 28, 28), classes=10, seed=11,
                                  dataset="mnist10k", images=x, labels=y, model=predictor(clean),
                                  gradient=loss_gradient(clean))
        marked = train(3, x, y, key=key, epochs=2, start=clean, lr=1e-3)
    independent = train(2, x, y, epochs=a.epochs)

    report = {"torch": torch.__version__, "nnmark": nnmark.__version__, "epochs": a.epochs,
              "scheme": a.scheme, "key_items": len(key.triggers()[1])}
    for name, model in [("marked", marked), ("independent", independent)]:
        predict = predictor(model)
        acc = float((predict(tx).argmax(1) == ty).mean())
        local = nnmark.verify(key, predict)
        onnx = out / f"{name}.onnx"
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(onnx), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          dynamo=False)
        if name == "marked":
            report["commitment"] = key.bind_model(onnx)["commitment"]
            key.save(out / "owner.nnkey")
        remote = verify_served(a.nnmark, onnx, out / "owner.nnkey", out / f"{name}-evidence.json")
        report[name] = {
            "test_accuracy": acc,
            "local": {"watermarked": local.watermarked, "p_value": local.p_value,
                      "matches": local.matches, "queries": local.queries},
            "remote": {"watermarked": remote["watermarked"], "p_value": remote["p_value"],
                       "key_answers": remote["key_answers"]},
        }
    print(json.dumps(report, indent=2))
    ok = (report["marked"]["local"]["watermarked"] and report["marked"]["remote"]["watermarked"]
          and not report["independent"]["local"]["watermarked"]
          and not report["independent"]["remote"]["watermarked"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
