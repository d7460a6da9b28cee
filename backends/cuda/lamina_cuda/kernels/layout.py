"""Kernels that move elements without arithmetic: strided gathers (transpose, broadcast, basic
indexing), their scatters, the scatter-add of advanced indexing, and one-hot encoding."""
from __future__ import annotations

import numpy as np
from numba import cuda

from .. import device
from .elementwise import _flat, fill
from .geometry import broadcast_vector, device_vector, permuted_strides


@cuda.jit(device=True, inline=True)
def _strided_position(i, offset, shape, strides):
    """offset + Σ_d k_d·strides[d], (k_d) the C-order multi-index of flat position i in `shape`."""
    rest, position = i, offset
    for d in range(shape.size - 1, -1, -1):
        position += (rest % shape[d]) * strides[d]
        rest //= shape[d]
    return position


@cuda.jit
def _gather_strided(x, out, offset, shape, strides):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = x[_strided_position(i, offset, shape, strides)]


@cuda.jit
def _scatter_strided(g, out, offset, shape, strides):
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        out[_strided_position(i, offset, shape, strides)] += g[i]


@cuda.jit
def _scatter_add(g, index, out):
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        cuda.atomic.add(out, index[i], g[i])


@cuda.jit
def _one_hot(labels, out, num_classes):
    for i in range(cuda.grid(1), labels.size, cuda.gridsize(1)):
        out[i * num_classes + labels[i]] = 1


def _walk(shape, strides):
    """Device vectors of the shape and strides a strided kernel walks; a 0-d view walks one element (shape (1,),
    stride 0), so the kernels never take a remainder by an empty axis."""
    return device_vector(tuple(shape) or (1,)), device_vector(tuple(strides) or (0,))


def gather(x, offset: int, shape: tuple, strides: tuple):
    """A new C-ordered array of `shape`: out[idx] = x.flat[offset + Σ idx_d·strides_d]."""
    out = device.empty(shape, x.dtype)
    if out.size:
        blocks, threads = device.launch_1d(out.size)
        _gather_strided[blocks, threads](_flat(x), _flat(out), offset, *_walk(shape, strides))
    return out


def scatter_into_zeros(g, x_shape: tuple, offset: int, strides: tuple):
    """The adjoint of `gather` for a view without repeated elements: zeros of `x_shape` with g placed."""
    out = fill(device.empty(x_shape, g.dtype), 0)
    if g.size:
        blocks, threads = device.launch_1d(g.size)
        _scatter_strided[blocks, threads](_flat(g), _flat(out), offset, *_walk(g.shape, strides))
    return out


def scatter_add(g, flat_index, x_shape: tuple):
    """Zeros of `x_shape` with out.flat[flat_index[i]] += g.flat[i] (atomic: indices may repeat)."""
    out = fill(device.empty(x_shape, g.dtype), 0)
    if g.size:
        blocks, threads = device.launch_1d(g.size)
        _scatter_add[blocks, threads](_flat(g), _flat(flat_index), _flat(out))
    return out


def one_hot(labels, num_classes: int, dtype):
    out = fill(device.empty((labels.shape[0], num_classes), dtype), 0)
    if labels.size:
        blocks, threads = device.launch_1d(labels.size)
        _one_hot[blocks, threads](_flat(labels), _flat(out), num_classes)
    return out


def transpose(x, axes: tuple):
    return gather(x, 0, tuple(x.shape[a] for a in axes), permuted_strides(x.shape, axes))


def broadcast_to(x, shape: tuple):
    return gather(x, 0, tuple(shape), broadcast_vector(tuple(shape), tuple(x.shape)))


@cuda.jit
def _gather_indexed(x, index, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = x[index[i]]


def gather_indexed(x, flat_index):
    """out.flat[i] = x.flat[flat_index.flat[i]], shaped as `flat_index`."""
    out = device.empty(flat_index.shape, x.dtype)
    if out.size:
        blocks, threads = device.launch_1d(out.size)
        _gather_indexed[blocks, threads](_flat(x), _flat(flat_index), _flat(out))
    return out


def host_flat_index(shape: tuple, index) -> np.ndarray:
    """The flat positions in a C-ordered array of `shape` that NumPy's `x[index]` picks, shaped as the result."""
    return np.asarray(np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)[index], order="C")
