# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno --param=vect-max-version-for-alias-checks=64
"""Whole-sequence recurrences (§5.1–5.6): the time loops of the simple RNN, GRU and LSTM, forward and
backward (BPTT), with the GIL released; and the embedding's scatter-add.

Everything is time-major here: XW (T, m, G·n) holds x<t>·W_x + b for every step (one big matrix product the
caller made), the states H, C (T + 1, m, n) with H[0] = a<0>, the activated gates (T, m, G·n). Each step is
one BLAS product for all gates (a<t-1>·W_a into the step's slice of XW) and one fused loop for the gate
nonlinearities; the backward computes dZ (T, m, G·n), the gradient of the gates' pre-activations, whose
products with X and H the caller makes as single large GEMMs after the loop. mask[i, t] = 0 (a padded step)
carries the states over, writes a zero output and leaves dZ[t, i] = 0, so the step gets no gradient.

BLAS is SciPy's (scipy.linalg.cython_blas), reached through the function pointers that module exports, so
nothing of SciPy is needed to build this file. Row-major C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ.
"""
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset

from ._vecmath cimport exp_, real, tanh_

ctypedef void (*sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*, float*, float*,
                         int*) noexcept nogil
ctypedef void (*dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*, double*,
                         double*, int*) noexcept nogil

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL


cdef void* _blas_pointer(str name) except NULL:
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__[name]
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


_sgemm = <sgemm_t>_blas_pointer("sgemm")
_dgemm = <dgemm_t>_blas_pointer("dgemm")


cdef inline void gemm(bint trans_a, bint trans_b, int M, int N, int K, real alpha, const real* A, int lda,
                      const real* B, int ldb, real beta, real* C, int ldc) noexcept nogil:
    """Row-major C (M×N, ldc) = alpha·op(A)·op(B) + beta·C, op(A) M×K, op(B) K×N."""
    cdef char ta = b"T" if trans_a else b"N"
    cdef char tb = b"T" if trans_b else b"N"
    if M == 0 or N == 0:
        return
    if real is float:
        _sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        _dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


cdef inline real sigmoid_(real z) noexcept nogil:
    """σ(z) = 1/(1 + e^(−z)), branch-free so the gate loops vectorize (exp_ saturates instead of overflowing)."""
    cdef real one = 1
    return one / (one + exp_(-z))


cdef inline void gates_lstm(real* z, const real* cp, const real* p0, const real* p1, const real* p2, real* c,
                            real* h, Py_ssize_t n) noexcept nogil:
    """One row of an LSTM step, z = [z_u, z_f, z_o, z_c] -> [Γ_u, Γ_f, Γ_o, c̃], c, h. One simple loop per gate
    (GCC vectorizes each; one loop over everything it leaves scalar)."""
    cdef Py_ssize_t j
    cdef real* zf = z + n
    cdef real* zo = z + 2 * n
    cdef real* zc = z + 3 * n
    for j in range(n):
        z[j] = sigmoid_(z[j] + p0[j] * cp[j])
    for j in range(n):
        zf[j] = sigmoid_(zf[j] + p1[j] * cp[j])
    for j in range(n):
        zo[j] = sigmoid_(zo[j] + p2[j] * cp[j])
    for j in range(n):
        zc[j] = tanh_(zc[j])
    for j in range(n):
        c[j] = z[j] * zc[j] + zf[j] * cp[j]
    for j in range(n):
        h[j] = zo[j] * tanh_(c[j])


