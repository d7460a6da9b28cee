"""Regularizers (§2.3): a term added to the cost J that keeps the weights small.

`reg = lamina.registry.get("regularizers", "l2")(lambd=0.01)`, then `reg(model, m)` is the
scalar tensor added to J for a batch of m examples. Only weights are regularized: the
parameters each layer lists in `Layer.weight_names` (a Dense layer's W), never biases or
BatchNorm's γ and β (§2.3: "there is usually no regularization of the bias term").
"""
from __future__ import annotations

from .backend import get_backend
from .dtypes import get_default_dtype
from .errors import LaminaError
from .ops import call
from .tensor import Tensor


class Regularizer:
    """Base class: subclasses set `name` and define `penalty(W)`, the term of one weight before
    the λ/(2m) factor that both regularizers of §2.3 share."""

    name = ""

    def __init__(self, lambd: float = 0.01):
        if not lambd >= 0:
            raise LaminaError(f"{type(self).__name__} regularizer: lambd must be non-negative, got {lambd}")
        self.lambd = float(lambd)

    def penalty(self, W: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} must define penalty()")

    def __call__(self, model, m: int) -> Tensor:
        """λ/(2m)·Σ_l penalty(W^[l]) over the model's weights, as a scalar tensor."""
        if int(m) <= 0:
            raise LaminaError(f"{type(self).__name__} regularizer: m (the number of examples) must be positive, "
                              f"got {m}")
        total = None
        for _, W in model.named_weights():
            term = self.penalty(W)
            total = term if total is None else total + term
        if total is None:
            backend = model.parameters()[0].backend if model.parameters() else get_backend()
            return Tensor._wrap(backend.zeros((), get_default_dtype()), backend)
        return total * (self.lambd / (2.0 * int(m)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lambd={self.lambd})"


class L2(Regularizer):
    """J += λ/(2m)·Σ_l ‖W^[l]‖²_F (‖W‖²_F = Σ_ij W_ij²), whose gradient λ/m·W gives gradient
    descent's weight-decay form W ← (1 - αλ/m)·W - α·(backprop term). PyTorch's
    `weight_decay=λ/m` on the weights takes the same step."""

    name = "l2"

    def penalty(self, W):
        return (W * W).sum()


class L1(Regularizer):
    """J += λ/(2m)·Σ_l ‖W^[l]‖₁ (‖W‖₁ = Σ_ij |W_ij|), with the λ/(2m) of §2.3 (whose L1/L2 labels are
    swapped: the formula with ‖W‖₁ is L1's); gradient λ/(2m)·sign(W), 0 at W = 0. It drives weights
    to exactly zero (sparse W)."""

    name = "l1"

    def penalty(self, W):
        zero = Tensor._wrap(W.backend.zeros((), W.dtype), W.backend)
        sign = call("greater", W, zero) - call("greater", zero, W)
        return (W * sign).sum()


REGULARIZERS = [L2, L1]
