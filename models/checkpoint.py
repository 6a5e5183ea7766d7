"""Checkpoints: a state dict in the course's naming plus a small JSON of the architecture.

``model.pt`` holds only tensors and is read with ``torch.load(..., weights_only=True)``, which
refuses any pickle that would import or call code. ``architecture.json`` records the sizes, the
activation and the SHA-256 of ``model.pt``; loading checks the digest before unpickling.
Writing the files of bytes a worker made (:func:`write_checkpoint`) needs no torch: the sweep's
MLflow writer does it without importing torch.

``weights.npz`` holds the same values as NumPy arrays (``np.load(..., allow_pickle=False)``: no
code either), its SHA-256 in ``architecture.json``: :func:`load_weights` reads a trained model
without torch (the end-of-run report draws the best fit from it, sparing a CPU-second of
torch's import). A checkpoint from before it has only ``model.pt``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from models.config import canonical_architecture, validate_sizes

if TYPE_CHECKING:
    from torch import Tensor

    from models.mlp import MLP

__all__ = ["CheckpointError", "save_checkpoint", "state_bytes", "weights_bytes", "write_checkpoint",
           "load_checkpoint", "load_state_dict", "load_weights", "file_sha256", "MODEL_FILE", "ARCH_FILE",
           "WEIGHTS_FILE"]

MODEL_FILE = "model.pt"
ARCH_FILE = "architecture.json"
WEIGHTS_FILE = "weights.npz"
FORMAT = "mlpsweep-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, tampered with, or not a plain state dict of the stated MLP."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    directory: str | os.PathLike,
    state_dict: Mapping[str, Tensor],
    sizes: list[int] | tuple[int, ...],
    activation: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.pt``, ``weights.npz`` and ``architecture.json`` into ``directory``.

    Args:
        directory: created if missing.
        state_dict: ``{"0_weight": (fan_in, fan_out), "0_bias": (fan_out,), ...}``.
        sizes, activation: the architecture.
        extra: small JSON-able metadata stored beside the architecture (e.g. the trial config).

    Returns:
        The directory.
    """
    write_checkpoint(directory, state_bytes(state_dict, sizes), sizes, activation, extra,
                     weights=weights_bytes(state_dict, sizes))
    return Path(directory)


def state_bytes(state_dict: Mapping[str, Tensor], sizes: list[int] | tuple[int, ...]) -> bytes:
    """The contents of ``model.pt`` for ``state_dict`` (checked against ``sizes``): what a worker
    sends back, so that the sweep driver and the tracking process handle bytes, not tensors."""
    import torch

    sizes = validate_sizes(sizes)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    _check_state(plain, sizes)
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    return buffer.getvalue()


def weights_bytes(state_dict: Mapping[str, Tensor], sizes: list[int] | tuple[int, ...]) -> bytes:
    """The contents of ``weights.npz`` for ``state_dict`` (checked against ``sizes``)."""
    import numpy as np

    sizes = validate_sizes(sizes)
    plain: dict[str, Any] = {k: v.detach().to("cpu").numpy() for k, v in state_dict.items()}
    _check_state(plain, sizes)
    buffer = io.BytesIO()
    np.savez(buffer, **plain)
    return buffer.getvalue()


def write_checkpoint(
    directory: str | os.PathLike,
    model: bytes,
    sizes: list[int] | tuple[int, ...],
    activation: str,
    extra: Mapping[str, Any] | None = None,
    weights: bytes | None = None,
) -> str:
    """Write ``model.pt`` (``model``, from :func:`state_bytes`), ``weights.npz`` (``weights``, from
    :func:`weights_bytes`, when given) and their ``architecture.json`` into ``directory``
    (created); returns the SHA-256 of ``model.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = validate_sizes(sizes)
    (directory / MODEL_FILE).write_bytes(model)
    digest = hashlib.sha256(model).hexdigest()
    if weights is not None:
        (directory / WEIGHTS_FILE).write_bytes(weights)
    meta = {
        "format": FORMAT,
        "architecture": canonical_architecture(sizes, activation),
        "sizes": list(sizes),
        "activation": activation,
        "parameters": {name: list(shape) for name, shape in _shapes(sizes).items()},
        "sha256": digest,
        **({"weights_sha256": hashlib.sha256(weights).hexdigest()} if weights is not None else {}),
        **({"extra": dict(extra)} if extra else {}),
    }
    (directory / ARCH_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return digest


def _shapes(sizes: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape in the course's naming:
    ``{"0_weight": (fan_in, fan_out), "0_bias": (fan_out,), ...}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{l}_weight"], shapes[f"{l}_bias"] = (fan_in, fan_out), (fan_out,)
    return shapes


def _check_state(state: Mapping[str, Any], sizes: tuple[int, ...]) -> None:
    expected = _shapes(sizes)
    if set(state) != set(expected):
        raise CheckpointError(
            f"checkpoint: parameters {sorted(state)} do not match architecture {list(sizes)} "
            f"(expected {sorted(expected)})"
        )
    for name, shape in expected.items():
        value = state[name]
        if not _floating(value):
            raise CheckpointError(f"checkpoint: {name} is not a floating-point tensor")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"checkpoint: {name} has shape {tuple(value.shape)}, expected {shape}")


def _floating(value: Any) -> bool:
    """A floating-point NumPy array or torch tensor (torch imported only for a value not an array)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return bool(np.issubdtype(value.dtype, np.floating))
    from torch import Tensor

    return isinstance(value, Tensor) and value.is_floating_point()


