"""Gradient checking (§2.9–2.10): two-sided differences against autograd.

dθ_approx[i] = (J(θ + ε·e_i) - J(θ - ε·e_i)) / 2ε and the check
‖dθ_approx - dθ‖₂ / (‖dθ_approx‖₂ + ‖dθ‖₂): ~1e-7 is great, 1e-5 suspicious, 1e-3 a bug.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .autograd import no_grad
from .errors import LaminaError
from .tensor import Tensor


_watch = threading.local()


def mark_stochastic(what: str) -> None:
    """Say that the forward computation now running draws random numbers (`what` names the
    layer and how to turn it off). Outside a gradient check this costs one lookup; inside one,
    `gradcheck` refuses to go on, since J would differ between evaluations (§2.10: turn dropout
    off for the grad check)."""
    marks = getattr(_watch, "marks", None)
    if marks is not None and what not in marks:
        marks.append(what)


def _evaluate_watching(call: Callable[[], Tensor]) -> Tensor:
    """call(), raising a LaminaError if anything in it called `mark_stochastic`."""
    previous, _watch.marks = getattr(_watch, "marks", None), []
    try:
        out = call()
        marks = _watch.marks
    finally:
        _watch.marks = previous
    if marks:
        raise LaminaError("gradcheck: fn is stochastic, so two-sided differences of it mean nothing (§2.10: turn "
                          "dropout off for the gradient check): " + "; ".join(marks))
    return out


@dataclass(frozen=True)
class GradcheckResult:
    relative_difference: float
    worst_input: str          # the name (or index) of the input holding the worst component
    worst_index: tuple        # that component's index in the input
    worst_difference: float   # |dθ_approx - dθ| there
    threshold: float

    @property
    def passed(self) -> bool:
        return self.relative_difference < self.threshold

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"gradient check {verdict}: relative difference {self.relative_difference:.3e} "
                f"(threshold {self.threshold:.0e}); worst component {self.worst_input}{list(self.worst_index)} "
                f"off by {self.worst_difference:.3e}")


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Tensor] | Mapping[str, Tensor],
              epsilon: float = 1e-6, threshold: float = 1e-7) -> GradcheckResult:
    """Compare autograd's gradient of the scalar `fn(*inputs)` with two-sided differences.

    `inputs` are float64 tensors (a list, or a dict name -> tensor so the worst component is
    reported by name); every one is checked. Returns a `GradcheckResult`. Raises LaminaError if
    `fn` is stochastic (it ran a layer that calls `mark_stochastic`, such as an active Dropout).
    """
    named = list(inputs.items()) if isinstance(inputs, Mapping) else [(str(i), t) for i, t in enumerate(inputs)]
    tensors = [t for _, t in named]
    call = (lambda: fn()) if isinstance(inputs, Mapping) else (lambda: fn(*tensors))
    for name, t in named:
        if t.dtype != np.float64:
            raise LaminaError(f"gradcheck: input {name!r} is {t.dtype}; gradient checking needs float64 "
                              f"(use lamina.set_default_dtype('float64'))")
        t.requires_grad = True
        t.grad = None

    out = _evaluate_watching(call)
    if out.size != 1:
        raise LaminaError(f"gradcheck: fn must return a scalar, got shape {out.shape}")
    out.backward()
    analytic = [t.grad.numpy().ravel() if t.grad is not None else np.zeros(t.size) for t in tensors]

    numeric = []
    with no_grad():
        for t in tensors:
            values = t.numpy().astype(np.float64).copy()
            flat = values.ravel()
            approx = np.empty(flat.size)
            for i in range(flat.size):
                original = flat[i]
                flat[i] = original + epsilon
                t.data = t.backend.asarray(values, t.dtype)
                plus = float(call().item())
                flat[i] = original - epsilon
                t.data = t.backend.asarray(values, t.dtype)
                minus = float(call().item())
                flat[i] = original
                approx[i] = (plus - minus) / (2 * epsilon)
            t.data = t.backend.asarray(values, t.dtype)
            numeric.append(approx)

    d_approx, d_theta = np.concatenate(numeric), np.concatenate(analytic)
    denominator = np.linalg.norm(d_approx) + np.linalg.norm(d_theta)
    relative = float(np.linalg.norm(d_approx - d_theta) / denominator) if denominator > 0 else 0.0
    diffs = np.abs(d_approx - d_theta)
    worst = int(np.argmax(diffs)) if diffs.size else 0
    offsets = np.cumsum([0] + [t.size for t in tensors])
    k = int(np.searchsorted(offsets, worst, side="right") - 1)
    index = np.unravel_index(worst - offsets[k], tensors[k].shape) if tensors[k].shape else ()
    return GradcheckResult(relative, named[k][0], tuple(int(i) for i in index),
                           float(diffs[worst]) if diffs.size else 0.0, threshold)
