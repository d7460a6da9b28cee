# cython: language_level=3
"""Column sums of C-contiguous (m, n) arrays (bias gradients: db = Σ_rows dZ).

Each thread owns a block of columns and walks every row over it, so the inner loop is
contiguous and vectorized and no partial sums need merging.
"""
from cython.parallel cimport prange

from ._vecmath cimport PARALLEL_MIN, real

cdef enum:
    COLUMN_BLOCK = 256


def column_sum(const real[:, ::1] x, real[::1] out):
    """out_j = Σ_i x_ij."""
    cdef Py_ssize_t m = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t blocks = (n + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    cdef Py_ssize_t block, i, j, start, stop
    for block in prange(blocks, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        start = block * COLUMN_BLOCK
        stop = start + COLUMN_BLOCK if start + COLUMN_BLOCK < n else n
        for j in range(start, stop):
            out[j] = 0
        for i in range(m):
            for j in range(start, stop):
                out[j] += x[i, j]
