# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Batch normalization (§2.19) over the rows of a C-contiguous (N, C) array: the per-feature
statistics, the normalizing pass and the backward's sums and input gradient.

The loops over features are C functions with `restrict` pointers (below), so that GCC vectorizes
them without run-time alias checks. Per-feature sums run in the precision of the data over chunks
of CHUNK rows (four floats to a vector) and accumulate in double from chunk to chunk, as PyTorch's
CPU kernels accumulate float in double. The rows are cut into
blocks, each summed on its own and the blocks added in order; the number of blocks depends only
on the shape (one below PARALLEL_MIN elements), so a result never depends on the thread count.
The blocks, and the rows of the elementwise passes, share the OpenMP threads once an array
holds PARALLEL_MIN elements.
"""
import numpy as np

from cython.parallel cimport prange

from ._vecmath cimport PARALLEL_MIN, real

cdef enum:
    MAX_BLOCKS = 64
    CHUNK = 32


cdef enum Sums:
    MOMENTS         # Σ d and Σ d², d = a - center
    GRADIENT        # Σ a and Σ a·(b - center)


cdef inline Py_ssize_t row_blocks(Py_ssize_t rows, Py_ssize_t n) noexcept nogil:
    """How many row blocks a pass over (rows, n) is cut into."""
    if rows * n < PARALLEL_MIN:
        return 1
    return rows if rows < MAX_BLOCKS else MAX_BLOCKS


cdef extern from *:
    """
    /* The per-feature sums over a chunk of rows, four rows per pass over the running sums (whose
       loads and stores cost more than the arithmetic). Written in C for `restrict`, which Cython
       cannot say: the sums never alias the rows, so GCC vectorizes the loops over features. */
    #define LAMINA_BN_CHUNK_SUMS(T)                                                                    \
    static inline void bn_moment_sums_##T(const T* restrict x, const T* restrict center,               \
                                          Py_ssize_t rows, Py_ssize_t n,                               \
                                          T* restrict first, T* restrict second) {                     \
        Py_ssize_t i = 0, c;                                                                           \
        for (c = 0; c < n; c++) { first[c] = 0; second[c] = 0; }                                      \
        for (; i + 4 <= rows; i += 4) {                                                                \
            const T* restrict r = x + i * n;                                                           \
            for (c = 0; c < n; c++) {                                                                  \
                T d0 = r[c] - center[c], d1 = r[n + c] - center[c];                                    \
                T d2 = r[2 * n + c] - center[c], d3 = r[3 * n + c] - center[c];                        \
                first[c] += (d0 + d1) + (d2 + d3);                                                     \
                second[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);                                \
            }                                                                                          \
        }                                                                                              \
        for (; i < rows; i++) {                                                                        \
            for (c = 0; c < n; c++) {                                                                  \
                T d = x[i * n + c] - center[c];                                                        \
                first[c] += d;                                                                         \
                second[c] += d * d;                                                                    \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    static inline void bn_gradient_sums_##T(const T* restrict g, const T* restrict x,                  \
                                            const T* restrict center, Py_ssize_t rows, Py_ssize_t n,   \
                                            T* restrict first, T* restrict second) {                   \
        Py_ssize_t i = 0, c;                                                                           \
        for (c = 0; c < n; c++) { first[c] = 0; second[c] = 0; }                                       \
        for (; i + 4 <= rows; i += 4) {                                                                \
            const T* restrict u = g + i * n;                                                           \
            const T* restrict v = x + i * n;                                                           \
            for (c = 0; c < n; c++) {                                                                  \
                first[c] += (u[c] + u[n + c]) + (u[2 * n + c] + u[3 * n + c]);                         \
                second[c] += (u[c] * (v[c] - center[c]) + u[n + c] * (v[n + c] - center[c]))           \
                           + (u[2 * n + c] * (v[2 * n + c] - center[c])                                \
                              + u[3 * n + c] * (v[3 * n + c] - center[c]));                            \
            }                                                                                          \
        }                                                                                              \
        for (; i < rows; i++) {                                                                        \
            for (c = 0; c < n; c++) {                                                                  \
                first[c] += g[i * n + c];                                                              \
                second[c] += g[i * n + c] * (x[i * n + c] - center[c]);                                \
            }                                                                                          \
        }                                                                                              \
    }
    /* The elementwise passes over rows [0, rows): the forward's out = (x - center)·scale + offset
       and the backward's dx = a·g + b·(x - center) + shift, per feature c. */
    #define LAMINA_BN_ROWS(T)                                                                          \
    static inline void bn_affine_rows_##T(const T* restrict x, const T* restrict center,               \
                                          const T* restrict scale, const T* restrict offset,           \
                                          Py_ssize_t rows, Py_ssize_t n, T* restrict out) {            \
        for (Py_ssize_t i = 0; i < rows; i++)                                                          \
            for (Py_ssize_t c = 0; c < n; c++)                                                         \
                out[i * n + c] = (x[i * n + c] - center[c]) * scale[c] + offset[c];                    \
    }                                                                                                  \
    static inline void bn_input_grad_rows_##T(const T* restrict g, const T* restrict x,                \
                                              const T* restrict center, const T* restrict a,           \
                                              const T* restrict b, const T* restrict shift,            \
                                              Py_ssize_t rows, Py_ssize_t n, T* restrict dx) {         \
        for (Py_ssize_t i = 0; i < rows; i++)                                                          \
            for (Py_ssize_t c = 0; c < n; c++)                                                         \
                dx[i * n + c] = a[c] * g[i * n + c] + b[c] * (x[i * n + c] - center[c]) + shift[c];    \
    }
    LAMINA_BN_CHUNK_SUMS(float)
    LAMINA_BN_CHUNK_SUMS(double)
    LAMINA_BN_ROWS(float)
    LAMINA_BN_ROWS(double)
    """
    void bn_moment_sums_float(const float*, const float*, Py_ssize_t, Py_ssize_t, float*, float*) nogil
    void bn_moment_sums_double(const double*, const double*, Py_ssize_t, Py_ssize_t, double*, double*) nogil
    void bn_gradient_sums_float(const float*, const float*, const float*, Py_ssize_t, Py_ssize_t, float*,
                                float*) nogil
    void bn_gradient_sums_double(const double*, const double*, const double*, Py_ssize_t, Py_ssize_t, double*,
                                 double*) nogil
    void bn_affine_rows_float(const float*, const float*, const float*, const float*, Py_ssize_t, Py_ssize_t,
                              float*) nogil
    void bn_affine_rows_double(const double*, const double*, const double*, const double*, Py_ssize_t,
                               Py_ssize_t, double*) nogil
    void bn_input_grad_rows_float(const float*, const float*, const float*, const float*, const float*,
                                  const float*, Py_ssize_t, Py_ssize_t, float*) nogil
    void bn_input_grad_rows_double(const double*, const double*, const double*, const double*, const double*,
                                   const double*, Py_ssize_t, Py_ssize_t, double*) nogil


cdef inline void chunk_sums(Sums kind, const real* a, const real* b, const real* center, Py_ssize_t rows,
                            Py_ssize_t n, real* first, real* second) noexcept nogil:
    """first_c, second_c = the sums of `kind` over `rows` rows."""
    if real is float:
        if kind == MOMENTS:
            bn_moment_sums_float(a, center, rows, n, first, second)
        else:
            bn_gradient_sums_float(a, b, center, rows, n, first, second)
    else:
        if kind == MOMENTS:
            bn_moment_sums_double(a, center, rows, n, first, second)
        else:
            bn_gradient_sums_double(a, b, center, rows, n, first, second)


cdef inline void block_sums(Sums kind, const real* a, const real* b, const real* center, Py_ssize_t begin,
                            Py_ssize_t end, Py_ssize_t n, real* chunk, double* total) noexcept nogil:
    """total[0:n], total[n:2n] = the sums of `kind` over rows [begin, end), chunk by chunk."""
    cdef Py_ssize_t i = begin, c, rows
    for c in range(2 * n):
        total[c] = 0
    while i < end:
        rows = end - i if end - i < CHUNK else CHUNK
        chunk_sums(kind, a + i * n, b + i * n, center, rows, n, chunk, chunk + n)
        for c in range(2 * n):
            total[c] += chunk[c]
        i += rows


cdef void sum_rows(Sums kind, const real* a, const real* b, const real* center, Py_ssize_t rows, Py_ssize_t n,
                   double* first, double* second):
    """first_c, second_c = the sums of `kind` over all rows, block by block."""
    cdef Py_ssize_t blocks = row_blocks(rows, n), k, c
    totals = np.zeros((blocks, 2 * n))
    chunks = np.zeros((blocks, 2 * n), dtype=np.float32 if real is float else np.float64)
    cdef double[:, ::1] total = totals
    cdef real[:, ::1] chunk = chunks
    for k in prange(blocks, nogil=True, schedule="static", use_threads_if=blocks > 1):
        block_sums(kind, a, b, center, k * rows // blocks, (k + 1) * rows // blocks, n, &chunk[k, 0], &total[k, 0])
    for c in range(n):
        first[c] = 0
        second[c] = 0
    for k in range(blocks):
        for c in range(n):
            first[c] += total[k, c]
            second[c] += total[k, n + c]


def moments(const real[:, ::1] x, double[::1] mean, double[::1] var):
    """mean_c = 1/N Σ_i x_ic and var_c = 1/N Σ_i (x_ic - mean_c)² (biased), from the sums of the
    shifted values d = x_ic - x_0c: var = E[d²] - E[d]², with no cancellation when |mean| ≫ std."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1], c
    cdef double m
    if rows == 0 or n == 0:
        return
    sum_rows(MOMENTS, &x[0, 0], &x[0, 0], &x[0, 0], rows, n, &mean[0], &var[0])
    for c in range(n):
        m = mean[c] / rows
        var[c] = var[c] / rows - m * m
        var[c] = var[c] if var[c] > 0 else 0
        mean[c] = x[0, c] + m


