# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
"""Softmax, log-softmax and the fused softmax cross-entropy over the rows of C-contiguous
(m, n) arrays, forward and backward.

Row reductions keep LANES partial results side by side, so that GCC vectorizes them
without being allowed to reassociate floating-point sums. Rows are shared among OpenMP
threads once an array holds PARALLEL_MIN elements. The cross-entropy forward stores each row's
shift_i = max_j z_ij and log_norm_i = log Σ_j e^(z_ij - shift_i), from which its backward
recomputes softmax(z_i)_j = e^((z_ij - shift_i) - log_norm_i) in the pass that writes the gradient.
"""
from cython.parallel cimport prange
from libc.math cimport log

from ._vecmath cimport PARALLEL_MIN, exp_, real

cdef enum:
    LANES = 8


cdef inline real row_max(const real* x, Py_ssize_t n) noexcept nogil:
    cdef real lane[LANES]
    cdef real best = x[0]
    cdef Py_ssize_t j, k, block, full = n - n % LANES
    for k in range(LANES):
        lane[k] = x[0]
    for block in range(full // LANES):
        j = block * LANES
        for k in range(LANES):
            lane[k] = x[j + k] if x[j + k] > lane[k] else lane[k]
    for k in range(LANES):
        best = lane[k] if lane[k] > best else best
    for j in range(full, n):
        best = x[j] if x[j] > best else best
    return best


cdef enum Term:
    VALUE           # a_j
    PRODUCT         # a_j·b_j
    EXP_SHIFTED     # e^(a_j - p)
    WEIGHTED_GAP    # b_j·(q - (a_j - p)): with p = shift, q = log_norm, -b_j·log softmax(a)_j


cdef inline real term(Term kind, real a, real b, real p, real q) noexcept nogil:
    if kind == PRODUCT:
        return a * b
    if kind == EXP_SHIFTED:
        return exp_(a - p)
    if kind == WEIGHTED_GAP:
        return b * (q - (a - p))
    return a


cdef inline real row_total(Term kind, const real* a, const real* b, Py_ssize_t n, real p, real q) noexcept nogil:
    """Σ_j term(kind, a_j, b_j, p, q). `kind` is a constant at every call, so once inlined
    the branches in `term` fold away and the lane loop vectorizes."""
    cdef real lane[LANES]
    cdef real total = 0
    cdef Py_ssize_t j, k, block, full = n - n % LANES
    for k in range(LANES):
        lane[k] = 0
    for block in range(full // LANES):
        j = block * LANES
        for k in range(LANES):
            lane[k] += term(kind, a[j + k], b[j + k], p, q)
    for k in range(LANES):
        total += lane[k]
    for j in range(full, n):
        total += term(kind, a[j], b[j], p, q)
    return total


cdef inline real row_log_norm(const real* z, Py_ssize_t n, real shift) noexcept nogil:
    """log Σ_j e^(z_j - shift); with shift = max_j z_j, log softmax(z)_j = (z_j - shift) - this."""
    return <real>log(row_total(EXP_SHIFTED, z, z, n, shift, 0))


def softmax_forward(const real[:, ::1] x, real[:, ::1] out):
    """out_ij = e^(x_ij - max_i) / Σ_k e^(x_ik - max_i)."""
    cdef Py_ssize_t i, j, m = x.shape[0], n = x.shape[1]
    cdef real top, scale
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        top = row_max(&x[i, 0], n)
        for j in range(n):
            out[i, j] = exp_(x[i, j] - top)
        scale = 1 / row_total(VALUE, &out[i, 0], &out[i, 0], n, 0, 0)
        for j in range(n):
            out[i, j] = out[i, j] * scale


def softmax_backward(const real[:, ::1] y, const real[:, ::1] g, real[:, ::1] dx):
    """dx_ij = y_ij·(g_ij - Σ_k g_ik·y_ik) with y = softmax(x)."""
    cdef Py_ssize_t i, j, m = y.shape[0], n = y.shape[1]
    cdef real dot
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        dot = row_total(PRODUCT, &g[i, 0], &y[i, 0], n, 0, 0)
        for j in range(n):
            dx[i, j] = y[i, j] * (g[i, j] - dot)


def log_softmax_forward(const real[:, ::1] x, real[:, ::1] out):
    """out_ij = (x_ij - max_i) - log Σ_k e^(x_ik - max_i)."""
    cdef Py_ssize_t i, j, m = x.shape[0], n = x.shape[1]
    cdef real top, log_norm
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        top = row_max(&x[i, 0], n)
        log_norm = row_log_norm(&x[i, 0], n, top)
        for j in range(n):
            out[i, j] = (x[i, j] - top) - log_norm


def log_softmax_backward(const real[:, ::1] y, const real[:, ::1] g, real[:, ::1] dx):
    """dx_ij = g_ij - e^(y_ij)·Σ_k g_ik with y = log softmax(x)."""
    cdef Py_ssize_t i, j, m = y.shape[0], n = y.shape[1]
    cdef real total
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        total = row_total(VALUE, &g[i, 0], &g[i, 0], n, 0, 0)
        for j in range(n):
            dx[i, j] = g[i, j] - exp_(y[i, j]) * total


def cross_entropy_index_forward(const real[:, ::1] z, const long long[::1] labels, real[::1] shift,
                                real[::1] log_norm):
    """Σ_i -log softmax(z_i)[labels_i], the summed loss for integer labels; fills shift and log_norm."""
    cdef Py_ssize_t i, m = z.shape[0], n = z.shape[1]
    cdef double total = 0
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        shift[i] = row_max(&z[i, 0], n)
        log_norm[i] = row_log_norm(&z[i, 0], n, shift[i])
        total += log_norm[i] - (z[i, labels[i]] - shift[i])
    return total


def cross_entropy_index_backward(const real[:, ::1] z, const long long[::1] labels, const real[::1] shift,
                                 const real[::1] log_norm, double scale, real[:, ::1] dz):
    """dz_ij = scale·(softmax(z_i)_j - [j = labels_i])."""
    cdef Py_ssize_t i, j, m = z.shape[0], n = z.shape[1]
    cdef real c = <real>scale, top, norm
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        top, norm = shift[i], log_norm[i]
        for j in range(n):
            dz[i, j] = c * exp_((z[i, j] - top) - norm)
        dz[i, labels[i]] -= c


def cross_entropy_dense_forward(const real[:, ::1] z, const real[:, ::1] y, real[::1] shift, real[::1] log_norm,
                                real[::1] y_sum):
    """Σ_i Σ_j -y_ij·log softmax(z_i)_j, the summed loss for one-hot or soft labels; fills shift, log_norm
    and y_sum_i = Σ_j y_ij."""
    cdef Py_ssize_t i, m = z.shape[0], n = z.shape[1]
    cdef double total = 0
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        shift[i] = row_max(&z[i, 0], n)
        log_norm[i] = row_log_norm(&z[i, 0], n, shift[i])
        y_sum[i] = row_total(VALUE, &y[i, 0], &y[i, 0], n, 0, 0)
        total += row_total(WEIGHTED_GAP, &z[i, 0], &y[i, 0], n, shift[i], log_norm[i])
    return total


def cross_entropy_dense_backward(const real[:, ::1] z, const real[:, ::1] y, const real[::1] shift,
                                 const real[::1] log_norm, const real[::1] y_sum, double scale,
                                 real[:, ::1] dz, real[:, ::1] dy):
    """dz_ij = scale·(softmax(z_i)_j·Σ_k y_ik - y_ij) and, unless dy is None, dy_ij = -scale·log softmax(z_i)_j."""
    cdef Py_ssize_t i, j, m = z.shape[0], n = z.shape[1]
    cdef real c = <real>scale, top, norm, weight
    cdef bint label_grad = dy is not None
    for i in prange(m, nogil=True, schedule="static", use_threads_if=m * n >= PARALLEL_MIN):
        top, norm, weight = shift[i], log_norm[i], y_sum[i]
        for j in range(n):
            dz[i, j] = c * (exp_((z[i, j] - top) - norm) * weight - y[i, j])
        if label_grad:
            for j in range(n):
                dy[i, j] = -c * ((z[i, j] - top) - norm)
