"""Input normalization (§2.6): statistics fitted on the training set, applied unchanged to
the dev and test sets (and to whatever a trained model later predicts on)."""
from __future__ import annotations

import numpy as np

from .errors import CheckpointError, LaminaError, ShapeError


class Standardizer:
    """x ← (x - μ)/σ per feature, with μ = 1/m Σ_i x^(i) and σ² = 1/m Σ_i (x^(i) - μ)² over the m
    training examples (the rows of X).

    §2.6 writes x ← x/σ² after the centering; dividing by σ (as here, and as scikit-learn's
    StandardScaler) is what gives every feature variance 1. A feature that is constant on the
    training set (σ = 0) is only centered: its σ is stored as 1.
    Images keep one μ, σ per pixel and channel (every axis but the first); `state_dict()` and
    `Standardizer.from_state_dict()` carry the statistics into a checkpoint and back.
    """

    def __init__(self):
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, X) -> "Standardizer":
        """Learn μ and σ of each feature from the training examples X (m, ...); returns self."""
        X = np.asarray(X)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ShapeError(f"Standardizer.fit: expected training examples in rows, shape (m, n_x) with m ≥ 1, "
                             f"got {X.shape}")
        if X.dtype.kind not in "iuf":
            raise LaminaError(f"Standardizer.fit: expected numeric inputs, got dtype {X.dtype}")
        values = X.astype(np.float64)
        self.mean = values.mean(axis=0)
        std = values.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        """(X - μ)/σ with the fitted statistics, in X's float dtype (float32 for integer X)."""
        if self.mean is None:
            raise LaminaError("Standardizer.transform: call fit(X_train) first (or load it with from_state_dict)")
        X = np.asarray(X)
        if X.shape[1:] != self.mean.shape:
            raise ShapeError(f"Standardizer.transform: fitted on examples of shape {self.mean.shape}, got X of "
                             f"shape {X.shape} (examples of shape {X.shape[1:]})")
        dtype = X.dtype if X.dtype.kind == "f" else np.dtype(np.float32)
        return ((X - self.mean) / self.std).astype(dtype, copy=False)

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, X) -> np.ndarray:
        """X·σ + μ: the inputs a transformed X came from."""
        if self.mean is None:
            raise LaminaError("Standardizer.inverse_transform: call fit(X_train) first")
        X = np.asarray(X)
        return (X * self.std + self.mean).astype(X.dtype if X.dtype.kind == "f" else np.float32, copy=False)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """{"mean": μ, "std": σ} (float64 arrays, one value per feature) for a checkpoint."""
        if self.mean is None:
            raise LaminaError("Standardizer.state_dict: the standardizer has not been fitted")
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Standardizer":
        """A fitted Standardizer from the arrays `state_dict()` gave."""
        if set(state) != {"mean", "std"}:
            raise CheckpointError(f"Standardizer.from_state_dict: expected the arrays 'mean' and 'std', got "
                                  f"{sorted(state)}")
        mean, std = (np.asarray(state[k], dtype=np.float64) for k in ("mean", "std"))
        if mean.shape != std.shape:
            raise CheckpointError(f"Standardizer.from_state_dict: 'mean' has shape {mean.shape} but 'std' has "
                                  f"{std.shape}")
        if not np.all(std > 0):
            raise CheckpointError("Standardizer.from_state_dict: every σ in 'std' must be positive")
        standardizer = cls()
        standardizer.mean, standardizer.std = mean.copy(), std.copy()
        return standardizer

    def __repr__(self) -> str:
        fitted = f"{self.mean.size} features" if self.mean is not None else "not fitted"
        return f"Standardizer({fitted})"
