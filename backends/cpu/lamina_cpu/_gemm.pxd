"""The small single-threaded matrix product of _gemm.h, for `real` (see that file)."""
from ._vecmath cimport real

cdef enum:
    # the column panels to cut products into, for threads or for packing: the width of small_gemm's widest
    # register block in bytes (AVX-512's four 64-byte vectors; a whole number of AVX2's and SSE2's blocks)
    PANEL_BYTES = 256

cdef extern from "_gemm.h" nogil:
    int lamina_gemm_isa()
    void lamina_gemm_float(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* A, Py_ssize_t lda, int trans_a,
                           const float* B, Py_ssize_t ldb, float* C, Py_ssize_t ldc, int accumulate)
    void lamina_gemm_double(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* A, Py_ssize_t lda, int trans_a,
                            const double* B, Py_ssize_t ldb, double* C, Py_ssize_t ldc, int accumulate)


cdef inline void small_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A, Py_ssize_t lda, const real* B,
                            Py_ssize_t ldb, real* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    """Row-major C (m×n) = A (m×k)·B (k×n), or C += A·B with accumulate, on this thread."""
    product(m, n, k, A, lda, False, B, ldb, C, ldc, accumulate)


cdef inline void small_gemm_tn(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A, Py_ssize_t lda, const real* B,
                               Py_ssize_t ldb, real* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    """Row-major C (m×n) = Aᵀ·B for A (k×m), B (k×n), or C += Aᵀ·B with accumulate, on this thread."""
    product(m, n, k, A, lda, True, B, ldb, C, ldc, accumulate)


cdef inline void product(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A, Py_ssize_t lda, bint trans_a,
                         const real* B, Py_ssize_t ldb, real* C, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    if real is float:
        lamina_gemm_float(m, n, k, A, lda, trans_a, B, ldb, C, ldc, accumulate)
    else:
        lamina_gemm_double(m, n, k, A, lda, trans_a, B, ldb, C, ldc, accumulate)
