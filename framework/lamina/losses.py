"""Losses as small named objects: `loss(predictions, targets) -> scalar tensor`."""
from __future__ import annotations

from . import functional as F


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


LOSSES = [BinaryCrossEntropy, SoftmaxCrossEntropy, MeanSquaredError]
