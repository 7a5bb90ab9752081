"""PyTorch side of the benchmark: identical work to bench/src/main.rs.
LeNet and MLP on the 8,000 MNIST training images, batch 64, SGD lr 0.01 momentum 0.9, 3 epochs
(warm epoch = fastest after the first), and FGSM input gradients over the 2,000 test images."""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tools"))
from pytorch_models import LeNet, Mlp  # noqa: E402

device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
data = os.path.join(here, "..", "crates/nnmark/data")


def idx(name, offset, shape):
    with gzip.open(os.path.join(data, name)) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset).reshape(shape)


xtr = torch.tensor(idx("mnist10k-train-images-idx3-ubyte.gz", 16, (-1, 1, 28, 28)).astype(np.float32) / 255.0, device=device)
ytr = torch.tensor(idx("mnist10k-train-labels-idx1-ubyte.gz", 8, (-1,)).astype(np.int64), device=device)
xte = torch.tensor(idx("mnist10k-test-images-idx3-ubyte.gz", 16, (-1, 1, 28, 28)).astype(np.float32) / 255.0, device=device)
yte = torch.tensor(idx("mnist10k-test-labels-idx1-ubyte.gz", 8, (-1,)).astype(np.int64), device=device)


def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()


results = {}
for name, cls in [("lenet", LeNet), ("mlp", Mlp)]:
    torch.manual_seed(0)
    model = cls().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    times = []
    for epoch in range(3):
        sync()
        t = time.perf_counter()
        perm = torch.randperm(len(xtr), generator=g).to(device)
        correct = 0
        for i in range(0, len(xtr), 64):
            idxs = perm[i:i + 64]
            x, y = xtr[idxs], ytr[idxs]
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            # nnmark reads the loss and accuracy every step (progress bar); do the same.
            loss.item()
            correct += (logits.argmax(1) == y).sum().item()
        sync()
        times.append(time.perf_counter() - t)
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    entry = {"epoch_seconds": times, "warm_epoch_s": min(times[1:]), "test_accuracy": acc}
    if name == "lenet":
        def grads(x, y):
            out = []
            for i in range(0, len(x), 64):
                xb = x[i:i + 64].clone().requires_grad_(True)
                F.cross_entropy(model(xb), y[i:i + 64], reduction="sum").backward()
                out.append(xb.grad.detach().cpu())
            return torch.cat(out)
        grads(xte[:64], yte[:64])
        sync()
        t = time.perf_counter()
        grads(xte, yte)
        sync()
        entry["fgsm_2000_s"] = time.perf_counter() - t
    results[name] = entry

# Adi et al.'s embedding (as in their official code): 2 trigger images appended to every batch,
# cycling through a reshuffled order of the 100 triggers nnmark generated (read from the file
# nnmark-bench wrote), LeNet from scratch, same optimiser, 3 epochs; total and warm-epoch time.
if len(sys.argv) > 2:
    raw = np.fromfile(sys.argv[2], dtype=np.uint8)
    n = len(raw) // (784 + 1)
    xtrig = torch.tensor(raw[: n * 784].reshape(n, 1, 28, 28).astype(np.float32) / 255.0, device=device)
    ytrig = torch.tensor(raw[n * 784:].astype(np.int64), device=device)
    sync()
    t_total = time.perf_counter()
    torch.manual_seed(0)
    model = LeNet().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    order, cursor, times = [], 0, []
    for epoch in range(3):
        sync()
        t = time.perf_counter()
        perm = torch.randperm(len(xtr), generator=g).to(device)
        for i in range(0, len(xtr), 64):
            picks = []
            for _ in range(2):
                if cursor == len(order):
                    order, cursor = torch.randperm(n, generator=g).tolist(), 0
                picks.append(order[cursor])
                cursor += 1
            idxs = perm[i:i + 64]
            x = torch.cat([xtr[idxs], xtrig[picks]])
            y = torch.cat([ytr[idxs], ytrig[picks]])
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            loss.item()
            (logits.argmax(1) == y).sum().item()
        sync()
        times.append(time.perf_counter() - t)
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
        match = (model(xtrig).argmax(1) == ytrig).float().mean().item()
    results["embed_adi"] = {"total_s": time.perf_counter() - t_total, "epoch_seconds": times,
                            "warm_epoch_s": min(times[1:]), "test_accuracy": acc, "key_match": match}

print(json.dumps({"tool": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(), "device": device, "results": results}))
