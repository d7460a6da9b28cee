"""Composite ops: each has a default implementation written with other ops (so every
backend runs it) and may be replaced by a backend's fused kernel for speed."""
from __future__ import annotations

import numpy as np

from ..errors import OpError, ShapeError
from .registry import COMPOSITE, Op, Sample, call, check_float, check_ndim
from .primitives import _check_reduce, _normalize_axis, _reduce_samples


def _away_from_zero(x):
    x[np.abs(x) < 0.05] += 0.1
    return x


def _activation_samples(rng, dtype):
    return [Sample((_away_from_zero(rng.standard_normal((4, 6))).astype(dtype),)),
            Sample((_away_from_zero(rng.standard_normal((2, 3, 5))).astype(dtype),))]


def _float_arg(op):
    return lambda x, **_: check_float(op, "x", x)


# ---- elementwise ------------------------------------------------------------------------
def neg(x):
    return call("mul", x, _scalar(x, -1.0))


def mean(x, *, axis=None, keepdims=False):
    axes = _normalize_axis("mean", x, axis)
    count = int(np.prod([x.shape[a] for a in axes] if axes is not None else x.shape, dtype=np.int64))
    return call("sum", x, axis=axis, keepdims=keepdims) / float(max(count, 1))


def sigmoid(x):
    """σ(z) = 1/(1+e^(-z)), written as ½(tanh(z/2)+1) so it never overflows; σ' = σ(1-σ)."""
    return (call("tanh", x * 0.5) + 1.0) * 0.5


def relu(x):
    """max(0, z); derivative 1 for z > 0, else 0."""
    return x * call("greater", x, _scalar(x, 0.0))


def leaky_relu(x, *, alpha=0.01):
    """max(αz, z) (α = 0.01 by default); derivative 1 for z > 0, else α."""
    positive = call("greater", x, _scalar(x, 0.0))
    return x * (positive * (1.0 - alpha) + alpha)


def _check_axis_op(op):
    def check(x, *, axis=-1):
        check_float(op, "x", x)
        _normalize_axis(op, x, axis)
    return check


def softmax(x, *, axis=-1):
    """softmax(z)_i = e^(z_i - max z) / Σ_j e^(z_j - max z)."""
    shifted = x - call("max", x, axis=axis, keepdims=True).detach()
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, *, axis=-1):
    """log softmax(z)_i = (z_i - max z) - log Σ_j e^(z_j - max z)."""
    shifted = x - call("max", x, axis=axis, keepdims=True).detach()
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def _softmax_samples(rng, dtype):
    x = rng.standard_normal((4, 6)).astype(dtype) * 3
    return [Sample((x,), {"axis": -1}), Sample((x,), {"axis": 0}),
            Sample((rng.standard_normal((2, 3, 5)).astype(dtype),), {"axis": 1})]


# ---- dense --------------------------------------------------------------------------------
def _check_dense(x, W, b=None):
    check_ndim("dense", "W", W, (2,))
    if x.ndim < 2:
        raise ShapeError(f"dense: input 'x' needs shape (m, n_in), got {x.shape}")
    if x.shape[-1] != W.shape[0]:
        raise ShapeError(f"dense: input 'x' has {x.shape[-1]} features (shape {x.shape}) but 'W' expects "
                         f"n_in = {W.shape[0]} (shape {W.shape})")
    if b is not None and b.shape != (W.shape[1],):
        raise ShapeError(f"dense: bias 'b' must have shape ({W.shape[1]},) to match W {W.shape}, got {b.shape}")


def dense(x, W, b=None):
    """Z = X·W + b with X (m, n_in), W (n_in, n_out), b (n_out,)."""
    z = call("matmul", x, W)
    return z if b is None else z + b


def _dense_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(5, 4), r(4, 3), r(3))), Sample((r(2, 5, 4), r(4, 3), r(3))), Sample((r(5, 4), r(4, 3)))]


# ---- losses -------------------------------------------------------------------------------
def _check_same_shape(op, a_name, b_name):
    def check(a, b):
        check_float(op, a_name, a)
        if a.shape != b.shape:
            raise ShapeError(f"{op}: {a_name!r} has shape {a.shape} but {b_name!r} has shape {b.shape}; "
                             f"they must match (no broadcasting in losses)")
    return check


def binary_cross_entropy(probs, y):
    """L = -mean(y·log a + (1-y)·log(1-a)); a is clipped to [eps, 1-eps] so log never sees 0."""
    eps = float(np.finfo(probs.dtype).eps)
    a = probs.clip(eps, 1.0 - eps)
    y = y.astype(probs.dtype)
    return -(y * a.log() + (1.0 - y) * (1.0 - a).log()).mean()


