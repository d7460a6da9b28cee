# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Elementwise activations and their gradients on flat C-contiguous arrays.

Each `*_forward(x, out, ...)` writes f(x) into `out`; each `*_backward(saved, g, dx, ...)`
writes g·f'(x) into `dx`, where `saved` is x or f(x), whichever the derivative needs.
The GIL is released; above PARALLEL_MIN elements the loop runs on OpenMP threads.
"""
from cython.parallel cimport prange

from ._vecmath cimport PARALLEL_MIN, exp_, real, tanh_


def relu_forward(const real[::1] x, real[::1] out):
    """out = max(0, x) (NaN stays NaN)."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        out[i] = 0 if x[i] <= 0 else x[i]


def relu_backward(const real[::1] x, const real[::1] g, real[::1] dx):
    """dx = g·[x > 0]."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        dx[i] = g[i] * (1 if x[i] > 0 else 0)


def leaky_relu_forward(const real[::1] x, real[::1] out, double alpha):
    """out = x if x > 0 else α·x."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef real a = <real>alpha
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        out[i] = x[i] if x[i] > 0 else a * x[i]


def leaky_relu_backward(const real[::1] x, const real[::1] g, real[::1] dx, double alpha):
    """dx = g·(1 if x > 0 else α)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef real a = <real>alpha
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        dx[i] = g[i] * (1 if x[i] > 0 else a)


def sigmoid_forward(const real[::1] x, real[::1] out):
    """out = σ(x) = 1/(1 + e^(-x))."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        out[i] = 1 / (1 + exp_(-x[i]))


def sigmoid_backward(const real[::1] y, const real[::1] g, real[::1] dx):
    """dx = g·y·(1 - y) with y = σ(x)."""
    cdef Py_ssize_t i, n = y.shape[0]
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        dx[i] = g[i] * y[i] * (1 - y[i])


def tanh_forward(const real[::1] x, real[::1] out):
    """out = tanh(x)."""
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        out[i] = tanh_(x[i])


def tanh_backward(const real[::1] y, const real[::1] g, real[::1] dx):
    """dx = g·(1 - y²) with y = tanh(x)."""
    cdef Py_ssize_t i, n = y.shape[0]
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        dx[i] = g[i] * (1 - y[i] * y[i])
