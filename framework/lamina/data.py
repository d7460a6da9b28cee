"""Mini-batch iteration (§2.11) and named data splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import ShapeError


@dataclass
class Split:
    """Examples in rows: X (m, n_x) and labels y (m,) or (m, k)."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if len(self.X) != len(self.y):
            raise ShapeError(f"Split: X has {len(self.X)} examples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class Dataset:
    """A named dataset split into train, dev and test; `num_classes` for classification."""

    name: str
    train: Split
    dev: Split | None
    test: Split | None
    num_classes: int | None = None

    @property
    def num_features(self) -> int:
        return int(np.prod(self.train.X.shape[1:]))


def minibatches(X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (X_batch, y_batch) of `batch_size` rows (the last may be smaller), in a fresh
    random order per call when `shuffle` (seeded for reproducibility)."""
    m = len(X)
    if batch_size <= 0:
        raise ValueError(f"minibatches: batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(seed).permutation(m) if shuffle else np.arange(m)
    for start in range(0, m, batch_size):
        idx = order[start:start + batch_size]
        yield X[idx], y[idx]


def num_batches(m: int, batch_size: int) -> int:
    return -(-m // batch_size)


def split_indices(m: int, ratios: tuple[float, ...], seed: int = 0) -> list[np.ndarray]:
    """Shuffle range(m) and cut it by `ratios` (which sum to 1), e.g. (0.6, 0.2, 0.2)."""
    if abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"split ratios must sum to 1, got {ratios}")
    order = np.random.default_rng(seed).permutation(m)
    cuts = np.round(np.cumsum(ratios)[:-1] * m).astype(int)
    return np.split(order, cuts)
