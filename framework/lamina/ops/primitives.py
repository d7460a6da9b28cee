"""The primitive ops: the small set every backend implements (see docs/writing-a-backend.md).

Everything else in Lamina is written with these, so a backend that supplies their kernels
runs every layer, loss and optimizer; composites (composites.py) only add speed.
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError, ShapeError
from .registry import PRIMITIVE, Op, Sample, check_float


def _broadcastable(op):
    def check(a, b, **_):
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ShapeError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None
    return check


def _binary_samples(positive_b=False):
    def samples(rng, dtype):
        def b(*shape):
            x = rng.standard_normal(shape).astype(dtype)
            return np.abs(x) + 0.5 if positive_b else x
        a = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
        return [Sample((a(3, 4), b(3, 4))), Sample((a(2, 3, 4), b(4))), Sample((a(3, 1), b(1, 5))),
                Sample((a(2, 3), b()))]
    return samples


def _unary_samples(low=None):
    def samples(rng, dtype):
        def x(*shape):
            v = rng.standard_normal(shape)
            return (np.abs(v) + low if low is not None else v).astype(dtype)
        return [Sample((x(4, 5),)), Sample((x(2, 3, 4),)), Sample((x(),))]
    return samples


def _check_power(x, *, exponent):
    if not isinstance(exponent, (int, float)):
        raise OpError(f"power: 'exponent' must be a number, got {type(exponent).__name__}")


def _power_samples(rng, dtype):
    x = np.abs(rng.standard_normal((3, 4))).astype(dtype) + 0.5
    return [Sample((x,), {"exponent": 2.0}), Sample((x,), {"exponent": 0.5}),
            Sample((x,), {"exponent": -1.5})]


def _check_matmul(a, b):
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"matmul: both operands need at least 2 dimensions, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"matmul: batch dimensions of {a.shape} and {b.shape} cannot be broadcast") from None


def _matmul_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(3, 4), r(4, 5))), Sample((r(2, 3, 4), r(4, 2))), Sample((r(2, 1, 3, 4), r(3, 4, 2)))]


def _normalize_axis(op, x, axis):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -x.ndim <= a < max(x.ndim, 1):
            raise OpError(f"{op}: axis {a} is out of range for a tensor of shape {x.shape}")
        out.append(int(a) % max(x.ndim, 1))
    return tuple(out)


def _check_reduce(op):
    def check(x, *, axis=None, keepdims=False):
        _normalize_axis(op, x, axis)
    return check


def _reduce_samples(rng, dtype):
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    return [Sample((x,), {"axis": None}), Sample((x,), {"axis": 1}), Sample((x,), {"axis": (0, 2), "keepdims": True}),
            Sample((x,), {"axis": -1, "keepdims": False})]


def _check_reshape(x, *, shape):
    size = int(np.prod(x.shape, dtype=np.int64))
    known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
    inferred = shape.count(-1)
    fits = known == size if inferred == 0 else (inferred == 1 and known != 0 and size % known == 0)
    if not fits or any(s < -1 for s in shape):
        raise ShapeError(f"reshape: cannot reshape a tensor of shape {x.shape} ({size} elements) to {shape}")


def _reshape_samples(rng, dtype):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    return [Sample((x,), {"shape": (6, 4)}), Sample((x,), {"shape": (-1,)}), Sample((x,), {"shape": (4, -1, 2)})]


def _check_transpose(x, *, axes=None):
    if axes is not None and sorted(int(a) % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise OpError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")


def _transpose_samples(rng, dtype):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    return [Sample((x,), {"axes": None}), Sample((x,), {"axes": (1, 0, 2)}), Sample((x,), {"axes": (2, 0, 1)}),
            Sample((x,), {"axes": (-1, 0, 1)})]


def _check_getitem(x, *, index):
    try:
        np.empty(x.shape, dtype=np.bool_)[index]
    except (IndexError, TypeError, ValueError) as err:
        raise OpError(f"getitem: index {index!r} is invalid for a tensor of shape {x.shape}: {err}") from None


def _getitem_samples(rng, dtype):
    x = rng.standard_normal((5, 4)).astype(dtype)
    return [Sample((x,), {"index": (slice(1, 4), slice(None, None, 2))}), Sample((x,), {"index": 2}),
            Sample((x,), {"index": np.array([0, 3, 3, 1])}),
            Sample((x,), {"index": (np.array([0, 1, 4]), np.array([3, 3, 0]))})]


def _check_clip(x, *, low, high):
    if low is not None and high is not None and low > high:
        raise OpError(f"clip: 'low' ({low}) must not exceed 'high' ({high})")


def _clip_samples(rng, dtype):
    x = rng.uniform(-2, 2, (4, 5)).astype(dtype)
    x[np.abs(np.abs(x) - 1.0) < 0.05] = 0.3   # keep clear of the kinks
    return [Sample((x,), {"low": -1.0, "high": 1.0}), Sample((x,), {"low": 0.0, "high": None})]


def _check_one_hot(labels, *, num_classes, dtype):
    if labels.dtype.kind not in "iu":
        raise OpError(f"one_hot: 'labels' must be an integer tensor, got dtype {labels.dtype}")


def _one_hot_samples(rng, dtype):
    return [Sample((rng.integers(0, 5, size=7),), {"num_classes": 5, "dtype": np.dtype(dtype)})]


def _cast_samples(rng, dtype):
    x = rng.standard_normal((3, 4)).astype(dtype)
    return [Sample((x,), {"dtype": np.dtype(np.float32)}), Sample((x,), {"dtype": np.dtype(np.float64)})]


def _greater_samples(rng, dtype):
    return [Sample((rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4,)).astype(dtype)))]


PRIMITIVE_OPS = [
    Op("add", PRIMITIVE, _binary_samples(), _broadcastable("add"), doc="a + b (broadcasting)"),
    Op("sub", PRIMITIVE, _binary_samples(), _broadcastable("sub"), doc="a - b (broadcasting)"),
    Op("mul", PRIMITIVE, _binary_samples(), _broadcastable("mul"), doc="a * b elementwise (broadcasting)"),
    Op("div", PRIMITIVE, _binary_samples(positive_b=True), _broadcastable("div"), doc="a / b (broadcasting)"),
    Op("power", PRIMITIVE, _power_samples, _check_power, doc="x ** exponent, exponent a number"),
    Op("exp", PRIMITIVE, _unary_samples(), lambda x: check_float("exp", "x", x), doc="e^x"),
    Op("log", PRIMITIVE, _unary_samples(low=0.1), lambda x: check_float("log", "x", x), doc="natural log"),
    Op("tanh", PRIMITIVE, _unary_samples(), lambda x: check_float("tanh", "x", x),
       doc="tanh(z) = 2/(1+e^(-2z)) - 1, tanh' = 1 - tanh^2"),
    Op("matmul", PRIMITIVE, _matmul_samples, _check_matmul, doc="batched matrix product a @ b"),
    Op("sum", PRIMITIVE, _reduce_samples, _check_reduce("sum"), doc="sum over axes"),
    Op("max", PRIMITIVE, _reduce_samples, _check_reduce("max"),
       doc="max over axes; the gradient is shared equally among tied maxima"),
    Op("reshape", PRIMITIVE, _reshape_samples, _check_reshape, doc="same elements, new shape"),
    Op("transpose", PRIMITIVE, _transpose_samples, _check_transpose, doc="permute axes (reverse if None)"),
    Op("getitem", PRIMITIVE, _getitem_samples, _check_getitem,
       doc="NumPy basic/advanced indexing; the gradient scatter-adds"),
    Op("clip", PRIMITIVE, _clip_samples, _check_clip, doc="min(max(x, low), high); gradient 1 inside"),
    Op("cast", PRIMITIVE, _cast_samples, doc="convert to another dtype"),
    Op("greater", PRIMITIVE, _greater_samples, _broadcastable("greater"), differentiable=False,
       doc="1 where a > b else 0, in the inputs' dtype"),
    Op("one_hot", PRIMITIVE, _one_hot_samples, _check_one_hot, differentiable=False,
       doc="labels (m,) -> (m, num_classes) with a 1 at each label"),
]
