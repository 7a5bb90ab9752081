"""PyTorch side of the many-models rows (bench/src/main.rs `--many K`): K LeNets or MLPs
(seeds 0..K-1, each its own initialisation and data order) on the 8,000 MNIST training
images, batch 64, SGD lr 0.01 momentum 0.9, 2 epochs each, timed two ways: one model after
another (what research code does), and all K at once with torch.func (`stack_module_state`,
`vmap` over `grad` of a `functional_call`, SGD with momentum on the stacked parameters).
Usage: python bench/pytorch_many.py cpu|cuda K  (prints one JSON object)."""
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tools"))
from pytorch_models import LeNet, Mlp  # noqa: E402

sys.path.insert(0, here)
from mnist_sample import load  # noqa: E402
import peak  # noqa: E402

device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
K = int(sys.argv[2]) if len(sys.argv) > 2 else 8
EPOCHS, BATCH, LR, MOMENTUM = 2, 64, 0.01, 0.9
xtr, ytr, xte, yte = load(device)
n = len(xtr)


def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sequential(cls):
    sync()
    t = time.perf_counter()
    accs = []
    for seed in range(K):
        torch.manual_seed(seed)
        model = cls().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        g = torch.Generator().manual_seed(seed)
        for _ in range(EPOCHS):
            perm = torch.randperm(n, generator=g).to(device)
            for i in range(0, n, BATCH):
                b = perm[i:i + BATCH]
                opt.zero_grad()
                F.cross_entropy(model(xtr[b]), ytr[b]).backward()
                opt.step()
        with torch.no_grad():
            accs.append((model(xte).argmax(1) == yte).float().mean().item())
    sync()
    return time.perf_counter() - t, float(np.mean(accs))


def vmapped(cls):
    sync()
    t = time.perf_counter()
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(cls().to(device))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_of = vmap(grad(loss))
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    gens = [torch.Generator().manual_seed(s) for s in range(K)]
    for _ in range(EPOCHS):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        for i in range(0, n, BATCH):
            b = perms[:, i:i + BATCH]
            grads = grads_of(params, buffers, xtr[b], ytr[b])
            with torch.no_grad():
                for k, v in params.items():
                    velocity[k].mul_(MOMENTUM).add_(grads[k])
                    v.sub_(LR * velocity[k])
    with torch.no_grad():
        logits = vmap(lambda p, b: functional_call(base, (p, b), (xte,)))(params, buffers)
        acc = (logits.argmax(2) == yte).float().mean().item()
    sync()
    return time.perf_counter() - t, acc


results = {}
for name, cls in [("lenet", LeNet), ("mlp", Mlp)]:
    peak.reset()
    seq_s, seq_acc = sequential(cls)
    seq_peak = peak.mib()
    peak.reset()
    vm_s, vm_acc = vmapped(cls)
    results[f"many_{name}"] = {"k": K, "epochs": EPOCHS, "sequential_s": seq_s, "sequential_accuracy": seq_acc,
                               "vmap_s": vm_s, "vmap_accuracy": vm_acc,
                               "sequential_peak_rss_mib": seq_peak, "vmap_peak_rss_mib": peak.mib()}
print(json.dumps({"tool": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(),
                  "device": device, "results": results}))
