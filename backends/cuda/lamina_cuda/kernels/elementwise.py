"""Elementwise kernels: one-input maps y = f(x; p0, p1) and broadcasting two-input maps
y = f(a, b; p0, p1), each a grid-stride loop over the flat output.

A map is made once per scalar function by `unary(fn)` / `binary(fn)`; numba compiles each
for the dtypes it meets. Two-input maps pick the cheapest indexing that fits the shapes:
equal shapes, one operand a repeated suffix of the other (a bias row), or general strides.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .. import device
from .geometry import broadcast_strides, suffix_repeats


# ---- scalar functions (device functions: (x, p0, p1) or (a, b, p0, p1)) ------------------------------
@cuda.jit(device=True)
def _identity(x, p0, p1):
    return x


@cuda.jit(device=True)
def _exp(x, p0, p1):
    return math.exp(x)


@cuda.jit(device=True)
def _log(x, p0, p1):
    return math.log(x)


@cuda.jit(device=True)
def _tanh(x, p0, p1):
    return math.tanh(x)


@cuda.jit(device=True)
def _power(x, p0, p1):
    return x ** p0


@cuda.jit(device=True)
def _clip(x, low, high):
    return min(max(x, low), high)


@cuda.jit(device=True)
def _neg(x, p0, p1):
    return -x


@cuda.jit(device=True)
def _relu(x, p0, p1):
    return x if x > 0 else x * 0


@cuda.jit(device=True)
def _leaky_relu(x, alpha, p1):
    return x if x > 0 else x * alpha


@cuda.jit(device=True)
def _sigmoid(x, p0, p1):
    return 1.0 / (1.0 + math.exp(-x))


@cuda.jit(device=True)
def _add(a, b, p0, p1):
    return a + b


@cuda.jit(device=True)
def _sub(a, b, p0, p1):
    return a - b


@cuda.jit(device=True)
def _mul(a, b, p0, p1):
    return a * b


@cuda.jit(device=True)
def _div(a, b, p0, p1):
    return a / b


@cuda.jit(device=True)
def _greater(a, b, p0, p1):
    return 1 if a > b else 0


@cuda.jit(device=True)
def _scaled_product(a, b, scale, p1):
    return scale * a * b


@cuda.jit(device=True)
def _tanh_grad(g, y, p0, p1):
    return g * (1 - y * y)


@cuda.jit(device=True)
def _sigmoid_grad(g, y, p0, p1):
    return g * y * (1 - y)


@cuda.jit(device=True)
def _power_grad(g, x, exponent, p1):
    return g * exponent * x ** (exponent - 1)


@cuda.jit(device=True)
def _inside_grad(g, x, low, high):
    return g if low <= x <= high else g * 0


@cuda.jit(device=True)
def _relu_grad(g, x, p0, p1):
    return g if x > 0 else g * 0


@cuda.jit(device=True)
def _leaky_relu_grad(g, x, alpha, p1):
    return g if x > 0 else g * alpha


# ---- map factories ---------------------------------------------------------------------------------
def unary(fn):
    """A launcher `run(x, out_dtype=None, p0=0.0, p1=0.0) -> y` for y_i = fn(x_i, p0, p1)."""

    @cuda.jit
    def kernel(x, out, p0, p1):
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[i] = fn(x[i], p0, p1)

    def run(x, out_dtype=None, p0=0.0, p1=0.0, out=None):
        if out is None:
            out = device.empty(x.shape, out_dtype or x.dtype)
        if out.size:
            blocks, threads = device.launch_1d(out.size)
            kernel[blocks, threads](_flat(x), _flat(out), p0, p1)
        return out

    return run


def binary(fn):
    """A launcher `run(a, b, out_dtype=None, p0=0.0, p1=0.0) -> y` for y = fn(a, b, p0, p1) with NumPy
    broadcasting."""

    @cuda.jit
    def same_shape(a, b, out, p0, p1):
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[i] = fn(a[i], b[i], p0, p1)

    @cuda.jit
    def b_repeats(a, b, out, p0, p1):          # b's elements repeat every b.size outputs
        n = b.size
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[i] = fn(a[i], b[i % n], p0, p1)

    @cuda.jit
    def a_repeats(a, b, out, p0, p1):
        n = a.size
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[i] = fn(a[i % n], b[i], p0, p1)

    @cuda.jit
    def strided(a, b, out, p0, p1, shape, a_strides, b_strides):
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            rest, ia, ib = i, 0, 0
            for d in range(shape.size - 1, -1, -1):
                k = rest % shape[d]
                rest //= shape[d]
                ia += k * a_strides[d]
                ib += k * b_strides[d]
            out[i] = fn(a[ia], b[ib], p0, p1)

    def run(a, b, out_dtype=None, p0=0.0, p1=0.0, out=None):
        shape = tuple(np.broadcast_shapes(a.shape, b.shape))
        if out is None:
            out = device.empty(shape, out_dtype or np.result_type(a.dtype, b.dtype))
        if not out.size:
            return out
        blocks, threads = device.launch_1d(out.size)
        fa, fb, fo = _flat(a), _flat(b), _flat(out)
        if a.shape == b.shape:
            same_shape[blocks, threads](fa, fb, fo, p0, p1)
        elif a.shape == shape and suffix_repeats(b.shape, shape):
            b_repeats[blocks, threads](fa, fb, fo, p0, p1)
        elif b.shape == shape and suffix_repeats(a.shape, shape):
            a_repeats[blocks, threads](fa, fb, fo, p0, p1)
        else:
            dims, a_strides, b_strides = broadcast_strides(shape, a.shape, b.shape)
            strided[blocks, threads](fa, fb, fo, p0, p1, dims, a_strides, b_strides)
        return out

    return run


def _flat(array):
    """The contiguous device array as one dimension (0-d arrays too)."""
    return array.reshape(array.size) if array.ndim != 1 else array


identity = unary(_identity)
exp = unary(_exp)
log = unary(_log)
tanh = unary(_tanh)
power = unary(_power)
clip = unary(_clip)
neg = unary(_neg)
relu = unary(_relu)
leaky_relu = unary(_leaky_relu)
sigmoid = unary(_sigmoid)

add = binary(_add)
sub = binary(_sub)
mul = binary(_mul)
div = binary(_div)
greater = binary(_greater)
scaled_product = binary(_scaled_product)
tanh_grad = binary(_tanh_grad)
sigmoid_grad = binary(_sigmoid_grad)
power_grad = binary(_power_grad)
inside_grad = binary(_inside_grad)
relu_grad = binary(_relu_grad)
leaky_relu_grad = binary(_leaky_relu_grad)


@cuda.jit
def _fill(out, value):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


def fill(out, value):
    """Set every element of the device array `out` to `value`, in place."""
    if out.size:
        blocks, threads = device.launch_1d(out.size)
        _fill[blocks, threads](_flat(out), out.dtype.type(value))
    return out
