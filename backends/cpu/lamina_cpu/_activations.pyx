# cython: language_level=3
"""Elementwise activations and their gradients, GIL released, OpenMP over elements."""
from cython.parallel cimport prange
from libc.math cimport tanh, exp

ctypedef fused real:
    float
    double

cdef Py_ssize_t PARALLEL_MIN = 1 << 15


def relu_forward(real[::1] x, real[::1] out):
    """out = max(0, x)."""
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        if n >= PARALLEL_MIN:
            for i in prange(n, schedule="static"):
                out[i] = x[i] if x[i] > 0 else 0
        else:
            for i in range(n):
                out[i] = x[i] if x[i] > 0 else 0
