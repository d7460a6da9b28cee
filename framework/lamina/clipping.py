"""Gradient clipping (for exploding gradients, e.g. in RNNs): by value, or by the global L2 norm
of all gradients together. Both replace each `p.grad` with a new tensor and never write into
the old one, which may be shared with other arrays."""
from __future__ import annotations

import math

from .autograd import no_grad
from .optim.optimizer import check_number
from .tensor import Tensor

#: added to the norm before dividing, as PyTorch's clip_grad_norm_ does
NORM_EPSILON = 1e-6


def _with_grads(params) -> list[Tensor]:
    params = [params] if isinstance(params, Tensor) else list(params)
    return [p for p in params if p.grad is not None]


@no_grad()
def clip_grad_value(params, clip_value: float) -> None:
    """Clip every gradient element to [-clip_value, clip_value] (`torch.nn.utils.clip_grad_value_`)."""
    limit = check_number("clip_grad_value", "clip_value", clip_value, low=0.0, low_open=True)
    for p in _with_grads(params):
        p.grad = p.grad.clip(-limit, limit)


@no_grad()
def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm ‖(dθ_1, …, dθ_n)‖ ≤ max_norm.

    With total = √(Σ_i Σ dθ_i²) and c = max_norm/(total + 1e-6), every gradient is multiplied by c
    when c < 1 (that is, when total exceeds max_norm, up to the 1e-6), exactly as
    `torch.nn.utils.clip_grad_norm_` does. Returns total, the norm before clipping. A gradient holding
    inf or nan makes total inf or nan; the gradients are then scaled by 0 or nan, as PyTorch's are
    (its default error_if_nonfinite=False), so the next update shows the problem instead of hiding it.
    """
    limit = check_number("clip_grad_norm", "max_norm", max_norm, low=0.0, low_open=True)
    grads = _with_grads(params)
    total = math.sqrt(sum(float((p.grad * p.grad).sum().item()) for p in grads))
    scale = limit / (total + NORM_EPSILON)
    if not scale >= 1.0:                 # nan too
        for p in grads:
            p.grad = p.grad * scale
    return total
