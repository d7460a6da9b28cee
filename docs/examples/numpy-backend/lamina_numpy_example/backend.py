"""The `numpy_example` backend: one kernel per primitive op and nothing else.

A kernel takes NumPy arrays (and keyword attributes) and returns `(out, backprop)`, where
`backprop(grad_out)` gives one gradient per input. Gradients may keep the broadcast shape:
autograd sums them back to each input's shape. Every composite op (softmax, dense, the
losses, the optimizer updates) runs here through its default written with these primitives.
"""
from __future__ import annotations

import os

import numpy as np

import lamina

SWITCH_OFF = "LAMINA_NUMPY_EXAMPLE_OFF"


def _array(x):
    """NumPy turns 0-d results into scalars; kernels hand back arrays."""
    return np.asarray(x)


def _unreduce(g, shape, axis):
    """The gradient of a reduction over `axis`, reshaped to broadcast against `shape`."""
    axes = range(len(shape)) if axis is None else [a % len(shape) for a in np.atleast_1d(axis)]
    return np.reshape(g, [1 if i in axes else n for i, n in enumerate(shape)])


def _swap(m):
    return np.swapaxes(m, -1, -2)


class NumpyExampleBackend(lamina.Backend):
    name = "numpy_example"
    description = "pure NumPy, primitive ops only (docs/examples/numpy-backend)"

    @classmethod
    def availability(cls):
        # A real backend probes its device or driver here. This one can be switched off,
        # so that the "unavailable" path can be seen and tested.
        if os.environ.get(SWITCH_OFF):
            return False, f"switched off by the environment variable {SWITCH_OFF}"
        return True, ""

    def asarray(self, data, dtype):
        return np.array(data, dtype=dtype)

    def to_numpy(self, array):
        return np.asarray(array)

    @lamina.kernel("add")
    def add(self, a, b):
        return _array(a + b), lambda g: (g, g)

    @lamina.kernel("sub")
    def sub(self, a, b):
        return _array(a - b), lambda g: (g, -g)

    @lamina.kernel("mul")
    def mul(self, a, b):
        return _array(a * b), lambda g: (g * b, g * a)

    @lamina.kernel("div")
    def div(self, a, b):
        y = _array(a / b)
        return y, lambda g: (g / b, -g * y / b)

    @lamina.kernel("power")
    def power(self, x, *, exponent):
        return _array(x ** exponent), lambda g: (g * exponent * x ** (exponent - 1),)

    @lamina.kernel("exp")
    def exp(self, x):
        y = _array(np.exp(x))
        return y, lambda g: (g * y,)

    @lamina.kernel("log")
    def log(self, x):
        return _array(np.log(x)), lambda g: (g / x,)

    @lamina.kernel("tanh")
    def tanh(self, x):
        y = _array(np.tanh(x))
        return y, lambda g: (g * (1 - y * y),)

    @lamina.kernel("matmul")
    def matmul(self, a, b):
        return a @ b, lambda g: (g @ _swap(b), _swap(a) @ g)

    @lamina.kernel("sum")
    def sum(self, x, *, axis=None, keepdims=False):
        y = _array(np.sum(x, axis=axis, keepdims=keepdims))
        return y, lambda g: (np.broadcast_to(_unreduce(g, x.shape, axis), x.shape).copy(),)

    @lamina.kernel("max")
    def max(self, x, *, axis=None, keepdims=False):
        y = np.max(x, axis=axis, keepdims=True)

        def backprop(g):
            winners = (x == y).astype(x.dtype)   # ties share the gradient equally
            return (winners / winners.sum(axis=axis, keepdims=True) * _unreduce(g, x.shape, axis),)

        return (y if keepdims else _array(np.squeeze(y, axis=axis))), backprop

    @lamina.kernel("reshape")
    def reshape(self, x, *, shape):
        return np.reshape(x, shape), lambda g: (np.reshape(g, x.shape),)

    @lamina.kernel("transpose")
    def transpose(self, x, *, axes=None):
        undo = None if axes is None else np.argsort([a % x.ndim for a in axes])
        return np.transpose(x, axes), lambda g: (np.transpose(g, undo),)

    @lamina.kernel("getitem")
    def getitem(self, x, *, index):
        def backprop(g):
            grad = np.zeros_like(x)
            np.add.at(grad, index, g)            # repeated indices accumulate
            return (grad,)

        return _array(x[index]), backprop

    @lamina.kernel("clip")
    def clip(self, x, *, low, high):
        y = np.clip(x, low, high)
        return y, lambda g: (g * (y == x),)      # 1 where x was inside [low, high]

    @lamina.kernel("cast")
    def cast(self, x, *, dtype):
        return x.astype(dtype), lambda g: (g.astype(x.dtype),)

    @lamina.kernel("greater")
    def greater(self, a, b):
        return (a > b).astype(np.result_type(a, b)), None

    @lamina.kernel("one_hot")
    def one_hot(self, labels, *, num_classes, dtype):
        return np.eye(num_classes, dtype=dtype)[labels], None
