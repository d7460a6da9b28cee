"""The reference backend: every primitive op written plainly in NumPy.

It is the float64 oracle of the conformance suite (`lamina.testing`) and the base the CPU
core extends, overriding only its hot paths with compiled kernels (as thinc's `Ops`).
Composite ops run through their default implementations here.
"""
from __future__ import annotations

import numpy as np

from .backend import Backend, kernel


def _swap_last(a):
    return np.swapaxes(a, -1, -2)


def _keepdims_shape(shape, axis):
    if axis is None:
        return (1,) * len(shape)
    axes = {a % len(shape) for a in ((axis,) if isinstance(axis, (int, np.integer)) else axis)}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _basic_index(index) -> bool:
    """Whether `index` is NumPy basic indexing (integers, slices, None, ...), which never reads an element twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) and not isinstance(p, bool)
               for p in parts)


class ReferenceBackend(Backend):
    name = "reference"
    description = "plain NumPy kernels for every primitive op (the float64 oracle)"

    def asarray(self, data, dtype):
        return np.array(data, dtype=dtype, copy=True)

    def to_numpy(self, array):
        return array

    @kernel("add")
    def add(self, a, b):
        return a + b, lambda g: (g, g)

    @kernel("sub")
    def sub(self, a, b):
        return a - b, lambda g: (g, -g)

    @kernel("mul")
    def mul(self, a, b):
        return a * b, lambda g: (g * b, g * a)

    @kernel("div")
    def div(self, a, b):
        return a / b, lambda g: (g / b, -g * a / (b * b))

    @kernel("power")
    def power(self, x, *, exponent):
        return x ** exponent, lambda g: (g * exponent * x ** (exponent - 1),)

    @kernel("exp")
    def exp(self, x):
        y = np.exp(x)
        return y, lambda g: (g * y,)

    @kernel("log")
    def log(self, x):
        return np.log(x), lambda g: (g / x,)

    @kernel("tanh")
    def tanh(self, x):
        y = np.tanh(x)
        return y, lambda g: (g * (1 - y * y),)

    @kernel("matmul")
    def matmul(self, a, b):
        return a @ b, lambda g: (g @ _swap_last(b), _swap_last(a) @ g)

    @kernel("sum")
    def sum(self, x, *, axis=None, keepdims=False):
        y = np.sum(x, axis=axis, keepdims=keepdims)
        if np.ndim(y) == 0:
            y = np.asarray(y, dtype=x.dtype)

        def backprop(g):
            return (np.broadcast_to(np.reshape(g, _keepdims_shape(x.shape, axis)), x.shape).copy(),)

        return y, backprop

    @kernel("max")
    def max(self, x, *, axis=None, keepdims=False):
        y_keep = np.max(x, axis=axis, keepdims=True)
        y = y_keep if keepdims else np.asarray(np.max(x, axis=axis), dtype=x.dtype)

        def backprop(g):
            mask = (x == y_keep).astype(x.dtype)
            mask /= mask.sum(axis=axis, keepdims=True)
            return (mask * np.reshape(g, y_keep.shape),)

        return y, backprop

    @kernel("reshape")
    def reshape(self, x, *, shape):
        return np.reshape(x, shape), lambda g: (np.reshape(g, x.shape),)

    @kernel("transpose")
    def transpose(self, x, *, axes=None):
        inverse = None if axes is None else tuple(np.argsort([a % x.ndim for a in axes]))
        return np.transpose(x, axes), lambda g: (np.transpose(g, inverse),)

    @kernel("getitem")
    def getitem(self, x, *, index):
        def backprop(g):
            """dx = 0 except at the elements read, which get g (summed where an index array repeats one)."""
            grad = np.zeros_like(x)
            if _basic_index(index):     # slices and integers read each element once: a plain assignment
                grad[index] = g
            else:
                np.add.at(grad, index, g)
            return (grad,)

        return np.asarray(x[index]), backprop

    @kernel("clip")
    def clip(self, x, *, low, high):
        inside = np.ones(x.shape, dtype=bool)
        if low is not None:
            inside &= x >= low
        if high is not None:
            inside &= x <= high
        return np.clip(x, low, high), lambda g: (g * inside,)

    @kernel("cast")
    def cast(self, x, *, dtype):
        return x.astype(dtype), lambda g: (g.astype(x.dtype),)

    @kernel("greater")
    def greater(self, a, b):
        return (a > b).astype(np.result_type(a, b)), None

    @kernel("one_hot")
    def one_hot(self, labels, *, num_classes, dtype):
        out = np.zeros((labels.shape[0], num_classes), dtype=dtype)
        out[np.arange(labels.shape[0]), labels] = 1
        return out, None