def grad_sums(const real[:, ::1] g, const real[:, ::1] x, const double[::1] center, double[::1] sum_g,
              double[::1] sum_gx):
    """sum_g_c = Σ_i g_ic and sum_gx_c = Σ_i g_ic·(x_ic - center_c). The loops subtract center
    rounded to the data's precision, c̃; the exact Σ g·(x - c) = Σ g·(x - c̃) + (c̃ - c)·Σ g."""
    cdef Py_ssize_t rows = x.shape[0], n = x.shape[1], c
    if n == 0:
        return
    if rows == 0:
        sum_g[:] = 0
        sum_gx[:] = 0
        return
    rounded_array = np.asarray(center, dtype=np.float32 if real is float else np.float64)
    cdef real[::1] rounded = rounded_array
    sum_rows(GRADIENT, &g[0, 0], &x[0, 0], &rounded[0], rows, n, &sum_g[0], &sum_gx[0])
    for c in range(n):
        sum_gx[c] += (<double>rounded[c] - center[c]) * sum_g[c]


cdef enum Pass:
    AFFINE          # out = (x - center)·a + shift
    INPUT_GRAD      # out = a·g + b·(x - center) + shift


cdef inline void pass_rows(Pass kind, const real* g, const real* x, const real* center, const real* a,
                           const real* b, const real* shift, Py_ssize_t rows, Py_ssize_t n, real* out) noexcept nogil:
    if real is float:
        if kind == AFFINE:
            bn_affine_rows_float(x, center, a, shift, rows, n, out)
        else:
            bn_input_grad_rows_float(g, x, center, a, b, shift, rows, n, out)
    else:
        if kind == AFFINE:
            bn_affine_rows_double(x, center, a, shift, rows, n, out)
        else:
            bn_input_grad_rows_double(g, x, center, a, b, shift, rows, n, out)


