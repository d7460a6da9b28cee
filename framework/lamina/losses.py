"""Losses as small named objects: `loss(predictions, targets) -> scalar tensor`."""
from __future__ import annotations

import numpy as np

from . import functional as F
from .data import known_labels
from .errors import LaminaError, ShapeError
from .tensor import Tensor


class Loss:
    name = ""
    #: what the model's last layer should output for this loss ("logits" or "probabilities")
    expects = "outputs"

    def __call__(self, predictions, targets):
        raise TypeError(f"{type(self).__name__} must define __call__")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BinaryCrossEntropy(Loss):
    """J = -1/m Σ [y·log a + (1-y)·log(1-a)] on probabilities a = σ(z) (§1.1)."""

    name, expects = "binary_cross_entropy", "probabilities"

    def __call__(self, probs, y):
        return F.binary_cross_entropy(probs, y)


class SoftmaxCrossEntropy(Loss):
    """J = -1/m Σ log softmax(z)[y] on logits z, fused and stable; dJ/dz = (ŷ - y)/m (§2.20)."""

    name, expects = "softmax_cross_entropy", "logits"

    def __call__(self, logits, labels):
        return F.softmax_cross_entropy(logits, labels)


class MeanSquaredError(Loss):
    """J = mean((ŷ - y)²)."""

    name = "mse"

    def __call__(self, pred, target):
        return F.mse(pred, target)


class MultiTaskBinaryCrossEntropy(Loss):
    """Multi-task (multi-label) logistic loss (§3.10), on probabilities a = σ(z) of shape (m, c):

        J = 1/m Σ_i Σ_{j known} -[y_ij·log a_ij + (1 - y_ij)·log(1 - a_ij)]

    Unlike softmax, an example may have several labels set. A label marked unknown in the
    targets (NaN or −1, see `lamina.data.known_labels`) is left out of the inner sum, so it
    adds nothing to J and sends no gradient to its output.

    `normalize` says what J is divided by: "examples" (default, the seed's formula) divides by
    m, every row, even one with no known label; "labels" divides by the number of known
    labels instead, the mean loss per known label (what torch's BCE with weight=mask and
    reduction="mean" over the known entries gives). a is clipped to [eps, 1 - eps] as in
    `binary_cross_entropy`.
    """

    name, expects = "multi_task_bce", "probabilities"
    NORMALIZE = ("examples", "labels")

    def __init__(self, normalize: str = "examples"):
        if normalize not in self.NORMALIZE:
            raise LaminaError(f"multi_task_bce: normalize must be 'examples' or 'labels', got {normalize!r}")
        self.normalize = normalize

    def __call__(self, probs, y):
        y = y.numpy() if isinstance(y, Tensor) else np.asarray(y)
        if probs.ndim != 2 or tuple(y.shape) != probs.shape:
            raise ShapeError(f"multi_task_bce: predictions {probs.shape} and targets {tuple(y.shape)} must both "
                             f"have shape (m, labels)")
        known = known_labels(y)
        values = y[known]
        if values.size and (values.min() < 0 or values.max() > 1):
            raise LaminaError(f"multi_task_bce: known targets must lie in [0, 1] (unknown ones NaN or -1), got "
                              f"values from {values.min()} to {values.max()}")
        dtype, backend = probs.dtype, probs.backend
        targets = Tensor(np.where(known, y, 0), dtype=dtype, backend=backend)
        mask = Tensor(known, dtype=dtype, backend=backend)
        eps = float(np.finfo(dtype).eps)
        a = probs.clip(eps, 1.0 - eps)
        losses = -(targets * a.log() + (1.0 - targets) * (1.0 - a).log()) * mask
        count = probs.shape[0] if self.normalize == "examples" else int(known.sum())
        return losses.sum() / float(max(count, 1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize={self.normalize!r})"


LOSSES = [BinaryCrossEntropy, SoftmaxCrossEntropy, MeanSquaredError, MultiTaskBinaryCrossEntropy]
