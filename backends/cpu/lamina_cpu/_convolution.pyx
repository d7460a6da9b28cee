# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Convolution and pooling (§4.1–4.4) on C-contiguous NHWC images (m, n_H, n_W, C).

Each function loops over the images of the batch; an image's outputs (or, in the backward passes,
its input gradient) are written by one thread only, so the images run on OpenMP threads with no
atomics once the pass touches PARALLEL_MIN elements (below that one thread: see _vecmath.pxd).
The convolution itself is im2col here and one BLAS matrix product in NumPy; col2im scatter-adds
the columns' gradient back. Padding is (top, left) here; the bottom/right padding only shows in
the output size the caller chose.
"""
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.string cimport memcpy, memset

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


def im2col(const real[:, :, :, ::1] x, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t f, Py_ssize_t stride,
           Py_ssize_t top, Py_ssize_t left, real[:, ::1] cols):
    """cols[(i·n_H_out + h)·n_W_out + w, (a·f + b)·C + c] = x_pad[i, h·s + a, w·s + b, c] (0 in the padding)."""
    cdef Py_ssize_t m = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t width = f * f * C
    if m == 0 or width == 0:
        return
    cdef Py_ssize_t i, h, w, a, c, row, y, y0, z0, lo, hi
    cdef real* dst
    cdef const real* src
    for i in prange(m, nogil=True, schedule="static", use_threads_if=threaded(m, cols.shape[0] * width)):
        for h in range(oh):
            for w in range(ow):
                row = (i * oh + h) * ow + w
                y0, z0 = h * stride - top, w * stride - left
                lo, hi = first_inside(z0), end_inside(z0, f, W)
                for a in range(f):
                    y = y0 + a
                    dst = &cols[row, a * f * C]
                    if y < 0 or y >= H or lo >= hi:
                        memset(dst, 0, f * C * sizeof(real))
                        continue
                    # the window's pixels inside the row are contiguous in x (NHWC): one run, copied by a
                    # plain loop (runs are short when C is: a memcpy call per run would cost more)
                    src = &x[i, y, z0, 0]
                    for c in range(lo * C):
                        dst[c] = 0
                    for c in range(lo * C, hi * C):
                        dst[c] = src[c]
                    for c in range(hi * C, f * C):
                        dst[c] = 0


def col2im(const real[:, ::1] dcols, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t f, Py_ssize_t stride,
           Py_ssize_t top, Py_ssize_t left, real[:, :, :, ::1] dx):
    """dx[i, y, z, c] = Σ of dcols over every window position that read x[i, y, z, c] (im2col's adjoint)."""
    cdef Py_ssize_t m = dx.shape[0], H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t i, h, w, a, c, row, y0, z0, lo, hi
    cdef const real* src
    cdef real* dst
    if m == 0 or C == 0:
        return
    for i in prange(m, nogil=True, schedule="static", use_threads_if=threaded(m, dcols.shape[0] * dcols.shape[1])):
        memset(&dx[i, 0, 0, 0], 0, H * W * C * sizeof(real))
        for h in range(oh):
            for w in range(ow):
                row = (i * oh + h) * ow + w
                y0, z0 = h * stride - top, w * stride - left
                lo, hi = first_inside(z0), end_inside(z0, f, W)
                for a in range(first_inside(y0), end_inside(y0, f, H)):
                    src = &dcols[row, (a * f + lo) * C]
                    dst = &dx[i, y0 + a, z0 + lo, 0]
                    for c in range((hi - lo) * C):      # contiguous in both (NHWC)
                        dst[c] += src[c]


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
