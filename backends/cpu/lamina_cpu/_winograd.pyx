# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""3×3 stride-1 convolution by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, 2016) on NHWC images.

A 4×4 block of outputs is Y = Aᵀ[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]A for the 6×6 input tile d under it: per tile and
channel pair, 36 products instead of 144. Summed over the input channels, the 36 elementwise products become
36 matrix products: M[p] = V[p]·U[p] with V[p] (tiles, C) the transformed inputs and U[p] (C, n_C) the
transformed filters at position p of the 6×6 tile. Tiles go in blocks of TILES (V and M of a block stay in
L2); the blocks run on OpenMP threads, each writing only its own tiles' outputs. The transforms are vectorized
over the channels, which NHWC keeps contiguous; the products are _gemm.h's register-blocked kernel.
"""
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free

import numpy as np

from ._gemm cimport small_gemm, small_gemm_tn
from ._vecmath cimport PARALLEL_MIN, real

#: (Lavin & Gray's matrices for the points 0, ±1, ±2, ∞; the C transforms below are these, written out)
B_T = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1, 0, 0], [-1, -1, -1], [-1, 1, -1], [1, 2, 4], [1, -2, 4], [0, 0, 24]],
             dtype=np.float64) / np.array([[4], [6], [6], [24], [24], [24]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
               dtype=np.float64)

cdef enum:
    OUT = 4             # output tile side m
    ALPHA = 6           # input tile side m + f − 1
    POSITIONS = 36      # ALPHA²
    TILES = 48          # tiles per block: V and M of a 64→64-channel block are 0.9 MB
    VECTOR_BYTES = 64   # the output channels are padded to whole 512-bit registers: 16 floats or 8 doubles


cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define LAMINA_WINOGRAD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define LAMINA_WINOGRAD_CLONES
    #endif
    #define LAMINA_WINOGRAD(T)                                                                               \
    /* w ↦ G·w along one axis: six outputs of three inputs, for each of n numbers (stride s between outputs) */ \
    static inline void filter_axis_##T(const T* const* restrict w, T* restrict out, Py_ssize_t s,           \
                                       Py_ssize_t n) {                                                       \
        const T *w0 = w[0], *w1 = w[1], *w2 = w[2];                                                          \
        for (Py_ssize_t c = 0; c < n; c++) {                                                                 \
            T a = w0[c], b = w1[c], e = w2[c];                                                               \
            out[c] = a / 4;                                                                                  \
            out[s + c] = -(a + b + e) / 6;                                                                   \
            out[2 * s + c] = -(a - b + e) / 6;                                                               \
            out[3 * s + c] = (a + 2 * b + 4 * e) / 24;                                                       \
            out[4 * s + c] = (a - 2 * b + 4 * e) / 24;                                                       \
            out[5 * s + c] = e;                                                                              \
        }                                                                                                    \
    }                                                                                                        \
    /* u ↦ Gᵀ·u along one axis (filter_axis's adjoint): three outputs of six inputs, n numbers each */       \
    static inline void filter_adjoint_axis_##T(const T* const* restrict u, T* restrict out, Py_ssize_t s,   \
                                               Py_ssize_t n) {                                               \
        const T *u0 = u[0], *u1 = u[1], *u2 = u[2], *u3 = u[3], *u4 = u[4], *u5 = u[5];                      \
        for (Py_ssize_t c = 0; c < n; c++) {                                                                 \
            T p = u1[c] + u2[c], q = u2[c] - u1[c], e = u3[c] + u4[c], o = u3[c] - u4[c];                    \
            out[c] = u0[c] / 4 - p / 6 + e / 24;                                                             \
            out[s + c] = q / 6 + o / 12;                                                                     \
            out[2 * s + c] = (e - p) / 6 + u5[c];                                                            \
        }                                                                                                    \
    }                                                                                                        \
    /* d ↦ Bᵀd along one axis: the six outputs of six inputs, for each of n channels (stride s between them) */ \
    static inline void input_axis_##T(const T* const* restrict d, T* restrict out, Py_ssize_t s,             \
                                      Py_ssize_t n) {                                                        \
        const T *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3], *d4 = d[4], *d5 = d[5];                      \
        for (Py_ssize_t c = 0; c < n; c++) {                                                                 \
            T a = d1[c], b = d2[c], e = d3[c], f = d4[c];                                                    \
            out[c] = 4 * d0[c] - 5 * b + f;                                                                  \
            out[s + c] = -4 * (a + b) + e + f;                                                               \
            out[2 * s + c] = 4 * (a - b) - e + f;                                                            \
            out[3 * s + c] = 2 * (e - a) - b + f;                                                            \
            out[4 * s + c] = 2 * (a - e) - b + f;                                                            \
            out[5 * s + c] = 4 * a - 5 * e + d5[c];                                                          \
        }                                                                                                    \
    }                                                                                                        \
    /* V[p·vstride + c] = (Bᵀ·d·B)[p] for the 6×6 window of x (an H×W×C image) at (y0, z0), 0 outside;     \
       tmp holds 36·C numbers, zeros C zeros */                                                              \
    LAMINA_WINOGRAD_CLONES static void winograd_input_##T(const T* x, Py_ssize_t H, Py_ssize_t W,            \
            Py_ssize_t C, Py_ssize_t y0, Py_ssize_t z0, const T* zeros, T* restrict tmp, T* restrict V,      \
            Py_ssize_t vstride) {                                                                            \
        const T* d[6];                                                                                       \
        for (int b = 0; b < 6; b++) {       /* down each column of the window: tmp[r, b, :] = (Bᵀd)[r, b] */ \
            Py_ssize_t z = z0 + b;                                                                           \
            for (int a = 0; a < 6; a++) {                                                                    \
                Py_ssize_t y = y0 + a;                                                                       \
                d[a] = (y >= 0 && y < H && z >= 0 && z < W) ? x + (y * W + z) * C : zeros;                   \
            }                                                                                                \
            input_axis_##T(d, tmp + b * C, 6 * C, C);                                                         \
        }                                                                                                    \
        for (int r = 0; r < 6; r++) {       /* along each row: V[r·6 + q] = Σ_b tmp[r, b]·B[b, q] */          \
            for (int b = 0; b < 6; b++) d[b] = tmp + (r * 6 + b) * C;                                        \
            input_axis_##T(d, V + r * 6 * vstride, vstride, C);                                              \
        }                                                                                                    \
    }                                                                                                        \
    /* m ↦ Aᵀm along one axis: four outputs of six inputs, for each of n channels */                        \
    static inline void output_axis_##T(const T* const* restrict m, T* restrict out, Py_ssize_t s,            \
                                       Py_ssize_t n) {                                                       \
        const T *m0 = m[0], *m1 = m[1], *m2 = m[2], *m3 = m[3], *m4 = m[4], *m5 = m[5];                      \
        for (Py_ssize_t c = 0; c < n; c++) {                                                                 \
            T p = m1[c] + m2[c], q = m1[c] - m2[c], u = m3[c] + m4[c], v = m3[c] - m4[c];                    \
            out[c] = m0[c] + p + u;                                                                          \
            out[s + c] = q + 2 * v;                                                                          \
            out[2 * s + c] = p + 4 * u;                                                                      \
            out[3 * s + c] = q + 8 * v + m5[c];                                                              \
        }                                                                                                    \
    }                                                                                                        \
    /* the 4×4 outputs Aᵀ·M·A of one tile (M[p·mstride + :]) plus b into z (an oh×ow×n_C image) at (y0, z0), \
       the ones inside it; tmp holds 40·cop numbers */                                                      \
    LAMINA_WINOGRAD_CLONES static void winograd_output_##T(const T* M, Py_ssize_t mstride, const T* b,      \
            T* z, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t n_C, Py_ssize_t cop, Py_ssize_t y0, Py_ssize_t z0, \
            T* restrict tmp) {                                                                               \
        const T* m[6];                                                                                       \
        T* rows = tmp + 24 * cop;                                                                            \
        for (int q = 0; q < 6; q++) {       /* down each column: tmp[r, q] = (Aᵀm)[r, q] */                  \
            for (int a = 0; a < 6; a++) m[a] = M + (a * 6 + q) * mstride;                                    \
            output_axis_##T(m, tmp + q * cop, 6 * cop, n_C);                                                 \
        }                                                                                                    \
        for (int r = 0; r < 4 && y0 + r < oh; r++) {    /* along each row, then the pixels inside */         \
            for (int q = 0; q < 6; q++) m[q] = tmp + (r * 6 + q) * cop;                                      \
            output_axis_##T(m, rows, cop, n_C);                                                              \
            for (int w = 0; w < 4 && z0 + w < ow; w++) {                                                     \
                T* dst = z + ((y0 + r) * ow + z0 + w) * n_C;                                                 \
                const T* src = rows + w * cop;                                                               \
                if (b) for (Py_ssize_t c = 0; c < n_C; c++) dst[c] = src[c] + b[c];                          \
                else for (Py_ssize_t c = 0; c < n_C; c++) dst[c] = src[c];                                   \
            }                                                                                                \
        }                                                                                                    \
    }                                                                                                        \
    /* y ↦ A·y along one axis (the adjoint of output_axis): six outputs of four inputs, n channels each */    \
    static inline void gradient_axis_##T(const T* const* restrict y, T* restrict out, Py_ssize_t s,          \
                                         Py_ssize_t n) {                                                     \
        const T *y0 = y[0], *y1 = y[1], *y2 = y[2], *y3 = y[3];                                              \
        for (Py_ssize_t c = 0; c < n; c++) {                                                                 \
            T e = y0[c] + y2[c], o = y1[c] + y3[c], e4 = y0[c] + 4 * y2[c], o8 = 2 * y1[c] + 8 * y3[c];      \
            out[c] = y0[c];                                                                                  \
            out[s + c] = e + o;                                                                              \
            out[2 * s + c] = e - o;                                                                          \
            out[3 * s + c] = e4 + o8;                                                                        \
            out[4 * s + c] = e4 - o8;                                                                        \
            out[5 * s + c] = y3[c];                                                                          \
        }                                                                                                    \
    }                                                                                                        \
    /* D[p·dstride + :] = (A·dY·Aᵀ)[p] for the 4×4 block dY of g (an oh×ow×n_C image) at (y0, z0), 0 outside \
       it, the output channels padded to cop (with zeros); tmp holds 24·cop numbers, zeros cop zeros */      \
    LAMINA_WINOGRAD_CLONES static void winograd_gradient_##T(const T* g, Py_ssize_t oh, Py_ssize_t ow,      \
            Py_ssize_t n_C, Py_ssize_t cop, Py_ssize_t y0, Py_ssize_t z0, const T* zeros, T* restrict tmp,   \
            T* restrict D, Py_ssize_t dstride) {                                                             \
        const T* y[6];                                                                                       \
        for (int w = 0; w < 4; w++) {       /* down each column: tmp[p, w] = (A·dY)[p, w] */                 \
            for (int r = 0; r < 4; r++)                                                                      \
                y[r] = (y0 + r < oh && z0 + w < ow) ? g + ((y0 + r) * ow + z0 + w) * n_C : zeros;            \
            gradient_axis_##T(y, tmp + w * cop, 4 * cop, n_C);                                               \
        }                                                                                                    \
        for (int p = 0; p < 6; p++) {       /* along each row: D[p·6 + q] = Σ_w tmp[p, w]·A[q, w] */         \
            for (int w = 0; w < 4; w++) y[w] = tmp + (p * 4 + w) * cop;                                      \
            gradient_axis_##T(y, D + p * 6 * dstride, dstride, n_C);                                         \
        }                                                                                                    \
    }
    LAMINA_WINOGRAD(float)
    LAMINA_WINOGRAD(double)
    """
    void filter_axis_float(const float**, float*, Py_ssize_t, Py_ssize_t) nogil
    void filter_axis_double(const double**, double*, Py_ssize_t, Py_ssize_t) nogil
    void filter_adjoint_axis_float(const float**, float*, Py_ssize_t, Py_ssize_t) nogil
    void filter_adjoint_axis_double(const double**, double*, Py_ssize_t, Py_ssize_t) nogil
    void winograd_input_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              const float*, float*, float*, Py_ssize_t) nogil
    void winograd_input_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                               const double*, double*, double*, Py_ssize_t) nogil
    void winograd_output_float(const float*, Py_ssize_t, const float*, float*, Py_ssize_t, Py_ssize_t,
                               Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float*) nogil
    void winograd_output_double(const double*, Py_ssize_t, const double*, double*, Py_ssize_t, Py_ssize_t,
                                Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double*) nogil
    void winograd_gradient_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t, const float*, float*, float*, Py_ssize_t) nogil
    void winograd_gradient_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, const double*, double*, double*, Py_ssize_t) nogil


