"""Optimizer updates as composite, non-differentiable ops: the default is written with other
ops; a backend replaces each with one in-place pass over the parameter (§2.12-2.15)."""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..errors import ShapeError
from .registry import COMPOSITE, Op, Sample


def sgd_update(param, grad, *, lr):
    """θ ← θ - α·dθ."""
    with no_grad():
        return (param - grad * lr,)


def adam_update(param, grad, m, v, *, lr, beta1, beta2, epsilon, step):
    """v = β1·v + (1-β1)·dθ; s = β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√ŝ + ε), v̂ = v/(1-β1^t), ŝ = s/(1-β2^t)."""
    with no_grad():
        m = m * beta1 + grad * (1.0 - beta1)
        v = v * beta2 + grad * grad * (1.0 - beta2)
        m_hat = m / (1.0 - beta1 ** step)
        v_hat = v / (1.0 - beta2 ** step)
        return param - m_hat * lr / (v_hat ** 0.5 + epsilon), m, v


def _check_update(param, grad, *state, **_):
    for name, t in (("grad", grad),) + tuple((f"state[{i}]", s) for i, s in enumerate(state)):
        if t.shape != param.shape:
            raise ShapeError(f"optimizer update: {name} has shape {t.shape} but the parameter has {param.shape}")


def _sgd_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(4, 3), r(4, 3)), {"lr": 0.1})]


def _adam_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(4, 3), r(4, 3), r(4, 3) * 0.1, np.abs(r(4, 3)) * 0.1),
                   {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "step": 3})]


UPDATE_OPS = [
    Op("sgd_update", COMPOSITE, _sgd_samples, _check_update, default=sgd_update, differentiable=False,
       in_place=True, doc=sgd_update.__doc__),
    Op("adam_update", COMPOSITE, _adam_samples, _check_update, default=adam_update, differentiable=False,
       in_place=True, doc=adam_update.__doc__),
]
