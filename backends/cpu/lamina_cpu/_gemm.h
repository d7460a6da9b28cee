/* Small row-major matrix products for the CPU kernels, on one thread: C = op(A)·B or C += op(A)·B, with
   op(A) (m×k) = A (row stride lda) or, trans_a, Aᵀ for A (k×m), B (k×n, ldb), C (m×n, ldc). For the products
   BLAS is slow at: many small ones in a loop (each BLAS call wakes and joins its threads), or one per thread
   inside an OpenMP loop.

   Register-blocked: a 6-row × 4-vector block of C (24 of the 32 AVX-512 registers) accumulates while k
   runs, each step one broadcast of A per row and four loads of B; B's 4-vector column panel (k × 64 floats)
   stays in L1/L2 for all the row blocks. Vectors are GCC vector types of 64 bytes (one zmm; two ymm with
   AVX2). Cloned per instruction set: the wheel targets baseline x86-64. */
#ifndef LAMINA_GEMM_H
#define LAMINA_GEMM_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LAMINA_GEMM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LAMINA_GEMM_CLONES
#endif
/* the blocks are inlined into each clone, so they get its instruction set (called, they would be baseline code) */
#if defined(__GNUC__)
#define LAMINA_GEMM_INLINE static inline __attribute__((always_inline))
#else
#define LAMINA_GEMM_INLINE static inline
#endif

#define LAMINA_GEMM(T)                                                                                       \
typedef T lamina_gv_##T __attribute__((vector_size(64), aligned(sizeof(T))));                                \
enum { LAMINA_GL_##T = 64 / sizeof(T) };                                                                     \
/* C[0:6, 0:4·L] (=|+=) A·B: the accumulators in registers */                                              \
LAMINA_GEMM_INLINE void lamina_gemm_6x4_##T(Py_ssize_t k, const T* A, Py_ssize_t ar, Py_ssize_t ak, const T* B,  \
        Py_ssize_t ldb, T* C, Py_ssize_t ldc, int accumulate) {                                              \
    lamina_gv_##T c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};    \
    lamina_gv_##T c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0}, c30 = {0}, c31 = {0}, c32 = {0}, c33 = {0};    \
    lamina_gv_##T c40 = {0}, c41 = {0}, c42 = {0}, c43 = {0}, c50 = {0}, c51 = {0}, c52 = {0}, c53 = {0};    \
    for (Py_ssize_t p = 0; p < k; p++) {                                                                     \
        const lamina_gv_##T* b = (const lamina_gv_##T*)(B + p * ldb);                                        \
        const lamina_gv_##T b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];                                      \
        const T* a = A + p * ak;                                                                             \
        T a0 = a[0], a1 = a[ar], a2 = a[2 * ar], a3 = a[3 * ar], a4 = a[4 * ar], a5 = a[5 * ar];             \
        c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;                                      \
        c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;                                      \
        c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;                                      \
        c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;                                      \
        c40 += a4 * b0; c41 += a4 * b1; c42 += a4 * b2; c43 += a4 * b3;                                      \
        c50 += a5 * b0; c51 += a5 * b1; c52 += a5 * b2; c53 += a5 * b3;                                      \
    }                                                                                                        \
    lamina_gv_##T acc[6][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23},             \
                               {c30, c31, c32, c33}, {c40, c41, c42, c43}, {c50, c51, c52, c53}};            \
    for (int r = 0; r < 6; r++)                                                                              \
        for (int v = 0; v < 4; v++) {                                                                        \
            lamina_gv_##T* c = (lamina_gv_##T*)(C + r * ldc + v * LAMINA_GL_##T);                            \
            *c = accumulate ? *c + acc[r][v] : acc[r][v];                                                    \
        }                                                                                                    \
}                                                                                                            \
/* C[0:rows, 0:vecs·L] (=|+=) A·B for the edge blocks, rows < 6 or vecs < 4: two rows at a time, each vector's \
   accumulators independent (eight FMA chains in flight for four vectors) */                                 \
