"""Normalization ops (§2.19): batch normalization over every axis but the features axis.

`batch_norm` is composite: the default below is written with other ops, so every backend
runs it; a backend may fuse forward and backward into one kernel (the CPU backend does).
"""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..errors import OpError, ShapeError
from .primitives import _normalize_axis
from .registry import COMPOSITE, Op, Sample, check_float


def _reduced_axes(x, axis) -> tuple:
    """Every axis of x but the features axis `axis` (the statistics are taken over these)."""
    (features,) = _normalize_axis("batch_norm", x, axis)
    return tuple(a for a in range(x.ndim) if a != features)


def _per_feature(t, x, axis):
    """A (C,) tensor reshaped to broadcast along x's features axis."""
    (features,) = _normalize_axis("batch_norm", x, axis)
    if features == x.ndim - 1:
        return t
    return t.reshape(tuple(x.shape[a] if a == features else 1 for a in range(x.ndim)))


def batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum=0.9, epsilon=1e-5, axis=-1):
    """Batch normalization over every axis of x but `axis` (the features, C of them):

    training: μ = 1/N Σ_i z^(i), σ² = 1/N Σ_i (z^(i) - μ)² over the N = x.size/C values of each
    feature; z_norm = (z - μ)/√(σ² + ε); out = γ·z_norm + β. The running averages are then updated
    in place, running = momentum·running + (1 - momentum)·batch, with the unbiased σ²·N/(N-1) for
    running_var (as PyTorch; its `momentum` is 1 - this one).
    inference (training=False): μ, σ² are running_mean, running_var.
    """
    if training:
        axes = _reduced_axes(x, axis)
        count = x.size // x.shape[axis]
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        x_norm = centered / (var + epsilon) ** 0.5
        with no_grad():
            batch_mean, batch_var = mean.reshape(-1), var.reshape(-1) * (count / (count - 1))
            running_mean.data = (running_mean * momentum + batch_mean * (1.0 - momentum)).data
            running_var.data = (running_var * momentum + batch_var * (1.0 - momentum)).data
    else:
        mean, var = _per_feature(running_mean, x, axis), _per_feature(running_var, x, axis)
        x_norm = (x - mean) / (var + epsilon) ** 0.5
    return x_norm * _per_feature(gamma, x, axis) + _per_feature(beta, x, axis)


def _check_batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum=0.9, epsilon=1e-5,
                      axis=-1):
    check_float("batch_norm", "x", x)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: input 'x' needs a batch axis and a features axis, got shape {x.shape}")
    (features,) = _normalize_axis("batch_norm", x, axis)
    n_features = x.shape[features]
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t.shape != (n_features,):
            raise ShapeError(f"batch_norm: {name!r} must have shape ({n_features},), one value per feature of "
                             f"x {x.shape} along axis {axis}, got {t.shape}")
        if t.dtype != x.dtype:
            raise OpError(f"batch_norm: {name!r} has dtype {t.dtype} but x has {x.dtype}; they must match")
    if not 0.0 <= momentum <= 1.0:
        raise OpError(f"batch_norm: 'momentum' (β of the running averages) must lie in [0, 1], got {momentum}")
    if not epsilon > 0:
        raise OpError(f"batch_norm: 'epsilon' must be positive, got {epsilon}")
    if training and x.size // max(n_features, 1) < 2:
        raise ShapeError(f"batch_norm: training needs more than one value per feature to take a variance, got "
                         f"x of shape {x.shape} (normalizing over every axis but {axis})")


def _batch_norm_samples(rng, dtype):
    def case(shape, axis, training, shift=0.0):
        c, spread = shape[axis], [1] * len(shape)
        spread[axis] = c
        x = (rng.standard_normal(shape) * rng.uniform(0.5, 2.0, spread) + shift).astype(dtype)
        stats = (rng.standard_normal(c) * 0.1, rng.uniform(0.5, 1.5, c))
        params = (rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1)
        arrays = (x,) + tuple(np.asarray(a, dtype=dtype) for a in params + stats)
        return Sample(arrays, {"training": training, "momentum": 0.9, "epsilon": 1e-5, "axis": axis})

    return [case((6, 4), -1, True), case((2, 3, 3, 5), -1, True, shift=3.0), case((5, 4), -1, False),
            case((2, 3, 2, 3), -1, False), case((4, 3, 2), 1, True)]


NORMALIZATION_OPS = [
    Op("batch_norm", COMPOSITE, _batch_norm_samples, _check_batch_norm, default=batch_norm, in_place=True,
       doc=batch_norm.__doc__),
]
