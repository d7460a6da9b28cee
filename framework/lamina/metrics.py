"""Metrics: `metric(outputs, targets) -> float`, computed on the host."""
from __future__ import annotations

import numpy as np

from .errors import ShapeError


def _host(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def predicted_classes(outputs) -> np.ndarray:
    """Class predictions: argmax over the last axis, or a = σ(z) ≥ 0.5 for one output column."""
    outputs = _host(outputs)
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        return outputs.argmax(axis=1)
    return (outputs.reshape(len(outputs), -1)[:, 0] >= 0.5).astype(np.int64)


class Accuracy:
    """Fraction of examples whose predicted class equals the label (labels int or one-hot)."""

    name = "accuracy"

    def __call__(self, outputs, targets) -> float:
        predicted = predicted_classes(outputs)
        targets = _host(targets)
        if targets.ndim == 2 and targets.shape[1] > 1:
            targets = targets.argmax(axis=1)
        targets = targets.reshape(len(targets), -1)[:, 0] if targets.ndim > 1 else targets
        if predicted.shape != targets.shape:
            raise ShapeError(f"accuracy: {predicted.shape[0]} predictions but {targets.shape[0]} targets")
        return float(np.mean(predicted == targets.astype(np.int64))) if len(targets) else float("nan")


def accuracy(outputs, targets) -> float:
    return Accuracy()(outputs, targets)


METRICS = [Accuracy]
