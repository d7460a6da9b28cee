/* Small row-major matrix products for the CPU kernels, on one thread: C = op(A)·B or C += op(A)·B, with
   op(A) (m×k) = A (row stride lda) or, trans_a, Aᵀ for A (k×m), B (k×n, ldb), C (m×n, ldc). For the products
   BLAS is slow at: many small ones in a loop (each BLAS call wakes and joins its threads), or one per thread
   inside an OpenMP loop.

   Register-blocked: a block of 6 rows × NV vectors of C accumulates in registers while k runs, each step one
   broadcast of A per row and NV loads of B; B's column panel stays in L1/L2 for all the row blocks. One
   instantiation per instruction set, each with its own vector width and block (GCC vector types): AVX-512
   64-byte vectors, 6×4 (24 of 32 registers); AVX2+FMA 32-byte vectors, 6×2 (12 of 16); baseline SSE2
   16-byte vectors, 6×2 (12 of 16). The first call picks the widest the CPU has: the wheel targets
   baseline x86-64. (One 64-byte vector type for every clone made GCC lower AVX2's products through the
   stack: 3.4 GFLOP/s against AVX-512's 118.) */
#ifndef LAMINA_GEMM_H
#define LAMINA_GEMM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LAMINA_GEMM_DISPATCH 1
#define LAMINA_GEMM_TARGET(isa) __attribute__((target(isa)))
#else
#define LAMINA_GEMM_DISPATCH 0
#define LAMINA_GEMM_TARGET(isa)
#endif
/* the blocks are inlined into each instruction set's product, so they get its instructions */
#if defined(__GNUC__)
#define LAMINA_GEMM_INLINE static inline __attribute__((always_inline))
#else
#define LAMINA_GEMM_INLINE static inline
#endif

/* lamina_gemm_<T>_<ISA>: the product for one element type and instruction set, vectors of BYTES, blocks of
   6 rows × NV vectors */
#define LAMINA_GEMM(T, ISA, TARGET, BYTES, NV)                                                               \
typedef T lamina_gv_##T##_##ISA __attribute__((vector_size(BYTES), aligned(sizeof(T))));                     \
/* C[0:6, 0:NV·L] (=|+=) A·B: the accumulators in registers */                                              \
LAMINA_GEMM_INLINE void lamina_gemm_block_##T##_##ISA(Py_ssize_t k, const T* A, Py_ssize_t ar, Py_ssize_t ak,  \
        const T* B, Py_ssize_t ldb, T* C, Py_ssize_t ldc, int accumulate) {                                  \
    typedef lamina_gv_##T##_##ISA V;                                                                         \
    V acc[6][NV] = {{{0}}};                                                                                  \
    for (Py_ssize_t p = 0; p < k; p++) {                                                                     \
        V b[NV];                                                                                             \
        for (int v = 0; v < NV; v++) b[v] = ((const V*)(B + p * ldb))[v];                                    \
        const T* a = A + p * ak;                                                                             \
        for (int r = 0; r < 6; r++) {                                                                        \
            const T a_r = a[r * ar];                                                                         \
            for (int v = 0; v < NV; v++) acc[r][v] += a_r * b[v];                                            \
        }                                                                                                    \
    }                                                                                                        \
    for (int r = 0; r < 6; r++)                                                                              \
        for (int v = 0; v < NV; v++) {                                                                       \
            V* c = (V*)(C + r * ldc + v * (BYTES / (int)sizeof(T)));                                         \
            *c = accumulate ? *c + acc[r][v] : acc[r][v];                                                    \
        }                                                                                                    \
}                                                                                                            \
/* C[0:rows, 0:vecs·L] (=|+=) A·B for the edge blocks, rows < 6 or vecs < NV: two rows at a time, each        \
   vector's accumulators independent */                                                                      \
