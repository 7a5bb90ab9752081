"""Checks that PyTorch's strict load_state_dict accepts a weights file written by nnmark and
reproduces nnmark's accuracy: python tools/check_pytorch_export.py MODEL.safetensors ARCH"""
import gzip
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_models import MODELS  # noqa: E402

path, arch = sys.argv[1], sys.argv[2]
with safe_open(path, "pt") as f:
    meta = json.loads(f.metadata()["nnmark"])
model = MODELS[arch]().eval()
model.load_state_dict(load_file(path), strict=True)
root = os.path.join(os.path.dirname(__file__), "..")
with gzip.open(os.path.join(root, "crates/nnmark/data/mnist10k-test-images-idx3-ubyte.gz")) as f:
    x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
with gzip.open(os.path.join(root, "crates/nnmark/data/mnist10k-test-labels-idx1-ubyte.gz")) as f:
    y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
norm = meta["spec"]["normalization"]
x = (torch.tensor(x) - norm["mean"][0]) / norm["std"][0]
with torch.no_grad():
    acc = (model(x).argmax(1).numpy() == y).mean()
print(f"strict load_state_dict OK; PyTorch accuracy on mnist10k test: {acc * 100:.2f}%")