def _read_checked(directory: str | os.PathLike, data_file: str, digest_key: str,
                  expected_sha256: str | None) -> tuple[Path, tuple[int, ...], dict]:
    """``(path of data_file, sizes, architecture metadata)`` once ``data_file``'s SHA-256 matches
    what ``architecture.json`` records under ``digest_key`` and ``expected_sha256``.

    Raises:
        CheckpointError: a missing file, an invalid ``architecture.json``, or a digest mismatch.
    """
    directory = Path(directory)
    arch_path, data_path = directory / ARCH_FILE, directory / data_file
    if not arch_path.is_file() or not data_path.is_file():
        raise CheckpointError(f"checkpoint: {directory} needs both {data_file} and {ARCH_FILE}")
    try:
        meta = json.loads(arch_path.read_text())
        sizes = validate_sizes(meta["sizes"])
        meta["activation"] = str(meta["activation"])
        recorded = str(meta[digest_key])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint: {arch_path} is not a valid architecture file ({exc})") from None
    actual = file_sha256(data_path)
    for label, want in (("architecture.json", recorded), ("the tracking store", expected_sha256)):
        if want is not None and want != actual:
            raise CheckpointError(
                f"checkpoint: {data_path} has SHA-256 {actual[:12]}…, but {label} records {want[:12]}…; "
                "refusing to load a file that changed"
            )
    return data_path, sizes, meta


def load_weights(directory: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict[str, Any], dict]:
    """Read a checkpoint's ``weights.npz`` without torch, checked as :func:`load_state_dict`
    checks ``model.pt`` (``expected_sha256``: the digest the tracking store records for it).

    Returns:
        ``(name -> float NumPy array, architecture_metadata)``.

    Raises:
        CheckpointError: missing files (a checkpoint older than ``weights.npz``), a digest
            mismatch, an archive that is not plain arrays (pickles are refused), or wrong shapes.
    """
    import zipfile

    import numpy as np

    path, sizes, meta = _read_checked(directory, WEIGHTS_FILE, "weights_sha256", expected_sha256)
    try:
        with np.load(path, allow_pickle=False) as archive:
            state = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"checkpoint: {path} is not an archive of plain arrays; refused ({exc})"[:300]) from None
    _check_state(state, sizes)
    return state, meta


def load_state_dict(directory: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict[str, Tensor], dict]:
    """Read and check a checkpoint without building the model.

    Args:
        directory: holds ``model.pt`` and ``architecture.json``.
        expected_sha256: a digest recorded elsewhere (e.g. in MLflow); must match too.

    Returns:
        ``(state_dict, architecture_metadata)``.

    Raises:
        CheckpointError: missing files, a digest mismatch, a pickle that is not a plain tensor
            dict (``weights_only=True`` refuses it before any code runs), or wrong shapes.
    """
    import torch

    model_path, sizes, meta = _read_checked(directory, MODEL_FILE, "sha256", expected_sha256)
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint: {model_path} is not a plain tensor state dict; refused ({first[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint: {model_path} holds {type(state).__name__}, expected a state dict")
    _check_state(state, sizes)
    return state, meta


def load_checkpoint(directory: str | os.PathLike, expected_sha256: str | None = None) -> MLP:
    """Load a checkpoint written by :func:`save_checkpoint` into a fresh :class:`MLP`.

    Raises:
        CheckpointError: see :func:`load_state_dict`.
    """
    import torch

    from models.mlp import MLP

    state, meta = load_state_dict(directory, expected_sha256)
    model = MLP(meta["sizes"], meta["activation"])
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return model
