"""Reductions (sum, max) over any axes: the reduced axes are brought last (a transpose only when
they are not already last or first), then each row is reduced by one block with a shared-memory
tree, or, when the reduced axes lead, each column by one thread."""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from .. import device
from .elementwise import _flat, fill
from .layout import transpose

#: threads per block of a row reduction (a power of two)
ROW_THREADS = 256
SIMULATOR_ROW_THREADS = 8


@cuda.jit(device=True)
def _sum2(a, b):
    return a + b


@cuda.jit(device=True)
def _max2(a, b):
    return a if a >= b else b


_COMBINE = {"sum": _sum2, "max": _max2}


@lru_cache(maxsize=None)
def _row_kernel(op: str, dtype: np.dtype, threads: int):
    combine, element_type, is_sum = _COMBINE[op], numba.from_dtype(dtype), op == "sum"

    @cuda.jit
    def kernel(x, out, cols, scale):
        partial = cuda.shared.array(threads, element_type)
        tid = cuda.threadIdx.x
        for row in range(cuda.blockIdx.x, out.size, cuda.gridDim.x):
            base = row * cols
            acc = x[base] * 0 if is_sum else x[base]
            for j in range(tid, cols, threads):
                acc = combine(acc, x[base + j])
            partial[tid] = acc
            cuda.syncthreads()
            half = threads // 2
            while half > 0:
                if tid < half:
                    partial[tid] = combine(partial[tid], partial[tid + half])
                cuda.syncthreads()
                half //= 2
            if tid == 0:
                out[row] = partial[0] * scale
            cuda.syncthreads()

    return kernel


@lru_cache(maxsize=None)
def _column_kernel(op: str):
    combine = _COMBINE[op]

    @cuda.jit
    def kernel(x, out, rows, cols):
        for c in range(cuda.grid(1), cols, cuda.gridsize(1)):
            acc = x[c]
            for r in range(1, rows):
                acc = combine(acc, x[r * cols + c])
            out[c] = acc

    return kernel


@cuda.jit
def _max_backward(x, y, g, dx, cols):
    """dx = g/(number of maxima) at each row's maxima, 0 elsewhere (rows of length cols)."""
    for row in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        base, count = row * cols, 0
        for j in range(cols):
            if x[base + j] == y[row]:
                count += 1
        share = g[row] / count
        for j in range(cols):
            dx[base + j] = share if x[base + j] == y[row] else share * 0


def reduce_rows(op: str, x2, rows: int, cols: int, scale: float = 1.0):
    """(rows,) = scale · op over each row of the flat C-ordered (rows, cols) data `x2` (a mean in one pass)."""
    out = device.empty((rows,), x2.dtype)
    if rows:
        threads = SIMULATOR_ROW_THREADS if device.simulator() else ROW_THREADS
        blocks = min(rows, 65535)
        _row_kernel(op, np.dtype(x2.dtype), threads)[blocks, threads](_flat(x2), out, cols, scale)
    return out


def reduce(op: str, x, axes: tuple):
    """op over `axes` (sorted, distinct, non-empty) of x, shaped as x without them."""
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    out_shape = tuple(x.shape[a] for a in kept)
    rows, cols = int(np.prod(out_shape, dtype=np.int64)), int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if cols == 0 and op == "sum":
        return fill(device.empty(out_shape, x.dtype), 0)
    if op == "sum" and axes == tuple(range(len(axes))) and rows > 1:
        out = device.empty((rows,), x.dtype)
        blocks, threads = device.launch_1d(rows)
        _column_kernel(op)[blocks, threads](_flat(x), out, cols, rows)
        return out.reshape(out_shape)
    if axes != tuple(range(x.ndim - len(axes), x.ndim)):
        x = transpose(x, kept + axes)
    return reduce_rows(op, x, rows, cols).reshape(out_shape)


def max_backward(x, axes: tuple, y, g):
    """The gradient of max over `axes`: g shared equally among each reduction's maxima."""
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    order = kept + axes
    rows = int(np.prod([x.shape[a] for a in kept], dtype=np.int64))
    cols = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    moved = order != tuple(range(x.ndim))
    xt = transpose(x, order) if moved else x
    dx = device.empty(xt.shape, x.dtype)
    if rows:
        blocks, threads = device.launch_1d(rows)
        _max_backward[blocks, threads](_flat(xt), _flat(y), _flat(g), _flat(dx), cols)
    return transpose(dx, tuple(np.argsort(order))) if moved else dx
