"""Optimizer updates as composite, non-differentiable ops: the default is written with other
ops; a backend replaces each with one in-place pass over the parameter (§2.12-2.15)."""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..errors import OpError, ShapeError
from .registry import COMPOSITE, Op, Sample

#: momentum's dampening -> the factor of dθ in v's update, given β
MOMENTUM_DAMPENINGS = {"ewa": lambda beta: 1.0 - beta, "simplified": lambda beta: 1.0}


def split_epsilon(epsilon, epsilon_inside_sqrt) -> tuple[float, float]:
    """(ε_in, ε_out) of the denominator √(s + ε_in) + ε_out, one of them zero: both placements of
    ε (RMSprop, Adam) as one branch-free formula, as the compiled kernels run it."""
    return (epsilon, 0.0) if epsilon_inside_sqrt else (0.0, epsilon)


def rms_denominator(mean_square, epsilon, epsilon_inside_sqrt):
    """√s + ε, or √(s + ε) when `epsilon_inside_sqrt`."""
    inside, outside = split_epsilon(epsilon, epsilon_inside_sqrt)
    return (mean_square + inside) ** 0.5 + outside


def sgd_update(param, grad, *, lr):
    """θ ← θ - α·dθ."""
    with no_grad():
        return (param - grad * lr,)


def momentum_update(param, grad, v, *, lr, beta, dampening):
    """v = β·v + c·dθ, θ ← θ - α·v, with c = 1-β (dampening "ewa") or 1 ("simplified")."""
    with no_grad():
        v = v * beta + grad * MOMENTUM_DAMPENINGS[dampening](beta)
        return param - v * lr, v


def rmsprop_update(param, grad, s, *, lr, beta, epsilon, epsilon_inside_sqrt=False):
    """s = β·s + (1-β)·dθ²; θ ← θ - α·dθ/(√s + ε), or α·dθ/√(s + ε) when `epsilon_inside_sqrt`."""
    with no_grad():
        s = s * beta + grad * grad * (1.0 - beta)
        return param - grad * lr / rms_denominator(s, epsilon, epsilon_inside_sqrt), s


def adam_update(param, grad, m, v, *, lr, beta1, beta2, epsilon, step, epsilon_inside_sqrt=False):
    """v = β1·v + (1-β1)·dθ; s = β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√ŝ + ε), v̂ = v/(1-β1^t), ŝ = s/(1-β2^t);
    with `epsilon_inside_sqrt` θ ← θ - α·v̂/√(ŝ + ε)."""
    with no_grad():
        m = m * beta1 + grad * (1.0 - beta1)
        v = v * beta2 + grad * grad * (1.0 - beta2)
        m_hat = m / (1.0 - beta1 ** step)
        v_hat = v / (1.0 - beta2 ** step)
        return param - m_hat * lr / rms_denominator(v_hat, epsilon, epsilon_inside_sqrt), m, v


def _check_update(param, grad, *state, **_):
    for name, t in (("grad", grad),) + tuple((f"state[{i}]", s) for i, s in enumerate(state)):
        if t.shape != param.shape:
            raise ShapeError(f"optimizer update: {name} has shape {t.shape} but the parameter has {param.shape}")


def check_dampening(where: str, dampening) -> None:
    if dampening not in MOMENTUM_DAMPENINGS:
        raise OpError(f"{where}: dampening must be one of {', '.join(map(repr, MOMENTUM_DAMPENINGS))}, "
                      f"got {dampening!r}")


def _check_momentum(param, grad, v, *, dampening, **_):
    _check_update(param, grad, v)
    check_dampening("momentum_update", dampening)


def _normal(rng, dtype):
    return lambda *s: rng.standard_normal(s).astype(dtype)


def _sgd_samples(rng, dtype):
    r = _normal(rng, dtype)
    return [Sample((r(4, 3), r(4, 3)), {"lr": 0.1})]


def _momentum_samples(rng, dtype):
    r = _normal(rng, dtype)
    return [Sample((r(4, 3), r(4, 3), r(4, 3) * 0.1), {"lr": 0.1, "beta": 0.9, "dampening": dampening})
            for dampening in MOMENTUM_DAMPENINGS]


def _mean_square(r):
    """A state of squares, a row of them near 0, where ε's placement changes the step most."""
    s = np.abs(r(4, 3)) * 0.1
    s[0] = 1e-9
    return s


def _rmsprop_samples(rng, dtype):
    r = _normal(rng, dtype)
    param, grad, s = r(4, 3), r(4, 3) * 1e-3, _mean_square(r)
    return [Sample((param, grad, s), {"lr": 0.01, "beta": 0.9, "epsilon": 1e-4, "epsilon_inside_sqrt": inside})
            for inside in (False, True)]


def _adam_samples(rng, dtype):
    r = _normal(rng, dtype)
    arrays = (r(4, 3), r(4, 3), r(4, 3) * 0.1, np.abs(r(4, 3)) * 0.1)
    attrs = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "step": 3}
    small = (arrays[0], arrays[1] * 1e-3, arrays[2] * 1e-3, _mean_square(r))
    return [Sample(arrays, attrs)] + [Sample(small, {**attrs, "epsilon": 1e-4, "epsilon_inside_sqrt": inside})
                                      for inside in (False, True)]


UPDATE_OPS = [
    Op(name, COMPOSITE, samples, check, default=default, differentiable=False, in_place=True, doc=default.__doc__)
    for name, default, samples, check in (
        ("sgd_update", sgd_update, _sgd_samples, _check_update),
        ("momentum_update", momentum_update, _momentum_samples, _check_momentum),
        ("rmsprop_update", rmsprop_update, _rmsprop_samples, _check_update),
        ("adam_update", adam_update, _adam_samples, _check_update),
    )
]
