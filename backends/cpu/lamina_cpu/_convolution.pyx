# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Convolution and pooling (§4.1–4.4) on C-contiguous NHWC images (m, n_H, n_W, C).

Each function loops over the images of the batch; an image's outputs (or, in the backward passes,
its input gradient) are written by one thread only, so the images run on OpenMP threads with no
atomics once the pass touches PARALLEL_MIN elements (below that one thread: see _vecmath.pxd).
A convolution is either im2col + _gemm.h's matrix product over blocks of output pixels (on the OpenMP
threads, not BLAS's: see _matmul for why), or a direct loop for small filter banks (3×3 stride-1 ones are
_winograd's, 1×1 ones one product in the backend). Padding is (top, left) here; the bottom/right padding
only shows in the output size the caller chose.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from ._gemm cimport small_gemm, small_gemm_tn
from ._vecmath cimport PARALLEL_MIN, real

cdef extern from *:
    """
    /* One pixel's channels against the running maxima. In C for `restrict` (Cython cannot say it): the
       three never alias, so GCC turns the selects into vector blends. */
    #define LAMINA_MAX_UPDATE(T)                                                                         \
    static inline void max_update_##T(const T* restrict src, T* restrict best, int32_t* restrict where,  \
                                      int32_t k, Py_ssize_t n) {                                         \
        for (Py_ssize_t c = 0; c < n; c++) {    /* masks, not a conditional store, or GCC keeps it scalar */ \
            T s = src[c], b = best[c];                                                                   \
            int32_t better = -(int32_t)(s > b), w = where[c];                                            \
            best[c] = s > b ? s : b;                                                                     \
            where[c] = (k & better) | (w & ~better);                                                     \
        }                                                                                                \
    }
    LAMINA_MAX_UPDATE(float)
    LAMINA_MAX_UPDATE(double)
    """
    void max_update_float(const float*, float*, int32_t*, int32_t, Py_ssize_t) nogil
    void max_update_double(const double*, double*, int32_t*, int32_t, Py_ssize_t) nogil


cdef inline void max_update(const real* src, real* best, int32_t* where, int32_t k, Py_ssize_t n) noexcept nogil:
    if real is float:
        max_update_float(src, best, where, k, n)
    else:
        max_update_double(src, best, where, k, n)


cdef inline Py_ssize_t first_inside(Py_ssize_t start) noexcept nogil:
    """The first window offset a whose pixel start + a lies inside the image."""
    return -start if start < 0 else 0


cdef inline Py_ssize_t end_inside(Py_ssize_t start, Py_ssize_t f, Py_ssize_t n) noexcept nogil:
    """One past the last window offset a whose pixel start + a lies inside an image of size n."""
    return n - start if n - start < f else f


cdef inline bint threaded(Py_ssize_t m, Py_ssize_t work) noexcept nogil:
    return m > 1 and work >= PARALLEL_MIN


cdef enum:
    ROW_BLOCK = 96      # output pixels per block of the im2col path (a multiple of small_gemm's 6 rows)


# ---- convolution --------------------------------------------------------------------------------------------
# Two ways here, chosen by the caller (backend.conv2d): im2col + a matrix product over blocks of output pixels,
# or, for a small filter bank (the first layer of an image network: n_C_prev = 1 or 3, few filters), a direct
# loop with the filters in L1, where a product only n_C wide would spend its time on im2col copying.

