"""Type stubs of the extension module (the public API is `nnmark`, in __init__.py)."""

from os import PathLike
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

class NnmarkError(Exception):
    """An error reported by nnmark: bad input, an unreadable or tampered file, a refused request."""

class Key:
    @staticmethod
    def _generate(
        scheme: str,
        input_shape: Tuple[int, int, int],
        classes: int,
        seed: int,
        params_json: str,
        dataset: str,
        images: Optional[npt.NDArray[np.float32]] = ...,
        labels: Optional[npt.NDArray[np.uint8]] = ...,
        aux_images: Optional[npt.NDArray[np.float32]] = ...,
        aux_labels: Optional[npt.NDArray[np.uint8]] = ...,
        model: Optional[Callable[[npt.NDArray[np.float32]], Any]] = ...,
        gradient: Optional[
            Callable[[npt.NDArray[np.float32], npt.NDArray[np.uint8]], npt.NDArray[np.float32]]
        ] = ...,
    ) -> Key: ...
    @staticmethod
    def load(path: Union[str, PathLike[str]]) -> Key: ...
    def save(self, path: Union[str, PathLike[str]]) -> None: ...
    def triggers(self) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]: ...
    def _bind_model(self, path: Union[str, PathLike[str]]) -> str: ...
    def _export_verification_key(self, path: Union[str, PathLike[str]]) -> str: ...
    def _meta_json(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def input_shape(self) -> Tuple[int, int, int]: ...
    @property
    def classes(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def dataset(self) -> str: ...
    @property
    def model_sha256(self) -> str: ...

class Verdict:
    """Whether the suspect carries the mark at the requested false-positive rate."""

    watermarked: bool
    p_value: float
    matches: int
    queries: int
    fpr: float
    threshold: int
    method: str
    evidence: Optional[str]
    def to_json(self) -> str: ...

def _verify_callable(
    key: Key, predict: Callable[[npt.NDArray[np.float32]], list[int]], fpr: float
) -> Verdict: ...
def _verify_remote(
    key: Key,
    suspect: str,
    fpr: float,
    seed: int,
    evidence: str,
    decoys: Optional[npt.NDArray[np.float32]] = ...,
    data_dir: Optional[str] = ...,
    signing_key: Optional[str] = ...,
) -> Verdict: ...
def versions() -> Tuple[str, str]: ...
def _check_evidence(
    file: str,
    public_key: Optional[str] = ...,
    key: Optional[str] = ...,
    allow_unsigned: bool = ...,
) -> str: ...
def _new_signing_key(path: str) -> Tuple[str, str]: ...
def _load_dataset(
    name: str, data_dir: Optional[str] = ...
) -> Tuple[
    Tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]],
    Tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]],
]: ...
def schemes() -> list[str]: ...

def _attack(
    model: Union[str, PathLike[str]],
    attack: str,
    out: Union[str, PathLike[str]],
    dataset: str,
    seed: int,
    key: Optional[Union[str, PathLike[str]]] = ...,
    data_dir: Optional[Union[str, PathLike[str]]] = ...,
) -> str: ...