LAMINA_GEMM_INLINE void lamina_gemm_edge_##T##_##ISA(Py_ssize_t rows, int vecs, Py_ssize_t k, const T* A,     \
        Py_ssize_t ar, Py_ssize_t ak, const T* B, Py_ssize_t ldb, T* C, Py_ssize_t ldc, int accumulate) {   \
    typedef lamina_gv_##T##_##ISA V;                                                                         \
    for (Py_ssize_t r = 0; r < rows; r += 2) {                                                               \
        const T* a0 = A + r * ar;                                                                            \
        const T* a1 = r + 1 < rows ? a0 + ar : a0;          /* an odd last row: computed twice, kept once */ \
        V acc[2][NV] = {{{0}}};                                                                              \
        for (Py_ssize_t p = 0; p < k; p++) {                                                                 \
            const V* b = (const V*)(B + p * ldb);                                                            \
            for (int v = 0; v < NV; v++)                                                                     \
                if (v < vecs) { acc[0][v] += a0[p * ak] * b[v]; acc[1][v] += a1[p * ak] * b[v]; }            \
        }                                                                                                    \
        for (int q = 0; q < 2 && r + q < rows; q++)                                                          \
            for (int v = 0; v < vecs; v++) {                                                                 \
                V* c = (V*)(C + (r + q) * ldc + v * (BYTES / (int)sizeof(T)));                               \
                *c = accumulate ? *c + acc[q][v] : acc[q][v];                                                \
            }                                                                                                \
    }                                                                                                        \
}                                                                                                            \
LAMINA_GEMM_TARGET(TARGET) static void lamina_gemm_##T##_##ISA(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,     \
        const T* A, Py_ssize_t lda, int trans_a, const T* B, Py_ssize_t ldb, T* C, Py_ssize_t ldc,          \
        int accumulate) {                                                                                    \
    typedef lamina_gv_##T##_##ISA V;                                                                         \
    const Py_ssize_t L = BYTES / (Py_ssize_t)sizeof(T);                                                      \
    const Py_ssize_t ar = trans_a ? 1 : lda, ak = trans_a ? lda : 1;    /* op(A)[r, p] = A[r·ar + p·ak] */    \
    Py_ssize_t j = 0;                                                                                        \
    for (; j + L <= n; ) {              /* column panels of NV vectors, then the last ones */                \
        int vecs = (n - j) / L < NV ? (int)((n - j) / L) : NV;                                               \
        for (Py_ssize_t i = 0; i < m; i += 6)                                                                \
            if (m - i >= 6 && vecs == NV)                                                                    \
                lamina_gemm_block_##T##_##ISA(k, A + i * ar, ar, ak, B + j, ldb, C + i * ldc + j, ldc,      \
                                              accumulate);                                                   \
            else                                                                                             \
                lamina_gemm_edge_##T##_##ISA(m - i < 6 ? m - i : 6, vecs, k, A + i * ar, ar, ak, B + j, ldb, \
                                             C + i * ldc + j, ldc, accumulate);                              \
        j += vecs * L;                                                                                       \
    }                                                                                                        \
    if (j < n) {                        /* the columns past the last whole vector: in one zero-padded vector */ \
        const Py_ssize_t rem = n - j;                                                                        \
        for (Py_ssize_t i = 0; i < m; i += 6) {                                                              \
            const Py_ssize_t rows = m - i < 6 ? m - i : 6;                                                   \
            V acc[6] = {{0}};                                                                                \
            for (Py_ssize_t p = 0; p < k; p++) {                                                             \
                V b = {0};                                                                                   \
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

#if LAMINA_GEMM_DISPATCH
LAMINA_GEMM(float, avx512, "arch=x86-64-v4", 64, 4)
LAMINA_GEMM(double, avx512, "arch=x86-64-v4", 64, 4)
LAMINA_GEMM(float, avx2, "arch=x86-64-v3", 32, 2)
LAMINA_GEMM(double, avx2, "arch=x86-64-v3", 32, 2)
#endif
LAMINA_GEMM(float, base, "arch=x86-64", 16, 2)
LAMINA_GEMM(double, base, "arch=x86-64", 16, 2)

/* 2: AVX-512 (x86-64-v4), 1: AVX2 and FMA (x86-64-v3), 0: the baseline; asked of the CPU once.
   LAMINA_CPU_ISA=avx2 or baseline caps it (the tests run every instantiation that way). */
static int lamina_gemm_isa(void) {
#if LAMINA_GEMM_DISPATCH
    static int isa = -1;
    if (isa < 0) {
        const char* cap = getenv("LAMINA_CPU_ISA");
        int found;
        __builtin_cpu_init();
        found = __builtin_cpu_supports("x86-64-v4") ? 2 : __builtin_cpu_supports("x86-64-v3") ? 1 : 0;
        if (cap && strcmp(cap, "avx2") == 0 && found > 1) found = 1;
        if (cap && strcmp(cap, "baseline") == 0) found = 0;
        isa = found;
    }
    return isa;
#else
    return 0;
#endif
}

/* f_avx512(...), f_avx2(...) or f_base(...): the instantiation of the CPU's instruction set */
#if LAMINA_GEMM_DISPATCH
#define LAMINA_ISA_CALL(f, ...) switch (lamina_gemm_isa()) {                                                  \
    case 2: f##_avx512(__VA_ARGS__); break;                                                                  \
    case 1: f##_avx2(__VA_ARGS__); break;                                                                    \
    default: f##_base(__VA_ARGS__);                                                                          \
}
#else
#define LAMINA_ISA_CALL(f, ...) f##_base(__VA_ARGS__);
#endif
#define LAMINA_GEMM_PICK(T)                                                                                  \
static void lamina_gemm_##T(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const T* A, Py_ssize_t lda, int trans_a, \
        const T* B, Py_ssize_t ldb, T* C, Py_ssize_t ldc, int accumulate) {                                  \
    LAMINA_ISA_CALL(lamina_gemm_##T, m, n, k, A, lda, trans_a, B, ldb, C, ldc, accumulate)                   \
}
LAMINA_GEMM_PICK(float)
LAMINA_GEMM_PICK(double)

#endif