cdef inline void grads_lstm(const real* gates, const real* cp, const real* c, const real* gy, const real* p0,
                            const real* p1, const real* p2, real* dh, real* dc, real* dz, Py_ssize_t n) noexcept nogil:
    """One row of an LSTM step backward: with g = dh + dY<t>, dc<t> = dc + g·Γ_o·(1 − tanh²c<t>):
    dz_o = g·tanh(c<t>)·Γ_o(1 − Γ_o), dz_u = dc<t>·c̃·Γ_u(1 − Γ_u), dz_f = dc<t>·c<t-1>·Γ_f(1 − Γ_f),
    dz_c = dc<t>·Γ_u·(1 − c̃²); dc ← dc<t>·Γ_f + Σ_k dz_k·P_k; dh ← 0 (the caller adds dZ·W_aᵀ)."""
    cdef real one = 1
    cdef Py_ssize_t j
    cdef const real* u = gates
    cdef const real* f = gates + n
    cdef const real* o = gates + 2 * n
    cdef const real* cc = gates + 3 * n
    cdef real* dzf = dz + n
    cdef real* dzo = dz + 2 * n
    cdef real* dzc = dz + 3 * n
    cdef real g, tc
    for j in range(n):
        g = dh[j] + gy[j]
        tc = tanh_(c[j])
        dzo[j] = g * tc * o[j] * (one - o[j])
        dc[j] = dc[j] + g * o[j] * (one - tc * tc)
    for j in range(n):
        dz[j] = dc[j] * cc[j] * u[j] * (one - u[j])
        dzf[j] = dc[j] * cp[j] * f[j] * (one - f[j])
        dzc[j] = dc[j] * u[j] * (one - cc[j] * cc[j])
    for j in range(n):
        dc[j] = dc[j] * f[j] + dz[j] * p0[j] + dzf[j] * p1[j] + dzo[j] * p2[j]
        dh[j] = 0


cdef inline void gates_gru_after(real* z, const real* za, const real* hp, real* h, real* e, Py_ssize_t n) noexcept nogil:
    """One row of a reset_after GRU step: z = x·W_x + b_x, za = a<t-1>·W_a + b_a -> z = [Γ_r, Γ_u, c̃],
    c̃ = tanh(z_c + Γ_r·za_c), h = Γ_u·c̃ + (1 − Γ_u)·a<t-1>; e = za_c (for the backward)."""
    cdef real one = 1
    cdef Py_ssize_t j
    cdef real* zu = z + n
    cdef real* zc = z + 2 * n
    for j in range(2 * n):
        z[j] = sigmoid_(z[j] + za[j])
    for j in range(n):
        e[j] = za[2 * n + j]
        zc[j] = tanh_(zc[j] + z[j] * e[j])
    for j in range(n):
        h[j] = zu[j] * zc[j] + (one - zu[j]) * hp[j]


cdef inline void grads_gru(const real* gates, const real* hp, const real* gy, real* dh, real* dz,
                           Py_ssize_t n) noexcept nogil:
    """One row of a GRU step backward, with g = dh + dY<t>: dz_u = g·(c̃ − a<t-1>)·Γ_u(1 − Γ_u),
    dz_c = g·Γ_u·(1 − c̃²) (w.r.t. c̃'s pre-activation), dh ← g·(1 − Γ_u) (the direct path)."""
    cdef real one = 1
    cdef Py_ssize_t j
    cdef const real* u = gates + n
    cdef const real* c = gates + 2 * n
    cdef real* dzu = dz + n
    cdef real* dzc = dz + 2 * n
    cdef real g
    for j in range(n):
        g = dh[j] + gy[j]
        dzu[j] = g * (c[j] - hp[j]) * u[j] * (one - u[j])
        dzc[j] = g * u[j] * (one - c[j] * c[j])
        dh[j] = g * (one - u[j])


cdef inline bint real_step(const uint8_t* mask, Py_ssize_t T, Py_ssize_t i, Py_ssize_t t) noexcept nogil:
    return mask == NULL or mask[i * T + t] != 0


cdef inline void emit_row(bint real_row, real* h, const real* h_prev, real* y, Py_ssize_t n) noexcept nogil:
    """The end of a step for one sequence: at a padded step a<t> = a<t-1> and the output y<t> is 0; at a real
    step y<t> = a<t> (y NULL: no outputs kept)."""
    if not real_row:
        memcpy(h, h_prev, n * sizeof(real))
        if y != NULL:
            memset(y, 0, n * sizeof(real))
    elif y != NULL:
        memcpy(y, h, n * sizeof(real))


