"""Produces crates/nnmark/tests/fixtures/: a PyTorch LeNet state_dict (safetensors and .pth),
8 real MNIST test images and the logits PyTorch computes for them. nnmark's interop test loads
the weights and must reproduce the logits within 1e-4.

Run: bash tools/setup-venv.sh && tools/.venv/bin/python tools/make_interop_fixture.py
"""
import gzip
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_models import LeNet  # noqa: E402

root = os.path.join(os.path.dirname(__file__), "..")
out = os.path.join(root, "crates/nnmark/tests/fixtures")
os.makedirs(out, exist_ok=True)

torch.manual_seed(1234)
model = LeNet().eval()
# Train-free but non-trivial weights: the default init plus a seeded perturbation.
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))

with gzip.open(os.path.join(root, "crates/nnmark/data/mnist10k-test-images-idx3-ubyte.gz")) as f:
    raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
x = torch.tensor(raw[:8].astype(np.float32) / 255.0)
with torch.no_grad():
    logits = model(x)

state = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(state, os.path.join(out, "lenet_torch.safetensors"))
torch.save(state, os.path.join(out, "lenet_torch.pth"))
save_file({"inputs": x.contiguous(), "logits": logits.contiguous()}, os.path.join(out, "lenet_torch_io.safetensors"))
print("torch", torch.__version__, "logits[0]", logits[0].tolist())
