# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno
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
    """σ(z) = 1/(1 + e^(−z)), from e^(−|z|) so it never overflows."""
    cdef real e = exp_(-z if z >= 0 else z)
    return 1 / (1 + e) if z >= 0 else e / (1 + e)


cdef inline bint real_step(const uint8_t* mask, Py_ssize_t T, Py_ssize_t i, Py_ssize_t t) noexcept nogil:
    return mask == NULL or mask[i * T + t] != 0


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
    cdef real* hp
    with nogil:
        for t in range(T):
            z = &XW[t, 0, 0]
            gemm(False, False, m, n, n, 1, &H[t, 0, 0], n, &W_aa[0, 0], n, 1, z, n)
            for i in range(m):
                h, hp = &H[t + 1, i, 0], &H[t, i, 0]
                if real_step(mk, T, i, t):
                    for j in range(n):
                        h[j] = tanh_(z[i * n + j])
                    if has_y:
                        memcpy(&Y[i, t, 0], h, n * sizeof(real))
                else:
                    memcpy(h, hp, n * sizeof(real))
                    if has_y:
                        memset(&Y[i, t, 0], 0, n * sizeof(real))


def rnn_backward(const real[:, :, ::1] H, const real[:, ::1] W_aa, const uint8_t[:, ::1] mask,
                 const real[:, :, :] dY, real[:, ::1] dh, real[:, :, ::1] dZ):
    """BPTT: dZ[t] = (dh + dY<t>)·(1 − a<t>²), dh ← dZ[t]·W_aaᵀ at real steps (carried at padded ones);
    dh enters as the final state's gradient and leaves as a<0>'s."""
    cdef Py_ssize_t T = dZ.shape[0], m = dZ.shape[1], n = dZ.shape[2], t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None
    cdef real g, a
    cdef real* dz
    cdef real* d
    cdef const real* gy = NULL
    with nogil:
        for t in range(T - 1, -1, -1):
            for i in range(m):
                dz, d = &dZ[t, i, 0], &dh[i, 0]
                if real_step(mk, T, i, t):
                    if has_y:
                        gy = &dY[i, t, 0]
                    for j in range(n):
                        g = d[j] + (gy[j] if has_y else 0)
                        a = H[t + 1, i, j]
                        dz[j] = g * (1 - a * a)
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
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], G = XW.shape[2], n = G // 3, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None
    cdef real* z
    cdef real* hp
    cdef real* h
    cdef real* e
    cdef real* zr
    cdef real r, u, c
    with nogil:
        for t in range(T):
            z = &XW[t, 0, 0]
            if reset_after:
                for i in range(m):
                    memcpy(&za[i, 0], &b_a[0], G * sizeof(real))
                gemm(False, False, m, G, n, 1, &H[t, 0, 0], n, &W_a[0, 0], G, 1, &za[0, 0], G)
                for i in range(m):
                    zr, hp, h, e = &za[i, 0], &H[t, i, 0], &H[t + 1, i, 0], &extra[t, i, 0]
                    for j in range(n):
                        r = sigmoid_(z[i * G + j] + zr[j])
                        u = sigmoid_(z[i * G + n + j] + zr[n + j])
                        c = tanh_(z[i * G + 2 * n + j] + r * zr[2 * n + j])
                        e[j] = zr[2 * n + j]
                        z[i * G + j], z[i * G + n + j], z[i * G + 2 * n + j] = r, u, c
                        h[j] = u * c + (1 - u) * hp[j]
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
                    hp, h = &H[t, i, 0], &H[t + 1, i, 0]
                    for j in range(n):
                        u = z[i * G + n + j]
                        c = tanh_(z[i * G + 2 * n + j])
                        z[i * G + 2 * n + j] = c
                        h[j] = u * c + (1 - u) * hp[j]
            for i in range(m):
                if not real_step(mk, T, i, t):
                    memcpy(&H[t + 1, i, 0], &H[t, i, 0], n * sizeof(real))
                    if has_y:
                        memset(&Y[i, t, 0], 0, n * sizeof(real))
                elif has_y:
                    memcpy(&Y[i, t, 0], &H[t + 1, i, 0], n * sizeof(real))


def gru_backward(const real[:, :, ::1] gates, const real[:, :, ::1] H, const real[:, :, ::1] extra,
                 const real[:, ::1] W_a, bint reset_after, const uint8_t[:, ::1] mask, const real[:, :, :] dY,
                 real[:, ::1] dh, real[:, :, ::1] dZx, real[:, :, ::1] dZa, real[:, ::1] scratch):
    """BPTT of gru_forward. dZx[t] = ∂L/∂(XW[t]) = [dz_r, dz_u, dz_c]; dZa[t] = ∂L/∂(a<t-1>·W_a + b_a) for
    reset_after ([dz_r, dz_u, Γ_r·dz_c]); for the seed's GRU dZa = dZx (dz_c then pairs with extra = Γ_r·a<t-1>).
    dh enters as the final state's gradient and leaves as a<0>'s; scratch (m, n)."""
    cdef Py_ssize_t T = gates.shape[0], m = gates.shape[1], G = gates.shape[2], n = G // 3, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None
    cdef real g, r, u, c, hp, dzc, du, dr
    cdef real* dx
    cdef real* da
    cdef real* d
    cdef const real* gy = NULL
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
                for j in range(n):
                    g = d[j] + (gy[j] if has_y else 0)
                    r, u, c = gates[t, i, j], gates[t, i, n + j], gates[t, i, 2 * n + j]
                    hp = H[t, i, j]
                    du = g * (c - hp)
                    dzc = g * u * (1 - c * c)
                    d[j] = g * (1 - u)
                    dx[n + j] = du * u * (1 - u)
                    dx[2 * n + j] = dzc
                    if reset_after:
                        dr = dzc * extra[t, i, j]
                        dx[j] = dr * r * (1 - r)
                        da[j], da[n + j], da[2 * n + j] = dx[j], dx[n + j], dzc * r
            if reset_after:
                gemm(False, True, m, n, G, 1, &dZa[t, 0, 0], G, &W_a[0, 0], G, 1, &dh[0, 0], n)
                continue
            # the seed's GRU: d(Γ_r·a<t-1>) = dz_c·W_acᵀ, then Γ_r's gradient, then the gates' product
            gemm(False, True, m, n, n, 1, &dZx[t, 0, 2 * n], G, &W_a[0, 2 * n], G, 0, &scratch[0, 0], n)
            for i in range(m):
                if not real_step(mk, T, i, t):
                    continue
                dx, d = &dZx[t, i, 0], &dh[i, 0]
                for j in range(n):
                    r = gates[t, i, j]
                    d[j] = d[j] + scratch[i, j] * r
                    dx[j] = scratch[i, j] * H[t, i, j] * r * (1 - r)
            gemm(False, True, m, n, 2 * n, 1, &dZx[t, 0, 0], G, &W_a[0, 0], G, 1, &dh[0, 0], n)