LAMINA_GEMM_INLINE void lamina_gemm_edge_##T(Py_ssize_t rows, int vecs, Py_ssize_t k, const T* A, Py_ssize_t ar, \
        Py_ssize_t ak, const T* B, Py_ssize_t ldb, T* C, Py_ssize_t ldc, int accumulate) {                  \
    for (Py_ssize_t r = 0; r < rows; r += 2) {                                                               \
        const T* a0 = A + r * ar;                                                                            \
        const T* a1 = r + 1 < rows ? a0 + ar : a0;          /* an odd last row: computed twice, kept once */ \
        lamina_gv_##T acc[2][4] = {{{0}}};                                                                   \
        for (Py_ssize_t p = 0; p < k; p++) {                                                                 \
            const lamina_gv_##T* b = (const lamina_gv_##T*)(B + p * ldb);                                    \
            for (int v = 0; v < 4; v++)                                                                      \
                if (v < vecs) { acc[0][v] += a0[p * ak] * b[v]; acc[1][v] += a1[p * ak] * b[v]; }            \
        }                                                                                                    \
        for (int q = 0; q < 2 && r + q < rows; q++)                                                          \
            for (int v = 0; v < vecs; v++) {                                                                 \
                lamina_gv_##T* c = (lamina_gv_##T*)(C + (r + q) * ldc + v * LAMINA_GL_##T);                  \
                *c = accumulate ? *c + acc[q][v] : acc[q][v];                                                \
            }                                                                                                \
    }                                                                                                        \
}                                                                                                            \
LAMINA_GEMM_CLONES static void lamina_gemm_##T(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const T* A,         \
        Py_ssize_t lda, int trans_a, const T* B, Py_ssize_t ldb, T* C, Py_ssize_t ldc, int accumulate) {    \
    const Py_ssize_t L = LAMINA_GL_##T;                                                                      \
    const Py_ssize_t ar = trans_a ? 1 : lda, ak = trans_a ? lda : 1;    /* op(A)[r, p] = A[r·ar + p·ak] */    \
    Py_ssize_t j = 0;                                                                                        \
    for (; j + L <= n; ) {              /* column panels of 4 vectors, then the last 1-3 */                  \
        int vecs = (n - j) / L < 4 ? (int)((n - j) / L) : 4;                                                 \
        for (Py_ssize_t i = 0; i < m; i += 6)                                                                \
            if (m - i >= 6 && vecs == 4)                                                                     \
                lamina_gemm_6x4_##T(k, A + i * ar, ar, ak, B + j, ldb, C + i * ldc + j, ldc, accumulate);    \
            else                                                                                             \
                lamina_gemm_edge_##T(m - i < 6 ? m - i : 6, vecs, k, A + i * ar, ar, ak, B + j, ldb,        \
                                     C + i * ldc + j, ldc, accumulate);                                      \
        j += vecs * L;                                                                                       \
    }                                                                                                        \
    if (j < n) {                        /* the columns past the last whole vector: in one zero-padded vector */ \
        const Py_ssize_t rem = n - j;                                                                        \
        for (Py_ssize_t i = 0; i < m; i += 6) {                                                              \
            const Py_ssize_t rows = m - i < 6 ? m - i : 6;                                                   \
            lamina_gv_##T acc[6] = {{0}};                                                                    \
            for (Py_ssize_t p = 0; p < k; p++) {                                                             \
                lamina_gv_##T b = {0};                                                                       \
                for (Py_ssize_t c = 0; c < rem; c++) b[c] = B[p * ldb + j + c];                              \
                for (Py_ssize_t r = 0; r < rows; r++) acc[r] += A[(i + r) * ar + p * ak] * b;                \
            }                                                                                                \
            for (Py_ssize_t r = 0; r < rows; r++)                                                            \
                for (Py_ssize_t c = 0; c < rem; c++) {                                                       \
                    T* dst = C + (i + r) * ldc + j + c;                                                      \
                    *dst = accumulate ? *dst + acc[r][c] : acc[r][c];                                        \
                }                                                                                            \
        }                                                                                                    \
    }                                                                                                        \
}

LAMINA_GEMM(float)
LAMINA_GEMM(double)

#endif
