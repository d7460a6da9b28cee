"""Host-side index arithmetic for the kernels: element strides of C-ordered shapes, broadcasting,
permutations and basic indexing as (offset, shape, strides) views. Small integer vectors go to the
device once and are cached by value.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda


def c_strides(shape) -> tuple[int, ...]:
    """Element strides of a C-ordered array of `shape`."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


@lru_cache(maxsize=4096)
def device_vector(values: tuple[int, ...]):
    """`values` as an int64 device array (a length-1 zero vector for an empty tuple)."""
    return cuda.to_device(np.array(values if values else (0,), dtype=np.int64))


def suffix_repeats(small: tuple, big: tuple) -> bool:
    """Whether an array of shape `small`, broadcast to `big`, is its flat data repeated: its shape
    without leading ones is a suffix of `big`."""
    trimmed = tuple(small)
    while trimmed and trimmed[0] == 1:
        trimmed = trimmed[1:]
    return not trimmed or tuple(big[len(big) - len(trimmed):]) == trimmed


def broadcast_vector(shape: tuple, operand: tuple) -> tuple[int, ...]:
    padded = (1,) * (len(shape) - len(operand)) + tuple(operand)
    return tuple(0 if n == 1 and m != 1 else s for n, m, s in zip(padded, shape, c_strides(padded)))


def broadcast_strides(shape: tuple, *operands: tuple):
    """Device vectors (shape, strides of each operand broadcast to `shape`, 0 along broadcast axes)."""
    return (device_vector(tuple(shape)),) + tuple(device_vector(broadcast_vector(shape, op)) for op in operands)


def permuted_strides(shape: tuple, axes: tuple) -> tuple[int, ...]:
    """Strides (in the input) of each output axis of `transpose(x, axes)` for x of `shape`."""
    strides = c_strides(shape)
    return tuple(strides[a] for a in axes)


def basic_index_view(shape: tuple, index) -> tuple[int, tuple, tuple] | None:
    """(offset, shape, strides) in elements of `x[index]` for x C-ordered of `shape` when `index` is basic
    (ints, slices, Ellipsis, None), else None. NumPy computes the view of a fake one-byte-per-element
    array without touching memory, so every rule of basic indexing is NumPy's own."""
    parts = index if isinstance(index, tuple) else (index,)
    if not all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts):
        return None
    base = np.empty(1, dtype=np.uint8)
    fake = np.lib.stride_tricks.as_strided(base, shape=shape, strides=c_strides(shape), writeable=False)
    view = fake[parts if any(p is Ellipsis for p in parts) else parts + (Ellipsis,)]   # a view, never a scalar
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0] if view.size else 0
    return offset, tuple(view.shape), tuple(view.strides)
