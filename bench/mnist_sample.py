"""The embedded MNIST sample (8,000 train / 2,000 test, crates/nnmark/data) as torch tensors
on a device, for the PyTorch sides of the benchmark."""
import gzip
import os

import numpy as np
import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates/nnmark/data")


def _idx(name, offset, shape):
    with gzip.open(os.path.join(DATA, name)) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset).reshape(shape)


def load(device):
    """(train images, train labels, test images, test labels): images (N, 1, 28, 28) float32
    in [0, 1], labels int64."""

    def images(split):
        raw = _idx(f"mnist10k-{split}-images-idx3-ubyte.gz", 16, (-1, 1, 28, 28))
        return torch.tensor(raw.astype(np.float32) / 255.0, device=device)

    def labels(split):
        return torch.tensor(_idx(f"mnist10k-{split}-labels-idx1-ubyte.gz", 8, (-1,)).astype(np.int64), device=device)

    return images("train"), labels("train"), images("test"), labels("test")