cdef void im2col_rows(const real[:, :, :, ::1] x, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t oh, Py_ssize_t ow,
                      Py_ssize_t f, Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left, real* cols) noexcept nogil:
    """cols[r − r0, (a·f + b)·C + c] = x_pad[i, h·s + a, w·s + b, c] for the output pixels r = (i·n_H_out + h)·n_W_out + w
    in [r0, r1) (0 in the padding); the rows on OpenMP threads from PARALLEL_MIN numbers."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], C = x.shape[3], width = f * f * x.shape[3]
    cdef Py_ssize_t r, i, h, w, a, c, y, y0, z0, lo, hi
    cdef real* dst
    cdef const real* src
    for r in prange(r0, r1, schedule="static", use_threads_if=(r1 - r0) * width >= PARALLEL_MIN):
        i, h, w = r // (oh * ow), (r // ow) % oh, r % ow
        y0, z0 = h * stride - top, w * stride - left
        lo, hi = first_inside(z0), end_inside(z0, f, W)
        for a in range(f):
            y = y0 + a
            dst = cols + (r - r0) * width + a * f * C
            if y < 0 or y >= H or lo >= hi:
                memset(dst, 0, f * C * sizeof(real))
                continue
            # the window's pixels inside the row are contiguous in x (NHWC): one run, copied by a plain loop
            # (runs are short when C is: a memcpy call per run would cost more)
            src = &x[i, y, z0, 0]
            for c in range(lo * C):
                dst[c] = 0
            for c in range(lo * C, hi * C):
                dst[c] = src[c]
            for c in range(hi * C, f * C):
                dst[c] = 0


cdef void col2im_rows(const real* dcols, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t f,
                      Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left, real[:, :, :, ::1] dx) noexcept nogil:
    """dx[i, y, z, c] += the dcols entries of the output pixels [r0, r1) that read x[i, y, z, c] (im2col's adjoint);
    the images on OpenMP threads (windows of one image overlap, of two never) from PARALLEL_MIN numbers."""
    cdef Py_ssize_t H = dx.shape[1], W = dx.shape[2], C = dx.shape[3], width = f * f * dx.shape[3]
    cdef Py_ssize_t P = oh * ow, first = r0 // P, last = (r1 - 1) // P
    cdef Py_ssize_t r, i, h, w, a, c, y0, z0, lo, hi
    cdef const real* src
    cdef real* dst
    for i in prange(first, last + 1, schedule="static",
                    use_threads_if=last > first and (r1 - r0) * width >= PARALLEL_MIN):
        for r in range(max(r0, i * P), min(r1, (i + 1) * P)):
            h, w = (r // ow) % oh, r % ow
            y0, z0 = h * stride - top, w * stride - left
            lo, hi = first_inside(z0), end_inside(z0, f, W)
            for a in range(first_inside(y0), end_inside(y0, f, H)):
                src = dcols + (r - r0) * width + (a * f + lo) * C
                dst = &dx[i, y0 + a, z0 + lo, 0]
                for c in range((hi - lo) * C):      # contiguous in both (NHWC)
                    dst[c] += src[c]


cdef void clear_grads(real[:, :, :, ::1] dx, real[:, ::1] dW2, real[::1] db):
    """Zero the gradients asked for (the ones not None): the backward passes add into them."""
    if dx is not None:
        memset(&dx[0, 0, 0, 0], 0, dx.shape[0] * dx.shape[1] * dx.shape[2] * dx.shape[3] * sizeof(real))
    if dW2 is not None:
        memset(&dW2[0, 0], 0, dW2.shape[0] * dW2.shape[1] * sizeof(real))
    if db is not None:
        memset(&db[0], 0, db.shape[0] * sizeof(real))


def conv_gemm_forward(const real[:, :, :, ::1] x, const real[:, :, :, ::1] panels, const real[::1] b, Py_ssize_t f,
                      Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left, real[:, :, :, ::1] z):
    """Z = im2col(x)·W₂ + b, W₂ = the filters as (f·f·n_C_prev, n_C) given as _matmul.pack_panels(W₂), b empty for
    no bias: blocks of ROW_BLOCK output pixels on the OpenMP threads, each thread building its block's columns in
    its own buffer (L2-sized) and multiplying them with small_gemm onto the bias."""
    cdef Py_ssize_t oh = z.shape[1], ow = z.shape[2], n_C = z.shape[3], width = panels.shape[2]
    cdef Py_ssize_t rows = z.shape[0] * oh * ow, unit = panels.shape[3], parts = panels.shape[1]
    cdef Py_ssize_t blocks = (rows + ROW_BLOCK - 1) // ROW_BLOCK, block, r0, nr, r, part
    cdef real* out
    cdef real* cols = NULL
    cdef int failed = 0
    cdef int* out_of_memory = &failed
    if rows == 0 or n_C == 0:
        return
    with nogil, parallel(use_threads_if=blocks > 1 and rows * width * n_C >= PARALLEL_MIN):
        cols = <real*>malloc(ROW_BLOCK * max(width, 1) * sizeof(real))
        if cols == NULL:
            out_of_memory[0] = 1
        for block in prange(blocks, schedule="static"):
            if cols == NULL:
                continue
            r0 = block * ROW_BLOCK
            nr = min(ROW_BLOCK, rows - r0)
            out = &z[0, 0, 0, 0] + r0 * n_C
            for r in range(nr):
                if b.shape[0]:
                    memcpy(out + r * n_C, &b[0], n_C * sizeof(real))
                else:
                    memset(out + r * n_C, 0, n_C * sizeof(real))
            if width == 0:
                continue
            im2col_rows(x, r0, r0 + nr, oh, ow, f, stride, top, left, cols)
            for part in range(parts):
                small_gemm(nr, min(unit, n_C - part * unit), width, cols, width, &panels[0, part, 0, 0], unit,
                           out + part * unit, n_C, True)
        free(cols)
    if failed:
        raise MemoryError("conv2d: no memory for the im2col columns")


def conv_gemm_backward(const real[:, :, :, ::1] x, const real[:, :, :, ::1] panels_T, const real[:, ::1] g,
                       Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t f, Py_ssize_t stride, Py_ssize_t top, Py_ssize_t left,
                       real[:, :, :, ::1] dx, real[:, ::1] dW2, real[::1] db):
    """dW₂ = im2col(x)ᵀ·G, db = Σ_rows G, dx = col2im(G·W₂ᵀ) with W₂ᵀ given as _matmul.pack_panels(W₂ᵀ) and G
    (pixels, n_C). The images run on the OpenMP threads (one image's windows overlap, two images' never: col2im
    adds without atomics), each a ROW_BLOCK of pixels at a time; dW₂ and db are summed per thread and added at
    the end. Each of dx, dW2, db may be None (not computed); the others are overwritten."""
    cdef Py_ssize_t n_C = g.shape[1], width = f * f * x.shape[3]
    cdef Py_ssize_t m = x.shape[0], P = oh * ow, i, block, r0, nr, part, k, c
    cdef Py_ssize_t unit = panels_T.shape[3], parts = panels_T.shape[1]
    cdef bint want_dx = dx is not None, want_dW = dW2 is not None, want_db = db is not None
    cdef real* cols = NULL
    cdef real* partial = NULL
    cdef real* sums = NULL
    cdef const real* grad
    cdef int failed = 0
    cdef int* out_of_memory = &failed
    clear_grads(dx, dW2, db)
    if m == 0 or P == 0 or n_C == 0:
        return
    with nogil, parallel(use_threads_if=m > 1 and m * P * width * n_C >= PARALLEL_MIN):
        # cols (ROW_BLOCK·width: the block's columns, then their gradient) | partial (width·n_C) | sums (n_C)
        cols = <real*>calloc(ROW_BLOCK * width + width * n_C + n_C, sizeof(real))
        partial = cols + ROW_BLOCK * width
        sums = partial + width * n_C
        if cols == NULL:
            out_of_memory[0] = 1
        for i in prange(m, schedule="static"):
            if cols == NULL:
                continue
            for block in range((P + ROW_BLOCK - 1) // ROW_BLOCK):
                r0 = i * P + block * ROW_BLOCK
                nr = min(ROW_BLOCK, (i + 1) * P - r0)
                grad = &g[r0, 0]
                if want_db:
                    for c in range(nr * n_C):
                        sums[c % n_C] += grad[c]
                if width == 0:
                    continue
                if want_dW:     # dW₂ += colsᵀ·G
                    im2col_rows(x, r0, r0 + nr, oh, ow, f, stride, top, left, cols)
                    small_gemm_tn(width, n_C, nr, cols, width, grad, n_C, partial, n_C, True)
                if want_dx:     # dcols = G·W₂ᵀ, then scattered back
                    for part in range(parts):
                        small_gemm(nr, min(unit, width - part * unit), n_C, grad, n_C, &panels_T[0, part, 0, 0],
                                   unit, cols + part * unit, width, False)
                    col2im_rows(cols, r0, r0 + nr, oh, ow, f, stride, top, left, dx)
        with gil:       # once per thread: its partial sums into the shared results
            for k in range(width * n_C if want_dW and cols != NULL else 0):
                (&dW2[0, 0])[k] += partial[k]
            for k in range(n_C if want_db and cols != NULL else 0):
                db[k] += sums[k]
        free(cols)
    if failed:
        raise MemoryError("conv2d: no memory for the im2col columns")


cdef enum:
    LANES = 16      # owp's granularity and the lanes of each (k, co)'s partial sums: a whole number of vectors


cdef extern from *:
    """
    /* The direct convolution's inner products on one output row h of one image, vectorized over output pixels
       (GCC vector types of the instruction set's width: 16 floats with AVX-512, 8 with AVX2, 4 otherwise;
       half as many doubles). The image is held as xT[c, y, z] (zero padding included, rows Wp long), so the
       window position k = (a·f + b)·C + c of output pixel w reads xT[off[k] + h·s·Wp + w·s]: `row` below is
       xT + h·s·Wp. owp is n_W_out rounded up to LANES (16, a whole number of vectors on every instruction set);
       the lanes past n_W_out compute numbers nobody stores (forward), add zeros (input gradient: gT is 0
       there) or are masked out (weight gradient). One instantiation per instruction set, picked as _gemm.h's
       is (LAMINA_GEMM_TARGET, lamina_gemm_isa): the wheel targets baseline x86-64, and these loops are where
       AVX2/AVX-512 pay. */
    #define LAMINA_DIRECT(T, ISA, TARGET, BYTES, MT)                                                         \
    typedef T V_##T##_##ISA __attribute__((vector_size(BYTES), aligned(sizeof(T))));                     \
    typedef MT M_##T##_##ISA __attribute__((vector_size(BYTES)));                                        \
    enum { L_##T##_##ISA = BYTES / sizeof(T) };                                                          \
    LAMINA_GEMM_INLINE V_##T##_##ISA lanes_at_##T##_##ISA(const T* src, Py_ssize_t s) {   /* src[l·s] for the lanes l */      \
        if (s == 1) return *(const V_##T##_##ISA*)src;                                                           \
        V_##T##_##ISA v;                                                                                         \
        for (int l = 0; l < L_##T##_##ISA; l++) v[l] = src[l * s];                                                  \
        return v;                                                                                        \
    }                                                                                                    \
    LAMINA_GEMM_INLINE void add_lanes_##T##_##ISA(T* dst, Py_ssize_t s, V_##T##_##ISA v) {   /* dst[l·s] += v[l] */            \
        if (s == 1) { *(V_##T##_##ISA*)dst += v; return; }                                                       \
        for (int l = 0; l < L_##T##_##ISA; l++) dst[l * s] += v[l];                                                 \
    }                                                                                                    \
    /* outT[co, w] = b[co] + Σ_k W2[k, co]·row[off[k] + w·s], four output channels at a time */           \
    LAMINA_GEMM_TARGET(TARGET) static void direct_row_forward_##T##_##ISA(const T* restrict row, const Py_ssize_t* restrict off,  \
            Py_ssize_t s, const T* restrict W2, const T* restrict b, T* restrict outT, Py_ssize_t K,          \
            Py_ssize_t n_C, Py_ssize_t owp) {                                                                \
        Py_ssize_t co = 0;                                                                               \
        for (; co + 4 <= n_C; co += 4)                                                                   \
            for (Py_ssize_t w0 = 0; w0 < owp; w0 += L_##T##_##ISA) {                                                \
                V_##T##_##ISA a0 = (V_##T##_##ISA){0} + b[co], a1 = (V_##T##_##ISA){0} + b[co + 1];                              \
                V_##T##_##ISA a2 = (V_##T##_##ISA){0} + b[co + 2], a3 = (V_##T##_##ISA){0} + b[co + 3];                          \
                for (Py_ssize_t k = 0; k < K; k++) {                                                     \
                    const V_##T##_##ISA v = lanes_at_##T##_##ISA(row + off[k] + w0 * s, s);                               \
                    const T* wk = W2 + k * n_C + co;                                                     \
                    a0 += wk[0] * v; a1 += wk[1] * v; a2 += wk[2] * v; a3 += wk[3] * v;                  \
                }                                                                                        \
                *(V_##T##_##ISA*)(outT + co * owp + w0) = a0; *(V_##T##_##ISA*)(outT + (co + 1) * owp + w0) = a1;        \
                *(V_##T##_##ISA*)(outT + (co + 2) * owp + w0) = a2; *(V_##T##_##ISA*)(outT + (co + 3) * owp + w0) = a3;  \
            }                                                                                            \
        for (; co < n_C; co++)                                                                           \
            for (Py_ssize_t w0 = 0; w0 < owp; w0 += L_##T##_##ISA) {                                                \
                V_##T##_##ISA a0 = (V_##T##_##ISA){0} + b[co];                                                           \
                for (Py_ssize_t k = 0; k < K; k++)                                                       \
                    a0 += W2[k * n_C + co] * lanes_at_##T##_##ISA(row + off[k] + w0 * s, s);                      \
                *(V_##T##_##ISA*)(outT + co * owp + w0) = a0;                                                    \
            }                                                                                            \
    }                                                                                                    \
    /* dxrow[off[k] + w·s] += Σ_co W2[k, co]·gT[co·gstride + w], four window positions at a time */    \
    LAMINA_GEMM_TARGET(TARGET) static void direct_row_input_grad_##T##_##ISA(const T* restrict gT, Py_ssize_t gstride,          \
            const T* restrict W2, const Py_ssize_t* restrict off, Py_ssize_t s, T* restrict dxrow,          \
            Py_ssize_t K, Py_ssize_t n_C, Py_ssize_t owp) {                                              \
        for (Py_ssize_t w0 = 0; w0 < owp; w0 += L_##T##_##ISA) {                                                    \
            Py_ssize_t k = 0;                                                                            \
            for (; k + 4 <= K; k += 4) {                                                                 \
                V_##T##_##ISA a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                            \
                const T* wk = W2 + k * n_C;                                                              \
                for (Py_ssize_t co = 0; co < n_C; co++) {                                                \
                    const V_##T##_##ISA v = *(const V_##T##_##ISA*)(gT + co * gstride + w0);                             \
                    a0 += wk[co] * v; a1 += wk[n_C + co] * v;                                            \
                    a2 += wk[2 * n_C + co] * v; a3 += wk[3 * n_C + co] * v;                              \
                }                                                                                        \
                add_lanes_##T##_##ISA(dxrow + off[k] + w0 * s, s, a0);                                           \
                add_lanes_##T##_##ISA(dxrow + off[k + 1] + w0 * s, s, a1);                                       \
                add_lanes_##T##_##ISA(dxrow + off[k + 2] + w0 * s, s, a2);                                       \
                add_lanes_##T##_##ISA(dxrow + off[k + 3] + w0 * s, s, a3);                                       \
            }                                                                                            \
            for (; k < K; k++) {                                                                         \
                V_##T##_##ISA a0 = {0};                                                                          \
                for (Py_ssize_t co = 0; co < n_C; co++)                                                  \
                    a0 += W2[k * n_C + co] * *(const V_##T##_##ISA*)(gT + co * gstride + w0);                    \
                add_lanes_##T##_##ISA(dxrow + off[k] + w0 * s, s, a0);                                           \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    /* lanes[k, co, l] += Σ_h Σ_blocks xT[off[k] + h·s·Wp + (w0 + l)·s]·gT[co, h, w0 + l] over w0 + l < ow, for\
       a whole image (gT is (n_C, oh, owp)); a partial sum per lane (the first L of each (k, co)'s LANES),\
       four output channels at a time */                                                                 \
    LAMINA_GEMM_TARGET(TARGET) static void direct_image_weight_grad_##T##_##ISA(const T* restrict xT,    \
            Py_ssize_t Wp, const Py_ssize_t* restrict off, Py_ssize_t s, const T* restrict gT, T* restrict lanes,\
            Py_ssize_t K, Py_ssize_t n_C, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t owp) {                \
        typedef V_##T##_##ISA V;                                                                         \
        const int L = L_##T##_##ISA;                                                                     \
        M_##T##_##ISA tail;     /* the lanes of the block at ow's end inside the row (x may hold inf past it) */\
        for (int l = 0; l < L; l++) tail[l] = (ow - 1) / L * L + l < ow ? -1 : 0;                        \
        for (Py_ssize_t k = 0; k < K; k++) {                                                             \
            Py_ssize_t co = 0;                                                                           \
            for (; co < n_C; co += 4) {                                                                  \
                int n = n_C - co < 4 ? (int)(n_C - co) : 4;                                              \
                V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                \
                const T* g = gT + co * oh * owp;                                                         \
                Py_ssize_t plane = oh * owp;                                                             \
                for (Py_ssize_t h = 0; h < oh; h++)                                                      \
                    for (Py_ssize_t w0 = 0; w0 < ow; w0 += L) {     /* blocks past ow add nothing */     \
                        V v = lanes_at_##T##_##ISA(xT + off[k] + h * s * Wp + w0 * s, s);                \
                        if (w0 + L > ow) v = (V)((M_##T##_##ISA)v & tail);                               \
                        const T* gp = g + h * owp + w0;                                                  \
                        a0 += v * *(const V*)gp;                                                         \
                        if (n > 1) a1 += v * *(const V*)(gp + plane);                                    \
                        if (n > 2) a2 += v * *(const V*)(gp + 2 * plane);                                \
                        if (n > 3) a3 += v * *(const V*)(gp + 3 * plane);                                \
                    }                                                                                    \
                V* dst = (V*)(lanes + (k * n_C + co) * 16);     /* dst[j·16/L]: channel co + j */        \
                dst[0] += a0;                                                                            \
                if (n > 1) dst[16 / L] += a1;                                                            \
                if (n > 2) dst[2 * 16 / L] += a2;                                                        \
                if (n > 3) dst[3 * 16 / L] += a3;                                                        \
            }                                                                                            \
        }                                                                                                \
    }
    #if LAMINA_GEMM_DISPATCH
    LAMINA_DIRECT(float, avx512, "arch=x86-64-v4", 64, int32_t)
    LAMINA_DIRECT(double, avx512, "arch=x86-64-v4", 64, int64_t)
    LAMINA_DIRECT(float, avx2, "arch=x86-64-v3", 32, int32_t)
    LAMINA_DIRECT(double, avx2, "arch=x86-64-v3", 32, int64_t)
    #endif
    LAMINA_DIRECT(float, base, "arch=x86-64", 16, int32_t)
    LAMINA_DIRECT(double, base, "arch=x86-64", 16, int64_t)
    /* the entry points: each runs the instantiation of the CPU's instruction set */
    #define LAMINA_DIRECT_ENTRIES(T)                                                                         \
    static void direct_row_forward_##T(const T* row, const Py_ssize_t* off, Py_ssize_t s, const T* W2,      \
            const T* b, T* outT, Py_ssize_t K, Py_ssize_t n_C, Py_ssize_t owp) {                             \
        LAMINA_ISA_CALL(direct_row_forward_##T, row, off, s, W2, b, outT, K, n_C, owp)                     \
    }                                                                                                    \
    static void direct_row_input_grad_##T(const T* gT, Py_ssize_t gstride, const T* W2, const Py_ssize_t* off, \
            Py_ssize_t s, T* dxrow, Py_ssize_t K, Py_ssize_t n_C, Py_ssize_t owp) {                          \
        LAMINA_ISA_CALL(direct_row_input_grad_##T, gT, gstride, W2, off, s, dxrow, K, n_C, owp)            \
    }                                                                                                    \
    static void direct_image_weight_grad_##T(const T* xT, Py_ssize_t Wp, const Py_ssize_t* off, Py_ssize_t s, \
            const T* gT, T* lanes, Py_ssize_t K, Py_ssize_t n_C, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t owp) { \
        LAMINA_ISA_CALL(direct_image_weight_grad_##T, xT, Wp, off, s, gT, lanes, K, n_C, oh, ow, owp)      \
    }
    LAMINA_DIRECT_ENTRIES(float)
    LAMINA_DIRECT_ENTRIES(double)
    """
    void direct_row_forward_float(const float*, const Py_ssize_t*, Py_ssize_t, const float*, const float*, float*,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t) nogil
    void direct_row_forward_double(const double*, const Py_ssize_t*, Py_ssize_t, const double*, const double*,
                                   double*, Py_ssize_t, Py_ssize_t, Py_ssize_t) nogil
    void direct_row_input_grad_float(const float*, Py_ssize_t, const float*, const Py_ssize_t*, Py_ssize_t, float*,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t) nogil
    void direct_row_input_grad_double(const double*, Py_ssize_t, const double*, const Py_ssize_t*, Py_ssize_t,
                                      double*, Py_ssize_t, Py_ssize_t, Py_ssize_t) nogil
    void direct_image_weight_grad_float(const float*, Py_ssize_t, const Py_ssize_t*, Py_ssize_t, const float*, float*,
                                        Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) nogil
    void direct_image_weight_grad_double(const double*, Py_ssize_t, const Py_ssize_t*, Py_ssize_t, const double*,
                                         double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) nogil


cdef inline Py_ssize_t lanes_up(Py_ssize_t n) noexcept nogil:
    return (n + LANES - 1) // LANES * LANES


cdef class DirectGeometry:
    """The padded channel-major image of the direct kernel: Hp rows of Wp pixels per channel, enough for every
    output row and every LANES-block of pixels, and off[k], where window position k = (a·f + b)·C + c starts."""
    cdef Py_ssize_t Hp, Wp, owp, top, left, f, s
    cdef Py_ssize_t* off

    def __init__(self, Py_ssize_t C, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t f, Py_ssize_t s, Py_ssize_t top,
                 Py_ssize_t left):
        cdef Py_ssize_t a, b, c
        self.owp, self.f, self.s, self.top, self.left = lanes_up(ow), f, s, top, left
        self.Hp, self.Wp = (oh - 1) * s + f, (self.owp - 1) * s + f
        self.off = <Py_ssize_t*>malloc(max(f * f * C, 1) * sizeof(Py_ssize_t))
        if self.off == NULL:
            raise MemoryError("conv2d: no memory for the direct kernel's window offsets")
        for a in range(f):
            for b in range(f):
                for c in range(C):
                    self.off[(a * f + b) * C + c] = (c * self.Hp + a) * self.Wp + b

    def __dealloc__(self):
        free(self.off)


cdef void to_channel_major(const real[:, :, :, ::1] x, Py_ssize_t i, DirectGeometry geo, real* xT) noexcept nogil:
    """xT[c, y, z] = x[i, y − top, z − left, c], 0 outside the image."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], C = x.shape[3], y, z, c, plane = geo.Hp * geo.Wp
    memset(xT, 0, C * plane * sizeof(real))
    for y in range(max(geo.top, 0), min(H + geo.top, geo.Hp)):
        for z in range(max(geo.left, 0), min(W + geo.left, geo.Wp)):
            for c in range(C):
                xT[c * plane + y * geo.Wp + z] = x[i, y - geo.top, z - geo.left, c]


def conv_direct_forward(const real[:, :, :, ::1] x, const real[:, ::1] W2, const real[::1] b, DirectGeometry geo,
                        real[:, :, :, ::1] z):
    """Z[i, h, w, :] = b + Σ_k im2col(x)[(i, h, w), k]·W₂[k, :], one image at a time held channel-major and
    padded (so a window position is a fixed offset) and one output row at a time; b all zeros for no bias."""
    cdef Py_ssize_t m = z.shape[0], oh = z.shape[1], ow = z.shape[2], n_C = z.shape[3], K = W2.shape[0]
    cdef Py_ssize_t owp = geo.owp, C = x.shape[3], i, h, w, c
    cdef Py_ssize_t* off = geo.off
    cdef real* xT = NULL
    cdef real* outT = NULL
    cdef int failed = 0
    cdef int* out_of_memory = &failed
    if m == 0 or oh == 0 or ow == 0 or n_C == 0:
        return
    with nogil, parallel(use_threads_if=threaded(m, m * oh * ow * K * n_C)):
        xT = <real*>malloc((C * geo.Hp * geo.Wp + n_C * owp) * sizeof(real))
        outT = xT + C * geo.Hp * geo.Wp
        if xT == NULL:
            out_of_memory[0] = 1
        for i in prange(m, schedule="static"):
            if xT == NULL:
                continue
            to_channel_major(x, i, geo, xT)
            for h in range(oh):
                if real is float:
                    direct_row_forward_float(xT + h * geo.s * geo.Wp, off, geo.s, &W2[0, 0], &b[0], outT, K, n_C, owp)
                else:
                    direct_row_forward_double(xT + h * geo.s * geo.Wp, off, geo.s, &W2[0, 0], &b[0], outT, K, n_C,
                                              owp)
                for w in range(ow):
                    for c in range(n_C):
                        z[i, h, w, c] = outT[c * owp + w]
        free(xT)
    if failed:
        raise MemoryError("conv2d: no memory for the direct kernel's image buffers")


def conv_direct_backward(const real[:, :, :, ::1] x, const real[:, ::1] W2, const real[:, :, :, ::1] g,
                         DirectGeometry geo, real[:, :, :, ::1] dx, real[:, ::1] dW2, real[::1] db):
    """dx = Σ over output pixels of G·W₂ᵀ added back to the pixels read, dW₂ = Σ im2col(x)ᵀ·G, db = Σ G, as
    conv_direct_forward; each of dx, dW2, db may be None (not computed), the others are overwritten. The
    weight gradient sums per thread and per lane, and adds the partial sums once at the end."""
    cdef Py_ssize_t m = g.shape[0], oh = g.shape[1], ow = g.shape[2], n_C = g.shape[3], K = W2.shape[0]
    cdef Py_ssize_t owp = geo.owp, C = x.shape[3], plane = geo.Hp * geo.Wp, i, h, w, c, y, z, k = 0, l = 0
    cdef bint want_dx = dx is not None, want_dW = dW2 is not None, want_db = db is not None
    cdef Py_ssize_t* off = geo.off
    cdef real* xT = NULL
    cdef real* dxT = NULL
    cdef real* gT = NULL
    cdef real* lanes = NULL
    cdef real* sums = NULL
    cdef real total = 0
    cdef int failed = 0
    cdef int* out_of_memory = &failed
    clear_grads(dx, dW2, db)
    if m == 0 or oh == 0 or ow == 0 or n_C == 0:
        return
    with nogil, parallel(use_threads_if=threaded(m, m * oh * ow * K * n_C)):
        # xT | dxT (C·Hp·Wp each) | gT (n_C·oh·owp: the image's G, channel-major) | lanes (K·n_C·LANES) | sums (n_C);
        # calloc: gT's lanes past n_W_out stay 0
        xT = <real*>calloc(2 * C * plane + n_C * oh * owp + K * n_C * LANES + n_C, sizeof(real))
        dxT = xT + C * plane
        gT = dxT + C * plane
        lanes = gT + n_C * oh * owp
        sums = lanes + K * n_C * LANES
        if xT == NULL:
            out_of_memory[0] = 1
        for i in prange(m, schedule="static"):
            if xT == NULL:
                continue
            for h in range(oh):
                for w in range(ow):
                    for c in range(n_C):
                        gT[(c * oh + h) * owp + w] = g[i, h, w, c]
                        sums[c] += g[i, h, w, c]
            if want_dW:
                to_channel_major(x, i, geo, xT)
                if real is float:
                    direct_image_weight_grad_float(xT, geo.Wp, off, geo.s, gT, lanes, K, n_C, oh, ow, owp)
                else:
                    direct_image_weight_grad_double(xT, geo.Wp, off, geo.s, gT, lanes, K, n_C, oh, ow, owp)
            if want_dx:
                memset(dxT, 0, C * plane * sizeof(real))
                for h in range(oh):
                    if real is float:
                        direct_row_input_grad_float(gT + h * owp, oh * owp, &W2[0, 0], off, geo.s,
                                                    dxT + h * geo.s * geo.Wp, K, n_C, owp)
                    else:
                        direct_row_input_grad_double(gT + h * owp, oh * owp, &W2[0, 0], off, geo.s,
                                                     dxT + h * geo.s * geo.Wp, K, n_C, owp)
                for y in range(dx.shape[1]):
                    for z in range(dx.shape[2]):
                        for c in range(C):
                            if y + geo.top < geo.Hp and z + geo.left < geo.Wp:
                                dx[i, y, z, c] = dxT[c * plane + (y + geo.top) * geo.Wp + z + geo.left]
        with gil:       # once per thread: its partial sums into the shared results
            for k in range(K * n_C if want_dW and xT != NULL else 0):
                total = 0
                for l in range(LANES):
                    total = total + lanes[k * LANES + l]
                (&dW2[0, 0])[k] += total
            for l in range(n_C if want_db and xT != NULL else 0):
                db[l] += sums[l]
        free(xT)
    if failed:
        raise MemoryError("conv2d: no memory for the direct kernel's image buffers")


# ---- pooling ------------------------------------------------------------------------------------------------
def max_pool_forward(const real[:, :, :, ::1] x, Py_ssize_t f, Py_ssize_t stride, Py_ssize_t top,
                     Py_ssize_t left, real[:, :, :, ::1] out, int32_t[:, :, :, ::1] argmax):
    """out[i, h, w, c] = max of x[i, y, z, c] over the window's pixels inside the image; argmax holds the
    first maximum's y·n_W + z (the padding never wins, as PyTorch's −∞ padding)."""
    cdef Py_ssize_t m = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t oh = out.shape[1], ow = out.shape[2]
    cdef Py_ssize_t i, h, w, a, b, c, y, z, y0, z0
    cdef real* best
    cdef int32_t* where
    cdef const real* src
    if m == 0 or C == 0:
        return
    for i in prange(m, nogil=True, schedule="static", use_threads_if=threaded(m, m * oh * ow * C * f * f)):
        for h in range(oh):
            for w in range(ow):
                best = &out[i, h, w, 0]
                where = &argmax[i, h, w, 0]
                y0, z0 = h * stride - top, w * stride - left
                y, z = y0 + first_inside(y0), z0 + first_inside(z0)     # the op's check keeps one inside
                src = &x[i, y, z, 0]
                for c in range(C):
                    best[c] = src[c]
                    where[c] = <int32_t>(y * W + z)
                for a in range(first_inside(y0), end_inside(y0, f, H)):
                    y = y0 + a
                    for b in range(first_inside(z0), end_inside(z0, f, W)):
                        z = z0 + b
                        max_update(&x[i, y, z, 0], best, where, <int32_t>(y * W + z), C)


def max_pool_backward(const real[:, :, :, ::1] g, const int32_t[:, :, :, ::1] argmax, real[:, :, :, ::1] dx):
    """dx[i, y, z, c] = Σ g[i, h, w, c] over the windows whose maximum was x[i, y, z, c]."""
    cdef Py_ssize_t m = dx.shape[0], H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t oh = g.shape[1], ow = g.shape[2]
    cdef Py_ssize_t i, h, w, c, k
    cdef real* image
    if m == 0 or C == 0:
        return
    for i in prange(m, nogil=True, schedule="static", use_threads_if=threaded(m, m * H * W * C)):
        image = &dx[i, 0, 0, 0]
        memset(image, 0, H * W * C * sizeof(real))
        for h in range(oh):
            for w in range(ow):
                for c in range(C):
                    k = argmax[i, h, w, c]
                    if k >= 0:
                        image[k * C + c] += g[i, h, w, c]


def avg_pool_forward(const real[:, :, :, ::1] x, Py_ssize_t f, Py_ssize_t stride, Py_ssize_t top,
                     Py_ssize_t left, real[:, :, :, ::1] out):
    """out[i, h, w, c] = 1/f² Σ x[i, y, z, c] over the window (the padding counts as zeros)."""
    cdef Py_ssize_t m = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t oh = out.shape[1], ow = out.shape[2]
    cdef Py_ssize_t i, h, w, a, b, c, y, z, y0, z0
    cdef real scale = <real>1.0 / <real>(f * f)
    cdef real* acc
    cdef const real* src
    if m == 0 or C == 0:
        return
    for i in prange(m, nogil=True, schedule="static", use_threads_if=threaded(m, m * oh * ow * C * f * f)):
        for h in range(oh):
            for w in range(ow):
                acc = &out[i, h, w, 0]
                memset(acc, 0, C * sizeof(real))
                y0, z0 = h * stride - top, w * stride - left
                for a in range(first_inside(y0), end_inside(y0, f, H)):
                    y = y0 + a
                    for b in range(first_inside(z0), end_inside(z0, f, W)):
                        z = z0 + b
                        src = &x[i, y, z, 0]
                        for c in range(C):
                            acc[c] += src[c]
                for c in range(C):
                    acc[c] = acc[c] * scale


def avg_pool_backward(const real[:, :, :, ::1] g, Py_ssize_t f, Py_ssize_t stride, Py_ssize_t top,
                      Py_ssize_t left, real[:, :, :, ::1] dx):
    """dx[i, y, z, c] = 1/f² Σ g[i, h, w, c] over the windows that hold pixel (y, z)."""
    cdef Py_ssize_t m = dx.shape[0], H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t oh = g.shape[1], ow = g.shape[2]
    cdef Py_ssize_t i, h, w, a, b, c, y, z, y0, z0
    cdef real scale = <real>1.0 / <real>(f * f)
    cdef const real* src
    cdef real* dst
    if m == 0 or C == 0:
        return
    for i in prange(m, nogil=True, schedule="static", use_threads_if=threaded(m, m * oh * ow * C * f * f)):
        memset(&dx[i, 0, 0, 0], 0, H * W * C * sizeof(real))
        for h in range(oh):
            for w in range(ow):
                src = &g[i, h, w, 0]
                y0, z0 = h * stride - top, w * stride - left
                for a in range(first_inside(y0), end_inside(y0, f, H)):
                    y = y0 + a
                    for b in range(first_inside(z0), end_inside(z0, f, W)):
                        z = z0 + b
                        dst = &dx[i, y, z, 0]
                        for c in range(C):
                            dst[c] += src[c] * scale