def _bce_samples(rng, dtype):
    p = rng.uniform(0.05, 0.95, (6, 3)).astype(dtype)
    return [Sample((p, (rng.uniform(size=(6, 3)) > 0.5).astype(dtype))),
            Sample((p[:, :1], rng.uniform(size=(6, 1)).astype(dtype)))]


def _check_softmax_ce(logits, labels):
    check_ndim("softmax_cross_entropy", "logits", logits, (2,))
    check_float("softmax_cross_entropy", "logits", logits)
    m, n = logits.shape
    if labels.dtype.kind in "iu":
        if labels.shape != (m,):
            raise ShapeError(f"softmax_cross_entropy: integer 'labels' must have shape ({m},) for logits "
                             f"{logits.shape}, got {labels.shape}")
        values = labels.numpy()
        if values.size and (values.min() < 0 or values.max() >= n):
            raise OpError(f"softmax_cross_entropy: labels must lie in [0, {n}), got values from "
                          f"{values.min()} to {values.max()}")
    elif labels.shape != logits.shape:
        raise ShapeError(f"softmax_cross_entropy: one-hot 'labels' must have the logits' shape {logits.shape}, "
                         f"got {labels.shape}")


def softmax_cross_entropy(logits, labels):
    """J = -1/m Σ_i Σ_k y_ik log softmax(z_i)_k; dJ/dz = (ŷ - y)/m. Labels: int (m,) or one-hot (m, n)."""
    if labels.dtype.kind in "iu":
        labels = call("one_hot", labels, num_classes=logits.shape[1], dtype=logits.dtype)
    else:
        labels = labels.astype(logits.dtype)
    return -(labels * log_softmax(logits, axis=-1)).sum() / float(logits.shape[0])


def _softmax_ce_samples(rng, dtype):
    logits = (rng.standard_normal((6, 5)) * 2).astype(dtype)
    onehot = np.eye(5, dtype=dtype)[rng.integers(0, 5, 6)]
    soft = rng.dirichlet(np.ones(5), size=6).astype(dtype)
    return [Sample((logits, rng.integers(0, 5, 6))), Sample((logits, onehot)), Sample((logits, soft))]


def mse(pred, target):
    """J = mean((ŷ - y)²) over every element."""
    diff = pred - target.astype(pred.dtype)
    return (diff * diff).mean()


def _mse_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(5, 3), r(5, 3))), Sample((r(7,), r(7,)))]


def _scalar(like, value):
    from ..tensor import Tensor

    return Tensor(value, dtype=like.dtype, backend=like.backend)


COMPOSITE_OPS = [
    Op("neg", COMPOSITE, lambda rng, dt: [Sample((rng.standard_normal((3, 4)).astype(dt),))], default=neg,
       doc="-x"),
    Op("mean", COMPOSITE, _reduce_samples, _check_reduce("mean"), default=mean, doc="mean over axes"),
    Op("sigmoid", COMPOSITE, _activation_samples, _float_arg("sigmoid"), default=sigmoid, doc=sigmoid.__doc__),
    Op("relu", COMPOSITE, _activation_samples, _float_arg("relu"), default=relu, doc=relu.__doc__),
    Op("leaky_relu", COMPOSITE, _activation_samples, _float_arg("leaky_relu"), default=leaky_relu,
       doc=leaky_relu.__doc__),
    Op("softmax", COMPOSITE, _softmax_samples, _check_axis_op("softmax"), default=softmax, doc=softmax.__doc__),
    Op("log_softmax", COMPOSITE, _softmax_samples, _check_axis_op("log_softmax"), default=log_softmax,
       doc=log_softmax.__doc__),
    Op("dense", COMPOSITE, _dense_samples, _check_dense, default=dense, doc=dense.__doc__),
    Op("binary_cross_entropy", COMPOSITE, _bce_samples, _check_same_shape("binary_cross_entropy", "probs", "y"),
       default=binary_cross_entropy, doc=binary_cross_entropy.__doc__),
    Op("softmax_cross_entropy", COMPOSITE, _softmax_ce_samples, _check_softmax_ce, default=softmax_cross_entropy,
       doc=softmax_cross_entropy.__doc__),
    Op("mse", COMPOSITE, _mse_samples, _check_same_shape("mse", "pred", "target"), default=mse, doc=mse.__doc__),
]