# ---- simple RNN ------------------------------------------------------------------------------------------
def rnn_forward(real[:, :, ::1] XW, const real[:, ::1] W_aa, real[:, :, ::1] H, const uint8_t[:, ::1] mask,
                real[:, :, :] Y):
    """a<t> = tanh(XW[t] + a<t-1>·W_aa) into H[t + 1] (H[0] = a<0> given; XW is overwritten); Y (m, T, n), if given,
    gets a<t> at real steps and 0 at padded ones."""
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], n = XW.shape[2], t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None
    cdef real* z
    cdef real* h
    with nogil:
        for t in range(T):
            z = &XW[t, 0, 0]
            gemm(False, False, m, n, n, 1, &H[t, 0, 0], n, &W_aa[0, 0], n, 1, z, n)
            for i in range(m):
                h = &H[t + 1, i, 0]
                for j in range(n):
                    h[j] = tanh_(z[i * n + j])
                emit_row(real_step(mk, T, i, t), h, &H[t, i, 0], &Y[i, t, 0] if has_y else NULL, n)


def rnn_backward(const real[:, :, ::1] H, const real[:, ::1] W_aa, const uint8_t[:, ::1] mask,
                 const real[:, :, :] dY, real[:, ::1] dh, real[:, :, ::1] dZ, const real[::1] zeros):
    """BPTT: dZ[t] = (dh + dY<t>)·(1 − a<t>²), dh ← dZ[t]·W_aaᵀ at real steps (carried at padded ones);
    dh enters as the final state's gradient and leaves as a<0>'s; zeros (n,) stands for dY<t> when dY is None."""
    cdef real one = 1
    cdef Py_ssize_t T = dZ.shape[0], m = dZ.shape[1], n = dZ.shape[2], t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None
    cdef real g
    cdef real* dz
    cdef real* d
    cdef const real* ht
    cdef const real* gy = &zeros[0]
    with nogil:
        for t in range(T - 1, -1, -1):
            for i in range(m):
                dz, d = &dZ[t, i, 0], &dh[i, 0]
                if real_step(mk, T, i, t):
                    if has_y:
                        gy = &dY[i, t, 0]
                    ht = &H[t + 1, i, 0]
                    for j in range(n):
                        g = d[j] + gy[j]
                        dz[j] = g * (one - ht[j] * ht[j])
                        d[j] = 0
                else:
                    memset(dz, 0, n * sizeof(real))
            gemm(False, True, m, n, n, 1, &dZ[t, 0, 0], n, &W_aa[0, 0], n, 1, &dh[0, 0], n)


# ---- GRU -------------------------------------------------------------------------------------------------
def gru_forward(real[:, :, ::1] XW, const real[:, ::1] W_a, const real[:] b_a, real[:, :, ::1] H,
                real[:, :, ::1] extra, bint reset_after, const uint8_t[:, ::1] mask, real[:, :, :] Y,
                real[:, ::1] za):
    """Γ_r, Γ_u = σ(XW[t] + a<t-1>·W_a (+ b_a)), a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>. reset_after: c̃ = tanh(XW_c +
    Γ_r·(a<t-1>·W_ac + b_ac)), extra[t] = a<t-1>·W_ac + b_ac; else (the seed's, b_a already in XW) c̃ = tanh(XW_c +
    (Γ_r·a<t-1>)·W_ac), extra[t] = Γ_r·a<t-1>. XW[t] becomes [Γ_r, Γ_u, c̃]; za (m, 3n) is scratch."""
    cdef real one = 1
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], G = XW.shape[2], n = G // 3, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None
    cdef real* z
    cdef real* hp
    cdef real* h
    cdef real* e
    cdef real* zu
    cdef real* zc
    with nogil:
        for t in range(T):
            z = &XW[t, 0, 0]
            if reset_after:
                for i in range(m):
                    memcpy(&za[i, 0], &b_a[0], G * sizeof(real))
                gemm(False, False, m, G, n, 1, &H[t, 0, 0], n, &W_a[0, 0], G, 1, &za[0, 0], G)
                for i in range(m):
                    gates_gru_after(&z[i * G], &za[i, 0], &H[t, i, 0], &H[t + 1, i, 0], &extra[t, i, 0], n)
            else:
                gemm(False, False, m, 2 * n, n, 1, &H[t, 0, 0], n, &W_a[0, 0], G, 1, z, G)
                for i in range(m):
                    hp, e = &H[t, i, 0], &extra[t, i, 0]
                    for j in range(2 * n):
                        z[i * G + j] = sigmoid_(z[i * G + j])
                    for j in range(n):
                        e[j] = z[i * G + j] * hp[j]
                gemm(False, False, m, n, n, 1, &extra[t, 0, 0], n, &W_a[0, 2 * n], G, 1, &z[2 * n], G)
                for i in range(m):
                    hp, h, zu, zc = &H[t, i, 0], &H[t + 1, i, 0], &z[i * G + n], &z[i * G + 2 * n]
                    for j in range(n):
                        zc[j] = tanh_(zc[j])
                    for j in range(n):
                        h[j] = zu[j] * zc[j] + (one - zu[j]) * hp[j]
            for i in range(m):
                emit_row(real_step(mk, T, i, t), &H[t + 1, i, 0], &H[t, i, 0], &Y[i, t, 0] if has_y else NULL, n)


