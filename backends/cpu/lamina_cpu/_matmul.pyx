# cython: language_level=3
"""Matrix products on the OpenMP threads with _gemm.h's kernel, for the kernels that must not call a
multithreaded BLAS: such a call leaves BLAS's threads spinning for about 0.1 s after it returns, and on a
machine with as many cores as threads that starves the OpenMP threads of the loop that follows (measured: an
LSTM's time loop right after a 2-thread OpenBLAS product ran 3× slower). The recurrences use these for every
product, so that a training step of a recurrent network runs on one pool of threads.
"""
from cython.parallel cimport prange

import numpy as np

from ._gemm cimport PANEL_BYTES, lamina_gemm_isa, small_gemm, small_gemm_tn
from ._vecmath cimport PARALLEL_MIN, real

cdef enum:
    ROW_BLOCK = 96      # rows of a block of output (a multiple of small_gemm's 6)
    K_CHUNK = 256       # rows of B per pass of matmul_tn: 256 × a panel of B is 64 KiB, in L2


def instruction_set() -> str:
    """The instruction set _gemm.h's products run with here: "avx512", "avx2" or "baseline"."""
    return ("baseline", "avx2", "avx512")[lamina_gemm_isa()]


def pack_panels(W, Py_ssize_t gates=1):
    """W (K, gates·n) as (gates, parts, K, unit), unit = PANEL_BYTES of numbers: each part's columns of each gate
    contiguous (the last part padded with zeros), so that small_gemm reads B's rows `unit` numbers apart (W's own
    rows, gates·n numbers apart, fall on the same few cache sets when that is a multiple of 1 KiB and thrash them)."""
    W = np.asarray(W)
    K, n, unit = W.shape[0], W.shape[1] // gates, PANEL_BYTES // W.dtype.itemsize
    parts = (n + unit - 1) // unit
    padded = np.zeros((K, gates, parts * unit), W.dtype)
    padded[:, :, :n] = W.reshape(K, gates, n)
    return np.ascontiguousarray(padded.reshape(K, gates, parts, unit).transpose(1, 2, 0, 3))


def matmul_panels(const real[:, ::1] A, const real[:, :, :, ::1] panels, real[:, ::1] out):
    """out = A·W for W given as pack_panels(W): blocks of ROW_BLOCK rows of A on the threads."""
    cdef Py_ssize_t rows = A.shape[0], K = A.shape[1], n = out.shape[1], unit = panels.shape[3]
    cdef Py_ssize_t parts = (n + unit - 1) // unit, blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK, block, part, r0
    if panels.shape[0] != 1 or panels.shape[1] != parts or panels.shape[2] != K or out.shape[0] != rows:
        raise ValueError(f"matmul_panels: A {tuple(A.shape)[:2]}, panels {tuple(panels.shape)[:4]} and out "
                         f"{tuple(out.shape)[:2]} do not make a product")
    if rows == 0 or n == 0:
        return
    with nogil:
        for block in prange(blocks, schedule="static", use_threads_if=blocks > 1 and rows * n * K >= PARALLEL_MIN):
            r0 = block * ROW_BLOCK
            for part in range(parts):
                small_gemm(min(ROW_BLOCK, rows - r0), min(unit, n - part * unit), K, &A[r0, 0], K,
                           &panels[0, part, 0, 0], unit, &out[r0, part * unit], n, False)


def matmul_tn(const real[:, :] A, const real[:, :] B, real[:, :] out):
    """out = Aᵀ·B for A (K, M), B (K, N) with unit column strides (the weight gradients Xᵀ·dZ: K the many rows
    of a batch): blocks of ROW_BLOCK rows × a panel of columns of out on the threads, each summing K_CHUNK
    rows of A and B at a time."""
    cdef Py_ssize_t K = A.shape[0], M = A.shape[1], N = B.shape[1], unit = PANEL_BYTES // sizeof(real)
    cdef Py_ssize_t parts = (N + unit - 1) // unit, row_blocks = (M + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t lda, ldb, ldc, task, r0, j0, k0, chunk
    for name, view in (("A", A), ("B", B), ("out", out)):
        if view.shape[1] > 1 and view.strides[1] != sizeof(real):
            raise ValueError(f"matmul_tn: {name}'s rows must be contiguous")
    if B.shape[0] != K or out.shape[0] != M or out.shape[1] != N:
        raise ValueError(f"matmul_tn: A {tuple(A.shape)[:2]}, B {tuple(B.shape)[:2]} and out {tuple(out.shape)[:2]} "
                         "do not make Aᵀ·B")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[:, :] = 0
        return
    lda, ldb, ldc = A.strides[0] // sizeof(real), B.strides[0] // sizeof(real), out.strides[0] // sizeof(real)
    with nogil:
        for task in prange(row_blocks * parts, schedule="static",
                           use_threads_if=row_blocks * parts > 1 and K * M * N >= PARALLEL_MIN):
            r0, j0 = task // parts * ROW_BLOCK, task % parts * unit
            for chunk in range((K + K_CHUNK - 1) // K_CHUNK):
                k0 = chunk * K_CHUNK
                small_gemm_tn(min(ROW_BLOCK, M - r0), min(unit, N - j0), min(K_CHUNK, K - k0), &A[k0, r0], lda,
                              &B[k0, j0], ldb, &out[r0, j0], ldc, k0 > 0)
