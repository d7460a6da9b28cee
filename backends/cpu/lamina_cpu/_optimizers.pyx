# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Optimizer updates, in place on flat C-contiguous parameter and state arrays, in one pass."""
from cython.parallel cimport prange

from ._vecmath cimport PARALLEL_MIN, real, sqrt_


def sgd_update(real[::1] param, const real[::1] grad, double lr):
    """θ ← θ - α·dθ."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real alpha = <real>lr
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        param[i] = param[i] - grad[i] * alpha


def adam_update(real[::1] param, const real[::1] grad, real[::1] v, real[::1] s, double lr, double beta1,
                double beta2, double epsilon, double step):
    """v ← β1·v + (1-β1)·dθ; s ← β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√ŝ + ε),
    v̂ = v/(1-β1^t), ŝ = s/(1-β2^t)."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real b1 = <real>beta1, b2 = <real>beta2, eps = <real>epsilon
    cdef real keep1 = <real>(1.0 - beta1), keep2 = <real>(1.0 - beta2)
    cdef real unbias1 = <real>(1.0 / (1.0 - beta1 ** step)), unbias2 = <real>(1.0 / (1.0 - beta2 ** step))
    cdef real alpha = <real>lr
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        v[i] = b1 * v[i] + keep1 * grad[i]
        s[i] = b2 * s[i] + keep2 * grad[i] * grad[i]
        param[i] = param[i] - alpha * (v[i] * unbias1) / (sqrt_(s[i] * unbias2) + eps)
