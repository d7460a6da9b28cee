"""Checkpoints: arrays in safetensors, metadata in a JSON sidecar; written atomically.

A checkpoint directory holds `checkpoint.safetensors` and `checkpoint.json`. Each is written
to a temporary file, flushed and renamed into place; the JSON (written last) records the
SHA-256 of the arrays file, so a truncated or mismatched pair is refused on load. Nothing
is unpickled.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .files import atomic_write

ARRAYS_FILE = "checkpoint.safetensors"
META_FILE = "checkpoint.json"
FORMAT_VERSION = 1
MODEL_PREFIX, OPTIMIZER_PREFIX, EXTRA_PREFIX = "model/", "optimizer/", "extra/"


def save(directory, model, optimizer=None, metadata: dict | None = None,
         extra_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write the model's (and optimizer's) state, `metadata` (JSON-able) and named
    `extra_arrays` (e.g. the input normalization, the best weights so far) into `directory`."""
    from safetensors.numpy import save as st_save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {MODEL_PREFIX + k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    optimizer_scalars = None
    if optimizer is not None:
        opt_arrays, optimizer_scalars = optimizer.state_dict()
        arrays.update({OPTIMIZER_PREFIX + k: np.ascontiguousarray(v) for k, v in opt_arrays.items()})
    arrays.update({EXTRA_PREFIX + k: np.ascontiguousarray(v) for k, v in (extra_arrays or {}).items()})
    payload = st_save(arrays)
    atomic_write(directory / ARRAYS_FILE, payload)
    meta = {"format_version": FORMAT_VERSION, "arrays_sha256": hashlib.sha256(payload).hexdigest(),
            "optimizer": optimizer_scalars, "metadata": metadata or {}}
    atomic_write(directory / META_FILE, json.dumps(meta, indent=2))
    return directory


def read(directory) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of a checkpoint, after checking that both files exist and agree."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    directory = Path(directory)
    meta_path, arrays_path = directory / META_FILE, directory / ARRAYS_FILE
    if not meta_path.is_file() or not arrays_path.is_file():
        raise CheckpointError(f"no checkpoint in {directory}: expected {META_FILE} and {ARRAYS_FILE}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path} is corrupted (not valid JSON): {err}") from err
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: unsupported or missing format_version "
                              f"(expected {FORMAT_VERSION})")
    payload = arrays_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != meta.get("arrays_sha256"):
        raise CheckpointError(f"{arrays_path} is truncated or corrupted: its SHA-256 does not match the one "
                              f"recorded in {META_FILE}")
    try:
        arrays = st_load(payload)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{arrays_path} is not a valid safetensors file: {err}") from err
    return arrays, meta


def load(directory, model, optimizer=None) -> dict:
    """Restore `model` (and `optimizer`) from `directory`; returns the saved metadata."""
    arrays, meta = read(directory)
    model.load_state_dict({k[len(MODEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)})
    if optimizer is not None and meta.get("optimizer") is not None:
        optimizer.load_state_dict({k[len(OPTIMIZER_PREFIX):]: v for k, v in arrays.items()
                                   if k.startswith(OPTIMIZER_PREFIX)}, meta["optimizer"])
    return meta["metadata"]


def extra_arrays(directory) -> dict[str, np.ndarray]:
    """The `extra_arrays` saved with a checkpoint (verified like the rest)."""
    arrays, _ = read(directory)
    return {k[len(EXTRA_PREFIX):]: v for k, v in arrays.items() if k.startswith(EXTRA_PREFIX)}


def exists(directory) -> bool:
    directory = Path(directory)
    return (directory / META_FILE).is_file() and (directory / ARRAYS_FILE).is_file()