cdef void elementwise(Pass kind, const real* g, const real* x, const real* center, const real* a, const real* b,
                      const real* shift, Py_ssize_t rows, Py_ssize_t n, real* out) noexcept nogil:
    """The pass `kind` over every row, block by block."""
    cdef Py_ssize_t blocks = row_blocks(rows, n), k, begin
    for k in prange(blocks, schedule="static", use_threads_if=blocks > 1):
        begin = k * rows // blocks
        pass_rows(kind, g + begin * n, x + begin * n, center, a, b, shift, (k + 1) * rows // blocks - begin, n,
                  out + begin * n)


def normalize(const real[:, ::1] x, const real[::1] center, const real[::1] scale, const real[::1] offset,
              real[:, ::1] out):
    """out_ic = (x_ic - center_c)·scale_c + offset_c: the forward with center = μ, scale = γ/√(σ² + ε),
    offset = β."""
    if x.shape[0] and x.shape[1]:
        elementwise(AFFINE, &x[0, 0], &x[0, 0], &center[0], &scale[0], &scale[0], &offset[0], x.shape[0],
                    x.shape[1], &out[0, 0])


def input_grad(const real[:, ::1] g, const real[:, ::1] x, const real[::1] center, const real[::1] a,
               const real[::1] b, const real[::1] shift, real[:, ::1] dx):
    """dx_ic = a_c·g_ic + b_c·(x_ic - center_c) + shift_c. With a = γ/√(σ² + ε), center = μ,
    b = -a·Σ_i g_i·x̂_i/(N·√(σ² + ε)) and shift = -a·Σ_i g_i/N this is the training-mode
    dx = γ/(N·√(σ² + ε))·(N·g - Σ g - x̂·Σ g·x̂)."""
    if x.shape[0] and x.shape[1]:
        elementwise(INPUT_GRAD, &g[0, 0], &x[0, 0], &center[0], &a[0], &b[0], &shift[0], x.shape[0], x.shape[1],
                    &dx[0, 0])
