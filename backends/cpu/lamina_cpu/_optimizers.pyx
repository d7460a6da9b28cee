# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Optimizer updates, in place on flat C-contiguous parameter and state arrays, in one pass.

ε's two placements (RMSprop, Adam) are one formula, √(s + ε_in) + ε_out with the other ε zero,
so each loop stays branch-free; adding a zero leaves every value unchanged."""
from cython.parallel cimport prange

from ._vecmath cimport PARALLEL_MIN, real, sqrt_


def sgd_update(real[::1] param, const real[::1] grad, double lr):
    """θ ← θ - α·dθ."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real alpha = <real>lr
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        param[i] = param[i] - grad[i] * alpha


def momentum_update(real[::1] param, const real[::1] grad, real[::1] v, double lr, double beta,
                    double grad_scale):
    """v ← β·v + c·dθ; θ ← θ - α·v (c = 1-β: the seed's average; c = 1: the simplified form)."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real alpha = <real>lr, b = <real>beta, c = <real>grad_scale
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        v[i] = b * v[i] + c * grad[i]
        param[i] = param[i] - alpha * v[i]


def rmsprop_update(real[::1] param, const real[::1] grad, real[::1] s, double lr, double beta,
                   double epsilon_inside, double epsilon_outside):
    """s ← β·s + (1-β)·dθ²; θ ← θ - α·dθ/(√(s + ε_in) + ε_out)."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real alpha = <real>lr, b = <real>beta, keep = <real>(1.0 - beta)
    cdef real eps_in = <real>epsilon_inside, eps_out = <real>epsilon_outside
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        s[i] = b * s[i] + keep * grad[i] * grad[i]
        param[i] = param[i] - alpha * grad[i] / (sqrt_(s[i] + eps_in) + eps_out)


def adam_update(real[::1] param, const real[::1] grad, real[::1] v, real[::1] s, double lr, double beta1,
                double beta2, double epsilon_inside, double epsilon_outside, double step):
    """v ← β1·v + (1-β1)·dθ; s ← β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√(ŝ + ε_in) + ε_out),
    v̂ = v/(1-β1^t), ŝ = s/(1-β2^t)."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real b1 = <real>beta1, b2 = <real>beta2
    cdef real eps_in = <real>epsilon_inside, eps_out = <real>epsilon_outside
    cdef real keep1 = <real>(1.0 - beta1), keep2 = <real>(1.0 - beta2)
    cdef real unbias1 = <real>(1.0 / (1.0 - beta1 ** step)), unbias2 = <real>(1.0 / (1.0 - beta2 ** step))
    cdef real alpha = <real>lr
    for i in prange(n, nogil=True, schedule="static", use_threads_if=n >= PARALLEL_MIN):
        v[i] = b1 * v[i] + keep1 * grad[i]
        s[i] = b2 * s[i] + keep2 * grad[i] * grad[i]
        param[i] = param[i] - alpha * (v[i] * unbias1) / (sqrt_(s[i] * unbias2 + eps_in) + eps_out)
