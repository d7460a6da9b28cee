"""Joining tensors (§4.10): `concatenate`, which stacks the Inception module's branches on channels.

The default is written with primitives only: with `axis` moved last and every other axis
flattened into rows, input i (rows, c_i) is multiplied by its 0/1 selection matrix E_i (c_i × C),
E_i[j, o_i + j] = 1 with o_i = c_0 + … + c_(i−1), and the products are added:

    out = Σ_i X_i·E_i,        dX_i = G·E_iᵀ   (matmul's own backward)

Every output element is one input element times 1 plus zeros, so the result is exact for finite
inputs (an inf or NaN in one input turns into NaN in the whole row, as 0·inf = NaN). The E_i take
c_i·C elements each: fine for channels, costly along a long axis; backends replace the default with
a copy (the CPU backend uses np.concatenate and slices the gradient).
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError, ShapeError
from .registry import COMPOSITE, Op, Sample, call


def _axis(op: str, ndim: int, axis) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise OpError(f"{op}: 'axis' must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise OpError(f"{op}: axis {axis} is out of range for tensors of {ndim} dimensions")
    return int(axis) % ndim


def concat_axis(tensors, axis) -> int:
    """The non-negative axis `concatenate` joins along (checked against the first tensor's ndim)."""
    return _axis("concatenate", tensors[0].ndim, axis)


def concatenate(*tensors, axis=-1):
    """out = [X_0, X_1, …] joined along `axis`: out.shape[axis] = Σ_i X_i.shape[axis], every other size
    equal; the gradient of X_i is the slice of G at X_i's place. (Default: Σ_i X_i·E_i, exact.)"""
    from ..tensor import Tensor

    first = tensors[0]
    ax = concat_axis(tensors, axis)
    sizes = [t.shape[ax] for t in tensors]
    total = sum(sizes)
    perm = tuple(a for a in range(first.ndim) if a != ax) + (ax,)
    kept = tuple(first.shape[a] for a in perm[:-1])
    rows = int(np.prod(kept, dtype=np.int64))
    out, offset = None, 0
    for t, c in zip(tensors, sizes):
        select = np.zeros((c, total), dtype=first.dtype)
        select[np.arange(c), offset + np.arange(c)] = 1
        moved = call("reshape", call("transpose", t, axes=perm), shape=(rows, c))
        part = call("matmul", moved, Tensor(select, dtype=first.dtype, backend=first.backend))
        out = part if out is None else out + part
        offset += c
    out = call("reshape", out, shape=kept + (total,))
    return call("transpose", out, axes=tuple(int(i) for i in np.argsort(perm)))


def _check_concatenate(*tensors, axis=-1):
    if not tensors:
        raise OpError("concatenate: needs at least one tensor, got none")
    first = tensors[0]
    if first.ndim == 0:
        raise OpError(f"concatenate: tensors must have at least 1 dimension, argument 0 is a scalar "
                      f"(shape {first.shape})")
    ax = concat_axis(tensors, axis)
    for i, t in enumerate(tensors[1:], start=1):
        if t.ndim != first.ndim:
            raise ShapeError(f"concatenate: argument {i} must have {first.ndim} dimensions like argument 0 "
                             f"(shape {first.shape}), got shape {t.shape}")
        off_axis = [a for a in range(first.ndim) if a != ax and t.shape[a] != first.shape[a]]
        if off_axis:
            a = off_axis[0]
            raise ShapeError(f"concatenate: argument {i} must match argument 0 on every axis but axis {ax}: "
                             f"expected size {first.shape[a]} on axis {a} (shape {first.shape}), got {t.shape[a]} "
                             f"(shape {t.shape})")
        if t.dtype != first.dtype:
            raise OpError(f"concatenate: argument {i} must have argument 0's dtype {first.dtype}, got {t.dtype}")


def _concatenate_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(2, 3, 3, 2), r(2, 3, 3, 4), r(2, 3, 3, 1)), {"axis": -1}),   # Inception: channels
            Sample((r(2, 3), r(4, 3)), {"axis": 0}),
            Sample((r(2, 3, 4), r(2, 1, 4)), {"axis": 1}),
            Sample((r(5,), r(2,)), {"axis": 0}),
            Sample((r(3, 2),), {"axis": 1})]


JOINING_OPS = [
    Op("concatenate", COMPOSITE, _concatenate_samples, _check_concatenate, default=concatenate,
       doc=concatenate.__doc__),
]