# ---- LSTM ------------------------------------------------------------------------------------------------
def lstm_forward(real[:, :, ::1] XW, const real[:, ::1] W_a, const real[:, ::1] P, real[:, :, ::1] H,
                 real[:, :, ::1] C, const uint8_t[:, ::1] mask, real[:, :, :] Y):
    """Γ_u, Γ_f, Γ_o = σ(z_k [+ P_k·c<t-1>]), c̃ = tanh(z_c) with z = XW[t] + a<t-1>·W_a; c<t> = Γ_u·c̃ + Γ_f·c<t-1>,
    a<t> = Γ_o·tanh(c<t>) into H, C[t + 1]. XW[t] becomes [Γ_u, Γ_f, Γ_o, c̃]."""
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], G = XW.shape[2], n = G // 4, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None, peep = P is not None
    cdef real u, f, o, cc, cp, c, pu = 0, pf = 0, po = 0
    cdef real* z
    with nogil:
        for t in range(T):
            gemm(False, False, m, G, n, 1, &H[t, 0, 0], n, &W_a[0, 0], G, 1, &XW[t, 0, 0], G)
            for i in range(m):
                z = &XW[t, i, 0]
                if not real_step(mk, T, i, t):
                    memcpy(&H[t + 1, i, 0], &H[t, i, 0], n * sizeof(real))
                    memcpy(&C[t + 1, i, 0], &C[t, i, 0], n * sizeof(real))
                    if has_y:
                        memset(&Y[i, t, 0], 0, n * sizeof(real))
                    continue
                for j in range(n):
                    cp = C[t, i, j]
                    if peep:
                        pu, pf, po = P[0, j] * cp, P[1, j] * cp, P[2, j] * cp
                    u = sigmoid_(z[j] + pu)
                    f = sigmoid_(z[n + j] + pf)
                    o = sigmoid_(z[2 * n + j] + po)
                    cc = tanh_(z[3 * n + j])
                    c = u * cc + f * cp
                    z[j], z[n + j], z[2 * n + j], z[3 * n + j] = u, f, o, cc
                    C[t + 1, i, j] = c
                    H[t + 1, i, j] = o * tanh_(c)
                if has_y:
                    memcpy(&Y[i, t, 0], &H[t + 1, i, 0], n * sizeof(real))


def lstm_backward(const real[:, :, ::1] gates, const real[:, :, ::1] C, const real[:, ::1] W_a,
                  const real[:, ::1] P, const uint8_t[:, ::1] mask, const real[:, :, :] dY, real[:, ::1] dh,
                  real[:, ::1] dc, real[:, :, ::1] dZ):
    """BPTT of lstm_forward: dZ[t] = ∂L/∂z for the four gates; dh, dc enter as the final states' gradients and
    leave as a<0>'s and c<0>'s (carried unchanged through padded steps)."""
    cdef Py_ssize_t T = gates.shape[0], m = gates.shape[1], G = gates.shape[2], n = G // 4, t, i, j
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None, peep = P is not None
    cdef real g, u, f, o, cc, tc, cp, dct, dzu, dzf, dzo
    cdef real* z
    cdef const real* gy = NULL
    with nogil:
        for t in range(T - 1, -1, -1):
            for i in range(m):
                z = &dZ[t, i, 0]
                if not real_step(mk, T, i, t):
                    memset(z, 0, G * sizeof(real))
                    continue
                if has_y:
                    gy = &dY[i, t, 0]
                for j in range(n):
                    g = dh[i, j] + (gy[j] if has_y else 0)
                    u, f, o, cc = gates[t, i, j], gates[t, i, n + j], gates[t, i, 2 * n + j], gates[t, i, 3 * n + j]
                    cp = C[t, i, j]
                    tc = tanh_(C[t + 1, i, j])
                    dct = dc[i, j] + g * o * (1 - tc * tc)
                    dzu = dct * cc * u * (1 - u)
                    dzf = dct * cp * f * (1 - f)
                    dzo = g * tc * o * (1 - o)
                    z[j], z[n + j], z[2 * n + j] = dzu, dzf, dzo
                    z[3 * n + j] = dct * u * (1 - cc * cc)
                    dct = dct * f
                    if peep:
                        dct = dct + dzu * P[0, j] + dzf * P[1, j] + dzo * P[2, j]
                    dc[i, j] = dct
                    dh[i, j] = 0
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