def gru_backward(const real[:, :, ::1] gates, const real[:, :, ::1] H, const real[:, :, ::1] extra,
                 const real[:, ::1] W_a, bint reset_after, const uint8_t[:, ::1] mask, const real[:, :, :] dY,
                 real[:, ::1] dh, real[:, :, ::1] dZx, real[:, :, ::1] dZa, real[:, ::1] scratch,
                 const real[::1] zeros):
    """BPTT of gru_forward. dZx[t] = ∂L/∂(XW[t]) = [dz_r, dz_u, dz_c]; dZa[t] = ∂L/∂(a<t-1>·W_a + b_a) for
    reset_after ([dz_r, dz_u, Γ_r·dz_c]); for the seed's GRU dZa = dZx (dz_c then pairs with extra = Γ_r·a<t-1>).
    dh enters as the final state's gradient and leaves as a<0>'s; scratch (m, n); zeros (n,) stands for dY<t> when
    dY is None."""
    cdef real one = 1
    cdef Py_ssize_t T = gates.shape[0], m = gates.shape[1], G = gates.shape[2], n = G // 3, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None
    cdef real r
    cdef real* dx
    cdef real* da
    cdef real* d
    cdef real* sc
    cdef const real* gt
    cdef const real* hp_
    cdef const real* e
    cdef const real* gy = &zeros[0]
    with nogil:
        for t in range(T - 1, -1, -1):
            for i in range(m):
                dx, da, d = &dZx[t, i, 0], &dZa[t, i, 0], &dh[i, 0]
                if not real_step(mk, T, i, t):
                    memset(dx, 0, G * sizeof(real))
                    if reset_after:
                        memset(da, 0, G * sizeof(real))
                    continue
                if has_y:
                    gy = &dY[i, t, 0]
                gt, hp_, e = &gates[t, i, 0], &H[t, i, 0], &extra[t, i, 0]
                grads_gru(gt, hp_, gy, d, dx, n)
                if reset_after:
                    for j in range(n):
                        dx[j] = dx[2 * n + j] * e[j] * gt[j] * (one - gt[j])
                    for j in range(2 * n):
                        da[j] = dx[j]
                    for j in range(n):
                        da[2 * n + j] = dx[2 * n + j] * gt[j]
            if reset_after:
                gemm(False, True, m, n, G, 1, &dZa[t, 0, 0], G, &W_a[0, 0], G, 1, &dh[0, 0], n)
                continue
            # the seed's GRU: d(Γ_r·a<t-1>) = dz_c·W_acᵀ, then Γ_r's gradient, then the gates' product
            gemm(False, True, m, n, n, 1, &dZx[t, 0, 2 * n], G, &W_a[0, 2 * n], G, 0, &scratch[0, 0], n)
            for i in range(m):
                if not real_step(mk, T, i, t):
                    continue
                dx, d, sc, gt, hp_ = &dZx[t, i, 0], &dh[i, 0], &scratch[i, 0], &gates[t, i, 0], &H[t, i, 0]
                for j in range(n):
                    r = gt[j]
                    d[j] = d[j] + sc[j] * r
                    dx[j] = sc[j] * hp_[j] * r * (one - r)
            gemm(False, True, m, n, 2 * n, 1, &dZx[t, 0, 0], G, &W_a[0, 0], G, 1, &dh[0, 0], n)