cdef void filter_axis(const real** w, real* out, Py_ssize_t s, Py_ssize_t n) noexcept nogil:
    if real is float:
        filter_axis_float(w, out, s, n)
    else:
        filter_axis_double(w, out, s, n)


cdef void filter_adjoint_axis(const real** u, real* out, Py_ssize_t s, Py_ssize_t n) noexcept nogil:
    if real is float:
        filter_adjoint_axis_float(u, out, s, n)
    else:
        filter_adjoint_axis_double(u, out, s, n)


cdef inline void input_tile(const real[:, :, :, ::1] x, Py_ssize_t i, Py_ssize_t y0, Py_ssize_t z0,
                            const real* zeros, real* tmp, real* V) noexcept nogil:
    """V[p·TILES·C + :] = (Bᵀ·d·B)[p] for the 6×6 window of image i at (y0, z0)."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef const real* image = &x[i, 0, 0, 0] if H * W * C else zeros
    if real is float:
        winograd_input_float(image, H, W, C, y0, z0, zeros, tmp, V, TILES * C)
    else:
        winograd_input_double(image, H, W, C, y0, z0, zeros, tmp, V, TILES * C)


cdef struct Tile:
    Py_ssize_t i, y0, z0        # image, and the output pixel at the tile's top left


cdef inline Tile tile_at(Py_ssize_t tile, Py_ssize_t per_image, Py_ssize_t across) noexcept nogil:
    """Where tile number `tile` (row-major over images, tile rows, tile columns) is. A struct returned, so that
    prange sees it assigned and keeps it private to each thread."""
    cdef Tile where
    where.i, where.y0, where.z0 = tile // per_image, tile % per_image // across * OUT, tile % across * OUT
    return where


cdef void input_block(const real[:, :, :, ::1] x, Py_ssize_t first, Py_ssize_t nt, Py_ssize_t per_image,
                      Py_ssize_t across, Py_ssize_t top, Py_ssize_t left, const real* zeros, real* tmp,
                      real* V) noexcept nogil:
    """V[p, t, :] = the transformed input of tile first + t, for the nt tiles of a block."""
    cdef Py_ssize_t t
    cdef Tile tile
    for t in range(nt):
        tile = tile_at(first + t, per_image, across)
        input_tile(x, tile.i, tile.y0 - top, tile.z0 - left, zeros, tmp, V + t * x.shape[3])


def transform_filters(W, bint flip=False):
    """U[p, c, k] = (G·W[:, :, c, k]·Gᵀ)[p] for HWIO filters W (3, 3, C, n_C), as (36, C, cop) with the
    output channels padded with zeros to a whole number of vectors. flip=True transforms the filters of
    the input gradient instead: W[2 − a, 2 − b, k, c] (rotated by 180°, input and output channels swapped)."""
    W = np.ascontiguousarray(W[::-1, ::-1].transpose(0, 1, 3, 2) if flip else W)
    lanes = VECTOR_BYTES // W.dtype.itemsize
    U = np.zeros((POSITIONS, W.shape[2], -(-W.shape[3] // lanes) * lanes), W.dtype)
    _transform_filters(W, np.empty((6, 3) + W.shape[2:], W.dtype), U)
    return U


def _transform_filters(const real[:, :, :, ::1] W, real[:, :, :, ::1] tmp, real[:, :, ::1] U):
    """tmp[p, b] = Σ_a G[p, a]·W[a, b] (on whole C × n_C blocks), then
    U[p·6 + q, c, :n_C] = Σ_b tmp[p, b, c]·G[q, b]."""
    cdef Py_ssize_t C = W.shape[2], n_C = W.shape[3], cop = U.shape[2], block = C * n_C, p, b, c
    cdef const real* rows[3]
    if block == 0:
        return
    with nogil:
        for b in range(3):
            for p in range(3):
                rows[p] = &W[p, b, 0, 0]
            filter_axis(rows, &tmp[0, b, 0, 0], 3 * block, block)
        for p in range(6):
            for c in range(C):
                for b in range(3):
                    rows[b] = &tmp[p, b, c, 0]
                filter_axis(rows, &U[p * 6, c, 0], C * cop, n_C)


def _filter_adjoint(const real[:, :, ::1] dU, Py_ssize_t n_C):
    """dW = Gᵀ·dU·G for dU (36, C, cop): the adjoint of transform_filters, as (3, 3, C, n_C)."""
    cdef Py_ssize_t C = dU.shape[1], cop = dU.shape[2], block = C * n_C, p, q, b, c
    dtype = np.float32 if real is float else np.float64
    cdef real[:, :, :, ::1] tmp = np.empty((6, 3, C, n_C), dtype)
    cdef real[:, :, :, ::1] dW = np.empty((3, 3, C, n_C), dtype)
    cdef const real* rows[6]
    if block:
        with nogil:
            for p in range(6):      # tmp[p, b, c, :] = Σ_q dU[p·6 + q, c, :]·G[q, b]
                for c in range(C):
                    for q in range(6):
                        rows[q] = &dU[p * 6 + q, c, 0]
                    filter_adjoint_axis(rows, &tmp[p, 0, c, 0], block, n_C)
            for b in range(3):      # dW[a, b] = Σ_p G[p, a]·tmp[p, b]
                for p in range(6):
                    rows[p] = &tmp[p, b, 0, 0]
                filter_adjoint_axis(rows, &dW[0, b, 0, 0], 3 * block, block)
    return np.asarray(dW)


def conv3x3(const real[:, :, :, ::1] x, const real[:, :, ::1] U, const real[::1] b, Py_ssize_t top,
            Py_ssize_t left, real[:, :, :, ::1] z):
    """z[i, h, w, k] = b[k] + Σ_{a,b,c} x[i, h + a − top, w + b − left, c]·W[a, b, c, k] (x is 0 outside the
    image), U = transform_filters(W), b empty for no bias; every pixel of z is written."""
    cdef Py_ssize_t m = z.shape[0], oh = z.shape[1], ow = z.shape[2], n_C = z.shape[3]
    cdef Py_ssize_t C = x.shape[3], cop = U.shape[2]
    cdef Py_ssize_t across = (ow + OUT - 1) // OUT, per_image = (oh + OUT - 1) // OUT * across
    cdef Py_ssize_t tiles = m * per_image, blocks = (tiles + TILES - 1) // TILES
    cdef Py_ssize_t block, t, first, nt, p
    cdef Tile tile
    cdef const real* bias = &b[0] if b.shape[0] else NULL
    cdef real* V = NULL
    cdef real* M = NULL
    cdef real* tmp = NULL
    cdef real* zeros = NULL
    cdef int failed = 0
    cdef int* out_of_memory = &failed
    if U.shape[0] != POSITIONS or U.shape[1] != C or cop < n_C:
        raise ValueError(f"conv2d (Winograd): transformed filters of shape (36, {C}, >= {n_C}) expected, "
                         f"got {tuple(U.shape)[:3]}")
    if tiles == 0 or n_C == 0:
        return
    with nogil, parallel(use_threads_if=blocks > 1 and tiles * POSITIONS * C * cop >= PARALLEL_MIN):
        # V (36·TILES·C) | M (36·TILES·cop) | tmp (36·C + 40·cop) | zeros (C): calloc, so the rows of a
        # last partial block past its tiles hold zeros, not whatever was there
        V = <real*>calloc(POSITIONS * TILES * (C + cop) + POSITIONS * C + 40 * cop + C, sizeof(real))
        M = V + POSITIONS * TILES * C
        tmp = M + POSITIONS * TILES * cop
        zeros = tmp + POSITIONS * C + 40 * cop
        if V == NULL:
            out_of_memory[0] = 1
        for block in prange(blocks, schedule="static"):
            if V == NULL:
                continue
            first = block * TILES
            nt = min(TILES, tiles - first)
            input_block(x, first, nt, per_image, across, top, left, zeros, tmp, V)
            for p in range(POSITIONS):      # M[p] = V[p]·U[p]
                small_gemm(nt, cop, C, V + p * TILES * C, C, &U[p, 0, 0], cop, M + p * TILES * cop, cop, False)
            for t in range(nt):
                tile = tile_at(first + t, per_image, across)
                if real is float:
                    winograd_output_float(M + t * cop, TILES * cop, bias, &z[tile.i, 0, 0, 0], oh, ow, n_C, cop,
                                          tile.y0, tile.z0, tmp)
                else:
                    winograd_output_double(M + t * cop, TILES * cop, bias, &z[tile.i, 0, 0, 0], oh, ow, n_C, cop,
                                           tile.y0, tile.z0, tmp)
        free(V)
    if failed:
        raise MemoryError("conv2d: no memory for the Winograd kernel's tile buffers")


def filter_grad3x3(const real[:, :, :, ::1] x, const real[:, :, :, ::1] g, Py_ssize_t top, Py_ssize_t left):
    """dW[a, b, c, k] = Σ_{i,h,w} x[i, h + a − top, w + b − left, c]·g[i, h, w, k] for conv3x3's z = g, through
    the same algorithm: dU[p] = Σ_tiles V[p]ᵀ·(A·dY·Aᵀ)[p] (the adjoint of Y = Aᵀ(U ⊙ V)A), then dW = Gᵀ·dU·G
    (the adjoint of U = G·W·Gᵀ). Each thread sums its blocks of tiles into its own dU; they are added at the end."""
    cdef Py_ssize_t m = g.shape[0], oh = g.shape[1], ow = g.shape[2], n_C = g.shape[3]
    cdef Py_ssize_t C = x.shape[3]
    cdef Py_ssize_t lanes = VECTOR_BYTES // sizeof(real), cop = (n_C + lanes - 1) // lanes * lanes
    cdef Py_ssize_t across = (ow + OUT - 1) // OUT, per_image = (oh + OUT - 1) // OUT * across
    cdef Py_ssize_t tiles = m * per_image, blocks = (tiles + TILES - 1) // TILES, size = POSITIONS * C * cop
    cdef Py_ssize_t block, t, first, nt, k, p
    cdef Tile tile
    cdef real[:, :, ::1] dU = np.zeros((POSITIONS, C, cop), np.float32 if real is float else np.float64)
    cdef real* V = NULL
    cdef real* D = NULL
    cdef real* tmp = NULL
    cdef real* zeros = NULL
    cdef real* partial = NULL
    cdef int failed = 0
    cdef int* out_of_memory = &failed
    if tiles and C and n_C:
        with nogil, parallel(use_threads_if=blocks > 1 and tiles * size >= PARALLEL_MIN):
            # V (36·TILES·C) | D (36·TILES·cop) | tmp (36·C + 24·cop) | zeros (C + cop) | partial (36·C·cop)
            V = <real*>calloc(POSITIONS * TILES * (C + cop) + POSITIONS * C + 24 * cop + C + cop + size,
                              sizeof(real))
            D = V + POSITIONS * TILES * C
            tmp = D + POSITIONS * TILES * cop
            zeros = tmp + POSITIONS * C + 24 * cop
            partial = zeros + C + cop
            if V == NULL:
                out_of_memory[0] = 1
            for block in prange(blocks, schedule="static"):
                if V == NULL:
                    continue
                first = block * TILES
                nt = min(TILES, tiles - first)
                input_block(x, first, nt, per_image, across, top, left, zeros, tmp, V)
                for t in range(nt):
                    tile = tile_at(first + t, per_image, across)
                    if real is float:
                        winograd_gradient_float(&g[tile.i, 0, 0, 0], oh, ow, n_C, cop, tile.y0, tile.z0, zeros, tmp,
                                                D + t * cop, TILES * cop)
                    else:
                        winograd_gradient_double(&g[tile.i, 0, 0, 0], oh, ow, n_C, cop, tile.y0, tile.z0, zeros, tmp,
                                                 D + t * cop, TILES * cop)
                for p in range(POSITIONS):      # dU[p] += V[p]ᵀ·D[p]: (C, nt)·(nt, cop)
                    small_gemm_tn(C, cop, nt, V + p * TILES * C, C, D + p * TILES * cop, cop, partial + p * C * cop,
                                  cop, True)
            with gil:       # once per thread: its partial sums into the shared result
                for k in range(size if V != NULL else 0):
                    (&dU[0, 0, 0])[k] += partial[k]
            free(V)
        if failed:
            raise MemoryError("conv2d: no memory for the Winograd kernel's tile buffers")
    return _filter_adjoint(dU, n_C)
