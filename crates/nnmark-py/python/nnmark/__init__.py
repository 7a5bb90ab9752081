"""nnmark: watermark neural-network classifiers and prove ownership of suspect models.

The owner's workflow for a model trained in Python (PyTorch or anything else):

    import nnmark
    key = nnmark.Key.generate("adi", input_shape=(1, 28, 28), classes=10, seed=7)
    mixer = nnmark.TriggerMixer(key, per_batch=8, seed=0)
    for x, y in loader:                      # your training loop
        kx, ky = next(mixer)                 # key items to mix into this batch
        ...                                  # train on (x + kx, y + ky)
    assert nnmark.verify(key, predict).watermarked    # the key is learnt
    commitment = key.bind_model("model.onnx")          # publish this, keep the key secret
    key.save("owner.nnkey")

and later, against a suspect: ``nnmark.verify(key, "suspect.onnx")``,
``nnmark.verify(key, "http://host:8000")`` or ``nnmark.verify(key, some_callable)``.

The Rust library does the work (the `_nnmark` extension); verdicts are the command line's.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import numpy as np

from ._nnmark import Key as _Key
from ._nnmark import NnmarkError, Verdict, schemes, versions
from ._nnmark import _attack, _check_evidence, _load_dataset, _new_signing_key
from ._nnmark import _verify_callable, _verify_remote

__all__ = [
    "Key",
    "NnmarkError",
    "TriggerMixer",
    "attack",
    "Verdict",
    "check_evidence",
    "load_dataset",
    "new_signing_key",
    "schemes",
    "verify",
    "versions",
]

__version__ = versions()[0]


def _images(a: Any, name: str) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1]; uint8 images are scaled by 1/255."""
    a = np.asarray(a)
    if a.ndim != 4:
        raise NnmarkError(f"{name}: expected an (N, C, H, W) array, got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    return np.ascontiguousarray(a, dtype=np.float32)


def _labels(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise NnmarkError(f"{name}: expected a 1-D array of classes, got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise NnmarkError(f"{name}: classes must lie in 0..255")
    return np.ascontiguousarray(a, dtype=np.uint8)


def _onnx_callable(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX classifier as a callable (batch → scores), run by onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise NnmarkError(
            f"model {path}: reading an ONNX model needs onnxruntime (pip install onnxruntime), "
            "or pass a callable"
        ) from e
    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise NnmarkError(f"model {path}: onnxruntime cannot load it: {e}") from e
    inp = sess.get_inputs()[0]
    fixed_batch = isinstance(inp.shape[0], int) and inp.shape[0] == 1

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if fixed_batch:
            return np.concatenate([sess.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))])
        return sess.run(None, {inp.name: x})[0]

    return run


class Key:
    """A watermark key (nnmark's key file format, shared with the command line): the secret
    trigger set and what is needed to check a suspect. Keep it secret; publish the commitment
    (``bind_model``)."""

    def __init__(self, inner: _Key):
        self._inner = inner

    @staticmethod
    def generate(
        scheme: str,
        input_shape: Tuple[int, int, int],
        classes: int,
        *,
        seed: Optional[int] = None,
        images: Any = None,
        labels: Any = None,
        aux_images: Any = None,
        aux_labels: Any = None,
        params: Optional[dict] = None,
        dataset: str = "external",
        model: Any = None,
        gradient: Optional[Callable[[np.ndarray, np.ndarray], Any]] = None,
    ) -> "Key":
        """Generates a key for a model trained outside nnmark.

        ``scheme``: ``adi`` (abstract images, no data needed), ``zhang-content`` or
        ``zhang-noise`` (stamped on your ``images`` with their ``labels``), ``zhang-unrelated``
        (your ``aux_images`` from another distribution). Labels are drawn at random, so the
        verdict's false-positive rate is exact for any model trained without the key.
        ``frontier-stitching`` (FGSM adversaries of your correctly classified ``images`` near
        your trained ``model``'s decision frontier, half flipped and half not, each labelled
        with a random other class). ``dataset`` names your data; with ``mnist10k`` or
        ``fashion`` remote verification draws its decoys from it.

        ``model`` (frontier stitching): your trained clean model, as a callable (an
        (N, C, H, W) float32 batch in [0, 1] to scores (N, classes) or classes (N,)) or the
        path of its ONNX file (run with onnxruntime). ``gradient``: a callable
        ``(batch, labels) -> (N, C, H, W)`` giving the cross-entropy loss's gradient with
        respect to the input (in PyTorch: ``x.requires_grad_(); F.cross_entropy(net(x), y,
        reduction="sum").backward(); x.grad``). Without it the gradient is estimated from the
        model's scores by central finite differences: 2·C·H·W model evaluations per image
        examined (about 1,600 per MNIST image), sent in one batch per image.

        ``seed``: the trigger set is drawn from it, so anyone who knows it can rebuild the
        key's items. By default a fresh 63-bit seed comes from the operating system's random
        source; it is recorded in the key (``key.seed``), so the key can still be rebuilt by
        its owner. Give one only for experiments.
        """
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        if model is not None and not callable(model):
            model = _onnx_callable(os.fspath(model))
        if gradient is not None:
            user_gradient = gradient

            def gradient(x, y):
                return np.asarray(user_gradient(x, y), dtype=np.float32)

        return Key(
            _Key._generate(
                scheme,
                tuple(int(v) for v in input_shape),
                int(classes),
                int(seed),
                json.dumps(params or {}),
                dataset,
                None if images is None else _images(images, "images"),
                None if labels is None else _labels(labels, "labels"),
                None if aux_images is None else _images(aux_images, "aux_images"),
                None if aux_labels is None else _labels(aux_labels, "aux_labels"),
                model,
                gradient,
            )
        )

    @staticmethod
    def load(path: Union[str, os.PathLike]) -> "Key":
        """Reads and checks a key file (written by ``save`` or by ``nnmark embed``)."""
        return Key(_Key.load(os.fspath(path)))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the key atomically, readable by its owner only."""
        self._inner.save(os.fspath(path))

    def triggers(self) -> Tuple[np.ndarray, np.ndarray]:
        """The trigger set: images (N, C, H, W) float32 in [0, 1], labels (N,) uint8."""
        return self._inner.triggers()

    def bind_model(self, path: Union[str, os.PathLike]) -> dict:
        """Binds the key to the marked model's file (e.g. the exported ONNX) and returns the
        commitment to publish (and, ideally, timestamp) before the model ships. Save the key
        afterwards: the binding is part of it."""
        return json.loads(self._inner._bind_model(os.fspath(path)))

    def export_verification_key(self, path: Union[str, os.PathLike]) -> dict:
        """Writes the public verification key (Adi keys: the items' commitments and their
        Merkle root, and how many items may ever be revealed) to ``path``, as ``nnmark vk
        export`` does, and returns it. Publish it with the commitment: judges check revealed
        items against it without the key."""
        return json.loads(self._inner._export_verification_key(os.fspath(path)))

    def meta(self) -> dict:
        """The key's metadata (no secret material)."""
        return json.loads(self._inner._meta_json())

    @property
    def scheme(self) -> str:
        """The scheme's name."""
        return self._inner.scheme

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """Input shape (channels, height, width)."""
        return self._inner.input_shape

    @property
    def classes(self) -> int:
        """Number of classes."""
        return self._inner.classes

    @property
    def seed(self) -> int:
        """The seed the key was drawn from."""
        return self._inner.seed

    @property
    def dataset(self) -> str:
        """The data set's name recorded in the key."""
        return self._inner.dataset

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the marked model's file ("" until ``bind_model``)."""
        return self._inner.model_sha256

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the key's bytes (names the key without revealing it)."""
        return self._inner.fingerprint

    def __repr__(self) -> str:
        return repr(self._inner)


def load_dataset(
    name: str, data_dir: Optional[Union[str, os.PathLike]] = None
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """A data set nnmark knows: ``mnist10k`` (the embedded 8,000 / 2,000 MNIST sample) or
    ``fashion`` (Fashion-MNIST, from ``data_dir`` or the folder ``nnmark data fetch`` fills):
    ``((train_images, train_labels), (test_images, test_labels))``, images (N, C, H, W)
    float32 in [0, 1], labels uint8."""
    return _load_dataset(name, None if data_dir is None else os.fspath(data_dir))


def _classes(out: Any, n: int) -> list:
    """A suspect's answer for n images as one class each: labels (N,), or scores (N, C)."""
    a = np.asarray(out)
    if a.ndim == 2 and a.shape[0] == n:
        return a.argmax(axis=1).astype(np.int64).tolist()
    if a.ndim == 1 and a.shape[0] == n:
        if not np.issubdtype(a.dtype, np.integer):
            raise NnmarkError("suspect: a 1-D answer must hold integer classes")
        return a.astype(np.int64).tolist()
    raise NnmarkError(
        f"suspect: expected classes (N,) or scores (N, C) for {n} images, got shape {a.shape}"
    )


def verify(
    key: Key,
    suspect: Union[str, os.PathLike, Callable[[np.ndarray], Any]],
    *,
    fpr: float = 1e-6,
    seed: int = 0,
    evidence: Optional[Union[str, os.PathLike]] = None,
    decoys: Any = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    signing_key: Optional[Union[str, os.PathLike]] = None,
) -> Verdict:
    """Checks a suspect against the key at false-positive rate ``fpr``.

    ``suspect`` is a callable (an (N, C, H, W) float32 batch in [0, 1] to classes (N,) or
    scores (N, C)), a path to an ONNX file, or an inference server's URL. ONNX files and
    servers are checked as ``nnmark verify`` checks them: key items hidden among decoys
    (``decoys``, else the key's data set's test images when nnmark knows it), the evidence
    written to ``evidence`` (a temporary file if not given) and signed with ``signing_key``.
    """
    if callable(suspect):
        return _verify_callable(
            key._inner, lambda x: _classes(suspect(x), len(x)), float(fpr)
        )
    target = os.fspath(suspect)
    if evidence is None:
        fd, evidence = tempfile.mkstemp(prefix="nnmark-evidence-", suffix=".json")
        os.close(fd)
    return _verify_remote(
        key._inner,
        target,
        float(fpr),
        int(seed),
        os.fspath(evidence),
        None if decoys is None else _images(decoys, "decoys"),
        None if data_dir is None else os.fspath(data_dir),
        None if signing_key is None else os.fspath(signing_key),
    )


def attack(
    model: Union[str, os.PathLike],
    attack: str,
    out: Union[str, os.PathLike],
    *,
    key: Optional[Union[str, os.PathLike]] = None,
    dataset: str = "mnist10k",
    data_dir: Optional[Union[str, os.PathLike]] = None,
    seed: int = 1,
) -> dict:
    """Runs a removal attack on an nnmark model file (``nnmark attack``; attacks stay in Rust
    and apply to nnmark's own models): ``attack`` is ``name[:value][,key=value...]``, stages
    joined by ``+`` (``"prune:0.5+ftal:epochs=2"``); the attacker gets the last third of
    ``dataset``'s training split. Writes the attacked model to ``out`` and returns the report:
    accuracy before and after and, with ``key``, the mark's verdict before and after."""
    return json.loads(
        _attack(
            os.fspath(model),
            attack,
            os.fspath(out),
            dataset,
            int(seed),
            None if key is None else os.fspath(key),
            None if data_dir is None else os.fspath(data_dir),
        )
    )


def new_signing_key(path: Union[str, os.PathLike]) -> Tuple[str, str]:
    """Creates the owner's Ed25519 key that signs evidence: ``path`` (private, mode 0600) and
    ``path.pub``; returns (public key path, fingerprint). Never overwrites a key."""
    public, fingerprint = _new_signing_key(os.fspath(path))
    return os.fspath(public), fingerprint


def check_evidence(
    path: Union[str, os.PathLike],
    *,
    public_key: Optional[Union[str, os.PathLike]] = None,
    key: Optional[Union[str, os.PathLike]] = None,
    allow_unsigned: bool = False,
) -> dict:
    """Checks an evidence file as ``nnmark evidence check`` does: the signature (pinned to
    ``public_key`` when given), the statistics recomputed from the logged answers and, with the
    ``key`` file, every logged match. Returns the report: ``report["check"]`` holds
    ``signed``, ``statistics_match``, ``key_checked``, ``watermarked`` and ``p_value``; a file
    that cannot be read or whose signature does not verify raises ``NnmarkError``."""
    return json.loads(
        _check_evidence(
            os.fspath(path),
            None if public_key is None else os.fspath(public_key),
            None if key is None else os.fspath(key),
            bool(allow_unsigned),
        )
    )


class TriggerMixer:
    """Yields key items to mix into each training batch: ``per_batch`` items per step, in a
    seeded order that visits every item once per pass over the key.

    The recipe that makes the key learnt (as nnmark's own embedding does): mix 8-24 key items
    into every batch of 64-128 ordinary images, train as usual, and check afterwards with
    ``nnmark.verify(key, predict)`` that the marked model proves its key; if not, train longer
    or mix more items per batch.
    """

    def __init__(self, key: Key, per_batch: int = 8, seed: int = 0):
        if per_batch < 1:
            raise NnmarkError("per_batch: must be at least 1")
        self.images, self.labels = key.triggers()
        self.per_batch = int(per_batch)
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.labels))
        self._at = 0

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> Tuple[np.ndarray, np.ndarray]:
        picks = []
        while len(picks) < self.per_batch:
            if self._at == len(self._order):
                self._order = self._rng.permutation(len(self.labels))
                self._at = 0
            picks.append(self._order[self._at])
            self._at += 1
        idx = np.asarray(picks)
        return self.images[idx], self.labels[idx].astype(np.int64)
