# cython: language_level=3
# distutils: extra_compile_args = -fno-trapping-math -fno-math-errno --param=vect-max-version-for-alias-checks=64
"""Whole-sequence recurrences (§5.1–5.6): the time loops of the simple RNN, GRU and LSTM, forward and
backward (BPTT), with the GIL released; and the embedding's scatter-add.

Everything is time-major here: XW (T, m, G·n) holds x<t>·W_x + b for every step (one big matrix product the
caller made), the states H, C (T + 1, m, n) with H[0] = a<0>, the activated gates (T, m, G·n). Each step is
the product a<t-1>·W_a into the step's slice of XW and fused loops for the gate nonlinearities, split by
units over the OpenMP threads (see "simple RNN" below); the backward computes dZ (T, m, G·n), the gradient of
the gates' pre-activations, whose products with X and H the caller makes as single large GEMMs after the loop.
mask[i, t] = 0 (a padded step) carries the states over, writes a zero output and leaves dZ[t, i] = 0, so the
step gets no gradient.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset

import numpy as np

from ._gemm cimport PANEL_BYTES, small_gemm
from ._matmul import pack_panels
from ._vecmath cimport PARALLEL_MIN, exp_, real, tanh_


cdef inline real sigmoid_(real z) noexcept nogil:
    """σ(z) = 1/(1 + e^(−z)), branch-free so the gate loops vectorize (exp_ saturates instead of overflowing)."""
    cdef real one = 1
    return one / (one + exp_(-z))


cdef inline void gates_lstm(real* z, Py_ssize_t s, const real* cp, const real* p0, const real* p1, const real* p2,
                            real* c, real* h, Py_ssize_t n) noexcept nogil:
    """n units of one row of an LSTM step, z = [z_u, z_f, z_o, z_c] (s apart) -> [Γ_u, Γ_f, Γ_o, c̃], c, h. One
    simple loop per gate (GCC vectorizes each; one loop over everything it leaves scalar)."""
    cdef Py_ssize_t j
    cdef real* zf = z + s
    cdef real* zo = z + 2 * s
    cdef real* zc = z + 3 * s
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


cdef inline void grads_lstm(const real* gates, Py_ssize_t s, const real* cp, const real* c, const real* gy,
                            const real* p0, const real* p1, const real* p2, real* dh, real* dc, real* dz,
                            Py_ssize_t n) noexcept nogil:
    """n units of one row of an LSTM step backward (gates and dz: four blocks s apart): with g = dh + dY<t>,
    dc<t> = dc + g·Γ_o·(1 − tanh²c<t>): dz_o = g·tanh(c<t>)·Γ_o(1 − Γ_o), dz_u = dc<t>·c̃·Γ_u(1 − Γ_u),
    dz_f = dc<t>·c<t-1>·Γ_f(1 − Γ_f), dz_c = dc<t>·Γ_u·(1 − c̃²); dc ← dc<t>·Γ_f + Σ_k dz_k·P_k; dh ← 0 (the
    caller adds dZ·W_aᵀ)."""
    cdef real one = 1
    cdef Py_ssize_t j
    cdef const real* u = gates
    cdef const real* f = gates + s
    cdef const real* o = gates + 2 * s
    cdef const real* cc = gates + 3 * s
    cdef real* dzf = dz + s
    cdef real* dzo = dz + 2 * s
    cdef real* dzc = dz + 3 * s
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


cdef inline void gates_gru_after(real* z, Py_ssize_t s, const real* za, const real* hp, real* h, real* e,
                                 Py_ssize_t n) noexcept nogil:
    """n units of one row of a reset_after GRU step: z = x·W_x + b_x, za = a<t-1>·W_a + b_a (three blocks s
    apart each) -> z = [Γ_r, Γ_u, c̃], c̃ = tanh(z_c + Γ_r·za_c), h = Γ_u·c̃ + (1 − Γ_u)·a<t-1>; e = za_c (for
    the backward)."""
    cdef real one = 1
    cdef Py_ssize_t j
    cdef real* zu = z + s
    cdef real* zc = z + 2 * s
    for j in range(n):
        z[j] = sigmoid_(z[j] + za[j])
    for j in range(n):
        zu[j] = sigmoid_(zu[j] + za[s + j])
    for j in range(n):
        e[j] = za[2 * s + j]
        zc[j] = tanh_(zc[j] + z[j] * e[j])
    for j in range(n):
        h[j] = zu[j] * zc[j] + (one - zu[j]) * hp[j]


cdef inline void grads_gru(const real* gates, Py_ssize_t s, const real* hp, const real* gy, real* dh, real* dz,
                           Py_ssize_t n) noexcept nogil:
    """n units of one row of a GRU step backward (three blocks s apart), with g = dh + dY<t>:
    dz_u = g·(c̃ − a<t-1>)·Γ_u(1 − Γ_u), dz_c = g·Γ_u·(1 − c̃²) (w.r.t. c̃'s pre-activation), dh ← g·(1 − Γ_u)
    (the direct path)."""
    cdef real one = 1
    cdef Py_ssize_t j
    cdef const real* u = gates + s
    cdef const real* c = gates + 2 * s
    cdef real* dzu = dz + s
    cdef real* dzc = dz + 2 * s
    cdef real g
    for j in range(n):
        g = dh[j] + gy[j]
        dzu[j] = g * (c[j] - hp[j]) * u[j] * (one - u[j])
        dzc[j] = g * u[j] * (one - c[j] * c[j])
        dh[j] = g * (one - u[j])


cdef inline bint real_step(const uint8_t* mask, Py_ssize_t T, Py_ssize_t i, Py_ssize_t t) noexcept nogil:
    return mask == NULL or mask[i * T + t] != 0


cdef inline void emit_row(bint real_row, real* h, const real* h_prev, real* y, Py_ssize_t n) noexcept nogil:
    """The end of a step for n units of one sequence: at a padded step a<t> = a<t-1> and the output y<t> is 0;
    at a real step y<t> = a<t> (y NULL: no outputs kept)."""
    if not real_row:
        memcpy(h, h_prev, n * sizeof(real))
        if y != NULL:
            memset(y, 0, n * sizeof(real))
    elif y != NULL:
        memcpy(y, h, n * sizeof(real))


cdef inline void gate_products(Py_ssize_t gates, Py_ssize_t m, Py_ssize_t count, Py_ssize_t k, const real* A,
                               Py_ssize_t lda, const real[:, :, :, ::1] panels, Py_ssize_t part, real* Z,
                               Py_ssize_t ldz, Py_ssize_t s) noexcept nogil:
    """Z[:, g·s : g·s + count] += A (m×k)·(gate g's columns of the part) for the first `gates` gates g, the
    columns from pack_panels (Z points at the part's first unit)."""
    cdef Py_ssize_t g
    for g in range(gates):
        small_gemm(m, count, k, A, lda, &panels[g, part, 0, 0], panels.shape[3], Z + g * s, ldz, True)


# ---- simple RNN ------------------------------------------------------------------------------------------
# Each step is split by units into parts (prange: the threads run their parts; the loop's end is the barrier
# before the next step, which reads every unit of a<t>). A part multiplies its own columns of every gate with
# small_gemm on its thread (a BLAS call per step would wake and join BLAS's threads a hundred times a sequence)
# and applies the gates to them. The backward's parts first make their units' dZ, then (after a barrier, every
# unit of dZ[t] being read) their units' columns of dh += dZ[t]·W_aᵀ.
def rnn_forward(real[:, :, ::1] XW, const real[:, ::1] W_aa, real[:, :, ::1] H, const uint8_t[:, ::1] mask,
                real[:, :, :] Y):
    """a<t> = tanh(XW[t] + a<t-1>·W_aa) into H[t + 1] (H[0] = a<0> given; XW is overwritten); Y (m, T, n), if given,
    gets a<t> at real steps and 0 at padded ones."""
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], n = XW.shape[2], t, i, j, part, j0, count
    cdef Py_ssize_t unit = PANEL_BYTES // sizeof(real), parts = (n + unit - 1) // unit
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None, threads = m * n * n >= PARALLEL_MIN
    cdef real[:, :, :, ::1] panels = pack_panels(W_aa, 1)
    cdef real* z
    cdef real* h
    with nogil:
        for t in range(T):
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                gate_products(1, m, count, n, &H[t, 0, 0], n, panels, part, &XW[t, 0, j0], n, n)
                for i in range(m):
                    z, h = &XW[t, i, j0], &H[t + 1, i, j0]
                    for j in range(count):
                        h[j] = tanh_(z[j])
                    emit_row(real_step(mk, T, i, t), h, &H[t, i, j0], &Y[i, t, j0] if has_y else NULL, count)


def rnn_backward(const real[:, :, ::1] H, const real[:, ::1] W_aa, const uint8_t[:, ::1] mask,
                 const real[:, :, :] dY, real[:, ::1] dh, real[:, :, ::1] dZ, const real[::1] zeros):
    """BPTT: dZ[t] = (dh + dY<t>)·(1 − a<t>²), dh ← dZ[t]·W_aaᵀ at real steps (carried at padded ones);
    dh enters as the final state's gradient and leaves as a<0>'s; zeros (n,) stands for dY<t> when dY is None."""
    cdef real one = 1
    cdef Py_ssize_t T = dZ.shape[0], m = dZ.shape[1], n = dZ.shape[2], t, i, j, part, j0, count
    cdef Py_ssize_t unit = PANEL_BYTES // sizeof(real), parts = (n + unit - 1) // unit
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None, threads = m * n * n >= PARALLEL_MIN
    cdef real[:, :, :, ::1] panels = pack_panels(np.asarray(W_aa).T, 1)
    cdef real g
    cdef real* dz
    cdef real* d
    cdef const real* ht
    cdef const real* gy
    with nogil:
        for t in range(T - 1, -1, -1):
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                for i in range(m):
                    dz, d = &dZ[t, i, j0], &dh[i, j0]
                    if real_step(mk, T, i, t):
                        gy = &dY[i, t, j0] if has_y else &zeros[j0]
                        ht = &H[t + 1, i, j0]
                        for j in range(count):
                            g = d[j] + gy[j]
                            dz[j] = g * (one - ht[j] * ht[j])
                            d[j] = 0
                    else:
                        memset(dz, 0, count * sizeof(real))
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                gate_products(1, m, min(unit, n - j0), n, &dZ[t, 0, 0], n, panels, part, &dh[0, j0], n, n)


# ---- GRU -------------------------------------------------------------------------------------------------
def gru_forward(real[:, :, ::1] XW, const real[:, ::1] W_a, const real[:] b_a, real[:, :, ::1] H,
                real[:, :, ::1] extra, bint reset_after, const uint8_t[:, ::1] mask, real[:, :, :] Y,
                real[:, ::1] za):
    """Γ_r, Γ_u = σ(XW[t] + a<t-1>·W_a (+ b_a)), a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>. reset_after: c̃ = tanh(XW_c +
    Γ_r·(a<t-1>·W_ac + b_ac)), extra[t] = a<t-1>·W_ac + b_ac; else (the seed's, b_a already in XW) c̃ = tanh(XW_c +
    (Γ_r·a<t-1>)·W_ac), extra[t] = Γ_r·a<t-1> (every unit of it read by the product that follows: a barrier in
    the step). XW[t] becomes [Γ_r, Γ_u, c̃]; za (m, 3n) is scratch."""
    cdef real one = 1
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], G = XW.shape[2], n = G // 3, t, i, j, g, part, j0, count
    cdef Py_ssize_t unit = PANEL_BYTES // sizeof(real), parts = (n + unit - 1) // unit
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None, threads = m * n * G >= PARALLEL_MIN
    cdef real[:, :, :, ::1] panels = pack_panels(W_a, 3)
    cdef real* z
    cdef real* hp
    cdef real* h
    cdef real* e
    with nogil:
        for t in range(T):
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                if reset_after:
                    for i in range(m):
                        for g in range(3):
                            memcpy(&za[i, g * n + j0], &b_a[g * n + j0], count * sizeof(real))
                    gate_products(3, m, count, n, &H[t, 0, 0], n, panels, part, &za[0, j0], G, n)
                    for i in range(m):
                        gates_gru_after(&XW[t, i, j0], n, &za[i, j0], &H[t, i, j0], &H[t + 1, i, j0], &extra[t, i, j0],
                                        count)
                else:
                    gate_products(2, m, count, n, &H[t, 0, 0], n, panels, part, &XW[t, 0, j0], G, n)
                    for i in range(m):
                        z, hp, e = &XW[t, i, j0], &H[t, i, j0], &extra[t, i, j0]
                        for j in range(count):
                            z[j] = sigmoid_(z[j])
                        for j in range(count):
                            z[n + j] = sigmoid_(z[n + j])
                        for j in range(count):
                            e[j] = z[j] * hp[j]
            for part in prange(parts if not reset_after else 0, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                small_gemm(m, count, n, &extra[t, 0, 0], n, &panels[2, part, 0, 0], unit, &XW[t, 0, 2 * n + j0], G,
                           True)
                for i in range(m):
                    z, hp, h = &XW[t, i, j0], &H[t, i, j0], &H[t + 1, i, j0]
                    for j in range(count):
                        z[2 * n + j] = tanh_(z[2 * n + j])
                    for j in range(count):
                        h[j] = z[n + j] * z[2 * n + j] + (one - z[n + j]) * hp[j]
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
    cdef Py_ssize_t T = gates.shape[0], m = gates.shape[1], G = gates.shape[2], n = G // 3, t, i, j, part, j0, count
    cdef Py_ssize_t unit = PANEL_BYTES // sizeof(real), parts = (n + unit - 1) // unit
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None, threads = m * n * G >= PARALLEL_MIN
    cdef real[:, :, :, ::1] panels = pack_panels(np.asarray(W_a).T, 1)      # W_aᵀ (3n, n)
    cdef real[:, :, :, ::1] c_panels = pack_panels(np.asarray(W_a)[:, 2 * n:].T, 1) if not reset_after \
        else panels      # W_acᵀ (n, n)
    cdef real r
    cdef real* dx
    cdef real* da
    cdef real* d
    cdef real* sc
    cdef const real* gt
    cdef const real* hp_
    cdef const real* e
    cdef const real* gy
    with nogil:
        for t in range(T - 1, -1, -1):
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                for i in range(m):
                    dx, da, d = &dZx[t, i, j0], &dZa[t, i, j0], &dh[i, j0]
                    if not real_step(mk, T, i, t):
                        for j in range(3):
                            memset(dx + j * n, 0, count * sizeof(real))
                            if reset_after:
                                memset(da + j * n, 0, count * sizeof(real))
                        continue
                    gy = &dY[i, t, j0] if has_y else &zeros[j0]
                    gt, hp_, e = &gates[t, i, j0], &H[t, i, j0], &extra[t, i, j0]
                    grads_gru(gt, n, hp_, gy, d, dx, count)
                    if reset_after:
                        for j in range(count):
                            dx[j] = dx[2 * n + j] * e[j] * gt[j] * (one - gt[j])
                        for j in range(count):
                            da[j] = dx[j]
                            da[n + j] = dx[n + j]
                            da[2 * n + j] = dx[2 * n + j] * gt[j]
            # the seed's GRU: d(Γ_r·a<t-1>) = dz_c·W_acᵀ (every unit's dz_c: after the barrier), then Γ_r's gradient
            for part in prange(parts if not reset_after else 0, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                small_gemm(m, count, n, &dZx[t, 0, 2 * n], G, &c_panels[0, part, 0, 0], unit, &scratch[0, j0], n, False)
                for i in range(m):
                    if not real_step(mk, T, i, t):
                        continue
                    dx, d, sc, gt, hp_ = &dZx[t, i, j0], &dh[i, j0], &scratch[i, j0], &gates[t, i, j0], &H[t, i, j0]
                    for j in range(count):
                        r = gt[j]
                        d[j] = d[j] + sc[j] * r
                        dx[j] = sc[j] * hp_[j] * r * (one - r)
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                if reset_after:
                    small_gemm(m, count, G, &dZa[t, 0, 0], G, &panels[0, part, 0, 0], unit, &dh[0, j0], n, True)
                else:       # (the first 2n rows of W_aᵀ: the r and u gates)
                    small_gemm(m, count, 2 * n, &dZx[t, 0, 0], G, &panels[0, part, 0, 0], unit, &dh[0, j0], n, True)


# ---- LSTM ------------------------------------------------------------------------------------------------
def lstm_forward(real[:, :, ::1] XW, const real[:, ::1] W_a, const real[:, ::1] P, real[:, :, ::1] H,
                 real[:, :, ::1] C, const uint8_t[:, ::1] mask, real[:, :, :] Y):
    """Γ_u, Γ_f, Γ_o = σ(z_k + P_k·c<t-1>), c̃ = tanh(z_c) with z = XW[t] + a<t-1>·W_a; c<t> = Γ_u·c̃ + Γ_f·c<t-1>,
    a<t> = Γ_o·tanh(c<t>) into H, C[t + 1]. XW[t] becomes [Γ_u, Γ_f, Γ_o, c̃]. P (3, n): the peepholes (zeros
    without them)."""
    cdef Py_ssize_t T = XW.shape[0], m = XW.shape[1], G = XW.shape[2], n = G // 4, t, i, part, j0, count
    cdef Py_ssize_t unit = PANEL_BYTES // sizeof(real), parts = (n + unit - 1) // unit
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = Y is not None, threads = m * n * G >= PARALLEL_MIN, real_row
    cdef real[:, :, :, ::1] panels = pack_panels(W_a, 4)
    with nogil:
        for t in range(T):
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                gate_products(4, m, count, n, &H[t, 0, 0], n, panels, part, &XW[t, 0, j0], G, n)
                for i in range(m):
                    real_row = real_step(mk, T, i, t)
                    if real_row:
                        gates_lstm(&XW[t, i, j0], n, &C[t, i, j0], &P[0, j0], &P[1, j0], &P[2, j0], &C[t + 1, i, j0],
                                   &H[t + 1, i, j0], count)
                    else:
                        memcpy(&C[t + 1, i, j0], &C[t, i, j0], count * sizeof(real))
                    emit_row(real_row, &H[t + 1, i, j0], &H[t, i, j0], &Y[i, t, j0] if has_y else NULL, count)


def lstm_backward(const real[:, :, ::1] gates, const real[:, :, ::1] C, const real[:, ::1] W_a,
                  const real[:, ::1] P, const uint8_t[:, ::1] mask, const real[:, :, :] dY, real[:, ::1] dh,
                  real[:, ::1] dc, real[:, :, ::1] dZ, const real[::1] zeros):
    """BPTT of lstm_forward: dZ[t] = ∂L/∂z for the four gates; dh, dc enter as the final states' gradients and
    leave as a<0>'s and c<0>'s (carried unchanged through padded steps). zeros (n,): the output gradient where
    dY is None (only the final states are used)."""
    cdef Py_ssize_t T = gates.shape[0], m = gates.shape[1], G = gates.shape[2], n = G // 4, t, i, j, part, j0, count
    cdef Py_ssize_t unit = PANEL_BYTES // sizeof(real), parts = (n + unit - 1) // unit
    cdef const uint8_t* mk = &mask[0, 0] if mask is not None else NULL
    cdef bint has_y = dY is not None, threads = m * n * G >= PARALLEL_MIN
    cdef real[:, :, :, ::1] panels = pack_panels(np.asarray(W_a).T, 1)      # W_aᵀ (4n, n)
    cdef real* z
    cdef const real* gy
    with nogil:
        for t in range(T - 1, -1, -1):
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                count = min(unit, n - j0)
                for i in range(m):
                    z = &dZ[t, i, j0]
                    if not real_step(mk, T, i, t):
                        for j in range(4):
                            memset(z + j * n, 0, count * sizeof(real))
                        continue
                    gy = &dY[i, t, j0] if has_y else &zeros[j0]
                    grads_lstm(&gates[t, i, j0], n, &C[t, i, j0], &C[t + 1, i, j0], gy, &P[0, j0], &P[1, j0],
                               &P[2, j0], &dh[i, j0], &dc[i, j0], z, count)
            for part in prange(parts, schedule="static", use_threads_if=threads):
                j0 = part * unit
                gate_products(1, m, min(unit, n - j0), G, &dZ[t, 0, 0], G, panels, part, &dh[0, j0], n, n)


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