# ---- LSTM ------------------------------------------------------------------------------------------------
def lstm_forward(real[:, :, ::1] XW, const real[:, ::1] W_a, const real[:, ::1] P, real[:, :, ::1] H,
                 real[:, :, ::1] C, const uint8_t[:, ::1] mask, real[:, :, :] Y):
    """Γ_u, Γ_f, Γ_o = σ(z_k + P_k·c<t-1>), c̃ = tanh(z_c) with z = XW[t] + a<t-1>·W_a; c<t> = Γ_u·c̃ + Γ_f·c<t-1>,
    a<t> = Γ_o·tanh(c<t>) into H, C[t + 1]. XW[t] becomes [Γ_u, Γ_f, Γ_o, c̃]. P (3, n): the peepholes (zeros
    without them)."""
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], G = XW.shape[2], n = G // 4, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None, real_row
    cdef real* cp_
    cdef real* c_
    cdef real* h_
    cdef const real* p0 = &P[0, 0]
    cdef const real* p1 = &P[1, 0]
    cdef const real* p2 = &P[2, 0]
    with nogil:
        for t in range(T):
            gemm(False, False, m, G, n, 1, &H[t, 0, 0], n, &W_a[0, 0], G, 1, &XW[t, 0, 0], G)
            for i in range(m):
                real_row = real_step(mk, T, i, t)
                cp_, c_, h_ = &C[t, i, 0], &C[t + 1, i, 0], &H[t + 1, i, 0]
                if real_row:
                    gates_lstm(&XW[t, i, 0], cp_, p0, p1, p2, c_, h_, n)
                else:
                    memcpy(c_, cp_, n * sizeof(real))
                emit_row(real_row, h_, &H[t, i, 0], &Y[i, t, 0] if has_y else NULL, n)


def lstm_backward(const real[:, :, ::1] gates, const real[:, :, ::1] C, const real[:, ::1] W_a,
                  const real[:, ::1] P, const uint8_t[:, ::1] mask, const real[:, :, :] dY, real[:, ::1] dh,
                  real[:, ::1] dc, real[:, :, ::1] dZ, const real[::1] zeros):
    """BPTT of lstm_forward: dZ[t] = ∂L/∂z for the four gates; dh, dc enter as the final states' gradients and
    leave as a<0>'s and c<0>'s (carried unchanged through padded steps). zeros (n,): the output gradient where
    dY is None (only the final states are used)."""
    cdef Py_ssize_t T = gates.shape[0], m = gates.shape[1], G = gates.shape[2], n = G // 4, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef real* z
    cdef real* dh_
    cdef real* dc_
    cdef const real* gt
    cdef const real* cp_
    cdef const real* c_
    cdef const real* gy = &zeros[0]
    cdef const real* p0 = &P[0, 0]
    cdef const real* p1 = &P[1, 0]
    cdef const real* p2 = &P[2, 0]
    with nogil:
        for t in range(T - 1, -1, -1):
            for i in range(m):
                z = &dZ[t, i, 0]
                if not real_step(mk, T, i, t):
                    memset(z, 0, G * sizeof(real))
                    continue
                if dY is not None:
                    gy = &dY[i, t, 0]
                gt, cp_, c_, dh_, dc_ = &gates[t, i, 0], &C[t, i, 0], &C[t + 1, i, 0], &dh[i, 0], &dc[i, 0]
                grads_lstm(gt, cp_, c_, gy, p0, p1, p2, dh_, dc_, z, n)
            gemm(False, True, m, n, G, 1, &dZ[t, 0, 0], G, &W_a[0, 0], G, 1, &dh[0, 0], n)


# ---- embedding -------------------------------------------------------------------------------------------
def embedding_backward(const int64_t[::1] index, const real[:, ::1] g, real[:, ::1] dE):
    """dE[index[k]] += g[k] for every position k (dE zeroed by the caller): only the rows used are touched."""
    cdef Py_ssize_t k, j, d = g.shape[1]
    cdef real* row
    with nogil:
        for k in range(index.shape[0]):
            row = &dE[index[k], 0]
            for j in range(d):
                row[j] += g[k, j]
