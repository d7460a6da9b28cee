"""Whole-sequence recurrences (§5.1–5.6) on the device: the simple RNN, GRU and LSTM forward and backward
(BPTT), and the embedding's row gather and atomic scatter-add.

The layout mirrors the CPU backend's `_recurrent.pyx`, time-major: XW (T, m, G) holds x<t>·W_x + b for every
step (one `gemm` before the loop), the states H, C (T + 1, m, n) with H[0] = a<0>. Each step is one `gemm` of
a<t-1> with all the gates' recurrent weights and one fused pointwise kernel (gate nonlinearities, state
update, mask, and the write of the op's output: the step's a<t> and, at the last step, the final states);
XW[t] is overwritten with the activated gates, which the backward reads. The backward mirrors it: per step one
fused kernel makes dZ[t] (the gradient of the gates' pre-activations) and one `gemm` dZ[t]·W_aᵀ, which the next
(earlier) step's kernel adds to the state gradient it reads; after the loop dX, dW_x, dW_a, db are single
products and sums over all steps. mask[i, t] = 0 (a padded step) carries the states over, writes a zero output
and leaves dZ[t, i] = 0.

The seed's GRU (reset_after=False) needs Γ_r before its candidate's product (Γ_r·a<t-1>)·W_ac: two products and
two pointwise kernels per step, forward and backward.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .. import device
from . import elementwise as ew
from . import layout, reduction
from .elementwise import _flat
from .joining import concatenate
from .matmul import gemm


# ---- scalar helpers ----------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def _sigmoid(z):
    """σ(z) = 1/(1 + e^(−z)), from e^(−|z|) so it never overflows."""
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@cuda.jit(device=True, inline=True)
def _real(mask, masked, T, i, t):
    return not masked or mask[i * T + t] != 0


@cuda.jit(device=True, inline=True)
def _emit(out, value, i, col, j, n, width):
    """out[i, col, j] = value in the op's output (m, width, n)."""
    out[(i * width + col) * n + j] = value


# ---- simple RNN --------------------------------------------------------------------------------------
@cuda.jit
def _rnn_step(z, za, h_prev, h, mask, masked, t, T, n, out, width, y_on, final_col):
    """a<t> = tanh(z + za) at real steps, a<t-1> at padded ones (z = x<t>·W_ax + b_a, za = a<t-1>·W_aa)."""
    for k in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        real = _real(mask, masked, T, i, t)
        value = math.tanh(z[k] + za[k]) if real else h_prev[k]
        h[k] = value
        if y_on:
            _emit(out, value if real else value * 0, i, t, j, n, width)
        if final_col >= 0 and t == T - 1:
            _emit(out, value, i, final_col, j, n, width)


@cuda.jit
def _rnn_step_backward(h, dh, back, dz, g, mask, masked, t, T, n, width, y_on):
    """dz = (dh + dY<t>)·(1 − a<t>²) at real steps, where dh = the carried gradient + the later step's
    dz·W_aaᵀ (`back`); dh keeps what a padded step carries (0 at a real one: its share went into dz)."""
    for k in range(cuda.grid(1), dz.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        d = dh[k] + back[k]
        if _real(mask, masked, T, i, t):
            grad = d + g[(i * width + t) * n + j] if y_on else d
            dz[k] = grad * (1 - h[k] * h[k])
            dh[k] = d * 0
        else:
            dz[k] = d * 0
            dh[k] = d


# ---- GRU ---------------------------------------------------------------------------------------------
@cuda.jit
def _gru_step(z, za, b_a, h_prev, h, extra, mask, masked, t, T, n, out, width, y_on, final_col):
    """reset_after: Γ_r, Γ_u = σ(z + za + b_a), c̃ = tanh(z_c + Γ_r·(za_c + b_ac)), a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>;
    z (m, 3n) becomes [Γ_r, Γ_u, c̃], extra = za_c + b_ac."""
    G = 3 * n
    for k in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = i * G
        zc = za[row + 2 * n + j] + b_a[2 * n + j]
        r = _sigmoid(z[row + j] + za[row + j] + b_a[j])
        u = _sigmoid(z[row + n + j] + za[row + n + j] + b_a[n + j])
        c = math.tanh(z[row + 2 * n + j] + r * zc)
        extra[k] = zc
        z[row + j], z[row + n + j], z[row + 2 * n + j] = r, u, c
        real = _real(mask, masked, T, i, t)
        value = u * c + (1 - u) * h_prev[k] if real else h_prev[k]
        h[k] = value
        if y_on:
            _emit(out, value if real else value * 0, i, t, j, n, width)
        if final_col >= 0 and t == T - 1:
            _emit(out, value, i, final_col, j, n, width)


@cuda.jit
def _gru_gates_seed(z, zru, h_prev, extra, n):
    """The seed's GRU, first half: Γ_r, Γ_u = σ(z + a<t-1>·W_a,ru) into z; extra = Γ_r·a<t-1>."""
    G = 3 * n
    for k in range(cuda.grid(1), extra.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        r = _sigmoid(z[i * G + j] + zru[i * 2 * n + j])
        z[i * G + n + j] = _sigmoid(z[i * G + n + j] + zru[i * 2 * n + n + j])
        z[i * G + j] = r
        extra[k] = r * h_prev[k]


@cuda.jit
def _gru_update_seed(z, zc, h_prev, h, mask, masked, t, T, n, out, width, y_on, final_col):
    """The seed's GRU, second half: c̃ = tanh(z_c + (Γ_r·a<t-1>)·W_ac) into z; a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>."""
    G = 3 * n
    for k in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        c = math.tanh(z[i * G + 2 * n + j] + zc[k])
        z[i * G + 2 * n + j] = c
        u = z[i * G + n + j]
        real = _real(mask, masked, T, i, t)
        value = u * c + (1 - u) * h_prev[k] if real else h_prev[k]
        h[k] = value
        if y_on:
            _emit(out, value if real else value * 0, i, t, j, n, width)
        if final_col >= 0 and t == T - 1:
            _emit(out, value, i, final_col, j, n, width)


@cuda.jit
def _gru_step_backward(gates, h_prev, extra, dh, back, dzx, dza, dzc, g, mask, masked, t, T, n, width, y_on,
                       reset_after):
    """With grad = dh + back + dY<t>: dz_u = grad·(c̃ − a<t-1>)·Γ_u(1 − Γ_u), dz_c = grad·Γ_u·(1 − c̃²), dh ← grad·(1 − Γ_u);
    reset_after also dz_r = dz_c·extra·Γ_r(1 − Γ_r) and dza = [dz_r, dz_u, Γ_r·dz_c]. The seed's GRU leaves dz_r
    to `_gru_reset_backward_seed` and copies dz_c to `dzc` (m, n) for its product with W_acᵀ."""
    G = 3 * n
    for k in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = i * G
        d = dh[k] + back[k]
        if not _real(mask, masked, T, i, t):
            for q in range(3):
                dzx[row + q * n + j] = d * 0
                if reset_after:
                    dza[row + q * n + j] = d * 0
            if not reset_after:
                dzc[k] = d * 0
            dh[k] = d
            continue
        grad = d + g[(i * width + t) * n + j] if y_on else d
        r, u, c = gates[row + j], gates[row + n + j], gates[row + 2 * n + j]
        dz_u = grad * (c - h_prev[k]) * u * (1 - u)
        dz_c = grad * u * (1 - c * c)
        dh[k] = grad * (1 - u)
        dzx[row + n + j] = dz_u
        dzx[row + 2 * n + j] = dz_c
        if reset_after:
            dz_r = dz_c * extra[k] * r * (1 - r)
            dzx[row + j] = dz_r
            dza[row + j], dza[row + n + j], dza[row + 2 * n + j] = dz_r, dz_u, dz_c * r
        else:
            dzc[k] = dz_c


@cuda.jit
def _gru_reset_backward_seed(gates, h_prev, dh, d_reset, dzx, dzru, mask, masked, t, T, n):
    """The seed's GRU: with d_reset = dz_c·W_acᵀ = ∂L/∂(Γ_r·a<t-1>): dh += d_reset·Γ_r, dz_r = d_reset·a<t-1>·Γ_r(1 − Γ_r);
    dzru (m, 2n) = [dz_r, dz_u] for the product with W_a,ruᵀ."""
    G = 3 * n
    for k in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = i * G
        if _real(mask, masked, T, i, t):
            r = gates[row + j]
            dh[k] += d_reset[k] * r
            dzx[row + j] = d_reset[k] * h_prev[k] * r * (1 - r)
        dzru[i * 2 * n + j] = dzx[row + j]
        dzru[i * 2 * n + n + j] = dzx[row + n + j]


# ---- LSTM --------------------------------------------------------------------------------------------
@cuda.jit
def _lstm_step(z, za, P, peep, h_prev, c_prev, h, c, mask, masked, t, T, n, out, width, y_on, final_col):
    """Γ_u, Γ_f, Γ_o = σ(z_k + za_k [+ P_k·c<t-1>]), c̃ = tanh(z_c + za_c); c<t> = Γ_u·c̃ + Γ_f·c<t-1>,
    a<t> = Γ_o·tanh(c<t>); z (m, 4n) becomes [Γ_u, Γ_f, Γ_o, c̃]."""
    G = 4 * n
    for k in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = i * G
        cp = c_prev[k]
        pu, pf, po = (P[j] * cp, P[n + j] * cp, P[2 * n + j] * cp) if peep else (cp * 0, cp * 0, cp * 0)
        u = _sigmoid(z[row + j] + za[row + j] + pu)
        f = _sigmoid(z[row + n + j] + za[row + n + j] + pf)
        o = _sigmoid(z[row + 2 * n + j] + za[row + 2 * n + j] + po)
        cc = math.tanh(z[row + 3 * n + j] + za[row + 3 * n + j])
        z[row + j], z[row + n + j], z[row + 2 * n + j], z[row + 3 * n + j] = u, f, o, cc
        real = _real(mask, masked, T, i, t)
        c_new = u * cc + f * cp if real else cp
        h_new = o * math.tanh(c_new) if real else h_prev[k]
        c[k], h[k] = c_new, h_new
        if y_on:
            _emit(out, h_new if real else h_new * 0, i, t, j, n, width)
        if final_col >= 0 and t == T - 1:
            _emit(out, h_new, i, final_col, j, n, width)
            _emit(out, c_new, i, final_col + 1, j, n, width)


@cuda.jit
def _lstm_step_backward(gates, c_prev, c, P, peep, dh, back, dc, dz, g, mask, masked, t, T, n, width, y_on):
    """With grad = dh + back + dY<t>: dc<t> = dc + grad·Γ_o·(1 − tanh²c<t>); dz_u = dc<t>·c̃·Γ_u(1 − Γ_u),
    dz_f = dc<t>·c<t-1>·Γ_f(1 − Γ_f), dz_o = grad·tanh c<t>·Γ_o(1 − Γ_o), dz_c = dc<t>·Γ_u·(1 − c̃²);
    dc ← dc<t>·Γ_f [+ Σ_k dz_k·P_k], dh ← 0 (its share went into dz) at real steps."""
    G = 4 * n
    for k in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = i * G
        d = dh[k] + back[k]
        if not _real(mask, masked, T, i, t):
            for q in range(4):
                dz[row + q * n + j] = d * 0
            dh[k] = d
            continue
        grad = d + g[(i * width + t) * n + j] if y_on else d
        u, f, o, cc = gates[row + j], gates[row + n + j], gates[row + 2 * n + j], gates[row + 3 * n + j]
        tc = math.tanh(c[k])
        dct = dc[k] + grad * o * (1 - tc * tc)
        dz_u = dct * cc * u * (1 - u)
        dz_f = dct * c_prev[k] * f * (1 - f)
        dz_o = grad * tc * o * (1 - o)
        dz[row + j], dz[row + n + j], dz[row + 2 * n + j] = dz_u, dz_f, dz_o
        dz[row + 3 * n + j] = dct * u * (1 - cc * cc)
        dct = dct * f
        if peep:
            dct += dz_u * P[j] + dz_f * P[n + j] + dz_o * P[2 * n + j]
        dc[k] = dct
        dh[k] = d * 0


@cuda.jit
def _peephole_grad(dz, C, dP, rows, n):
    """dP[q, j] = Σ_r dz[r, q·n + j]·c<t-1>[r, j] over the T·m time-major rows r, q = u, f, o."""
    G = 4 * n
    for k in range(cuda.grid(1), dP.size, cuda.gridsize(1)):
        q, j = k // n, k % n
        acc = dz[0] * 0
        for r in range(rows):
            acc += dz[r * G + q * n + j] * C[r * n + j]
        dP[k] = acc


# ---- the whole sequence ------------------------------------------------------------------------------
def _launch(kernel, n_items, *args):
    blocks, threads = device.launch_1d(n_items)
    kernel[blocks, threads](*args)


def _step(array, t):
    """The flat (contiguous) view of array[t]."""
    return _flat(array[t])


def _zeros(shape, dtype):
    return ew.fill(device.empty(shape, dtype), 0)


def _columns(W, start: int, stop: int):
    """A C-ordered copy of W[:, start:stop]."""
    return layout.gather(W, start, (W.shape[0], stop - start), (W.shape[1], 1))


def sequence(cell, x, states, W_x, W_a, b_x, b_a, P, mask, returns, reset_after):
    """Forward of a whole `rnn`/`gru`/`lstm` (see the module docstring): (the op's output, backprop(g, needs)).

    `states` are a<0> (and c<0>), b_x the input bias (b_a, b or b_x), b_a the GRU's recurrent bias (else None),
    `mask` a (m, T) uint8 host array or None, `returns` as the op's. backprop returns the gradients of
    (x, *states, W_x, W_a, b_x[, b_a][, P]); `needs` (one bool per input, or None for all) skips the others."""
    m, T, n_x = x.shape
    n, G = W_a.shape
    dtype = x.dtype
    S = len(states)
    seed_gru = cell == "gru" and not reset_after
    masked = mask is not None
    mask_d = _flat(device.to_device(mask if masked else np.ones((1,), np.uint8)))
    x_tm = layout.transpose(x, (1, 0, 2)).reshape((T * m, n_x))
    XW = gemm(x_tm, W_x)
    ew.add(XW, b_x, out=XW)
    if seed_gru:
        ew.add(XW, b_a, out=XW)
    XW = XW.reshape((T, m, G))
    H = device.empty((T + 1, m, n), dtype)
    ew.identity(states[0], out=H[0])
    C = extra = None
    if cell == "lstm":
        C = device.empty((T + 1, m, n), dtype)
        ew.identity(states[1], out=C[0])
    if cell == "gru":
        extra = device.empty((T, m, n), dtype)
    y_on = returns != "state"
    width = (T if y_on else 0) + (S if returns != "sequence" else 0)
    final_col = width - S if returns != "sequence" else -1
    out = device.empty((m, width, n), dtype)
    flat_out = _flat(out)
    peep = P is not None
    P_flat = _flat(P) if peep else mask_d
    if seed_gru:
        W_ru, W_c = _columns(W_a, 0, 2 * n), _columns(W_a, 2 * n, G)
    common = (mask_d, masked)
    for t in range(T):
        z, h_prev, h = _step(XW, t), _step(H, t), _step(H, t + 1)
        tail = (flat_out, width, y_on, final_col)
        if cell == "rnn":
            za = _flat(gemm(H[t], W_a))
            _launch(_rnn_step, m * n, z, za, h_prev, h, *common, t, T, n, *tail)
        elif cell == "lstm":
            za = _flat(gemm(H[t], W_a))
            _launch(_lstm_step, m * n, z, za, P_flat, peep, h_prev, _step(C, t), h, _step(C, t + 1), *common,
                    t, T, n, *tail)
        elif reset_after:
            za = _flat(gemm(H[t], W_a))
            _launch(_gru_step, m * n, z, za, b_a, h_prev, h, _step(extra, t), *common, t, T, n, *tail)
        else:
            _launch(_gru_gates_seed, m * n, z, _flat(gemm(H[t], W_ru)), h_prev, _step(extra, t), n)
            zc = _flat(gemm(extra[t], W_c))
            _launch(_gru_update_seed, m * n, z, zc, h_prev, h, *common, t, T, n, *tail)

    def backprop(g, needs=None):
        needs = needs or (True,) * (len(states) + 4 + (cell == "gru") + peep)
        g_flat = _flat(g)
        if returns != "sequence":
            finals = [layout.gather(g, (final_col + s) * n, (m, n), (width * n, 1)) for s in range(S)]
        else:
            finals = [_zeros((m, n), dtype) for _ in range(S)]
        dh = finals[0]
        back = _zeros((m, n), dtype)
        dZ = device.empty((T, m, G), dtype)
        dZa = device.empty((T, m, G), dtype) if cell == "gru" and reset_after else dZ
        if seed_gru:
            dZc, dZru = device.empty((T, m, n), dtype), device.empty((T, m, 2 * n), dtype)
        for t in range(T - 1, -1, -1):
            h_prev, dz = _step(H, t), _step(dZ, t)
            if cell == "rnn":
                _launch(_rnn_step_backward, m * n, _step(H, t + 1), _flat(dh), _flat(back), dz, g_flat, *common,
                        t, T, n, width, y_on)
            elif cell == "lstm":
                _launch(_lstm_step_backward, m * n, _step(XW, t), _step(C, t), _step(C, t + 1), P_flat, peep,
                        _flat(dh), _flat(back), _flat(finals[1]), dz, g_flat, *common, t, T, n, width, y_on)
            elif reset_after:
                _launch(_gru_step_backward, m * n, _step(XW, t), h_prev, _step(extra, t), _flat(dh), _flat(back),
                        dz, _step(dZa, t), dz, g_flat, *common, t, T, n, width, y_on, True)
            else:
                _launch(_gru_step_backward, m * n, _step(XW, t), h_prev, _step(extra, t), _flat(dh), _flat(back),
                        dz, dz, _step(dZc, t), g_flat, *common, t, T, n, width, y_on, False)
                d_reset = gemm(dZc[t], W_c, trans_b=True)
                _launch(_gru_reset_backward_seed, m * n, _step(XW, t), h_prev, _flat(dh), _flat(d_reset), dz,
                        _step(dZru, t), *common, t, T, n)
                back = gemm(dZru[t], W_ru, trans_b=True)
                continue
            back = gemm(dZa[t], W_a, trans_b=True)
        da0 = ew.add(dh, back)
        dZ2, dZa2 = dZ.reshape((T * m, G)), dZa.reshape((T * m, G))
        H2 = H[:T].reshape((T * m, n))
        wanted = iter(needs)
        dx = layout.transpose(gemm(dZ2, W_x, trans_b=True).reshape((T, m, n_x)), (1, 0, 2)) if next(wanted) else None
        grads = [dx, da0 if next(wanted) else None]
        if cell == "lstm":
            grads.append(finals[1] if next(wanted) else None)
        grads.append(gemm(x_tm, dZ2, trans_a=True) if next(wanted) else None)
        if not next(wanted):
            grads.append(None)
        elif seed_gru:
            grads.append(concatenate([gemm(H2, dZru.reshape((T * m, 2 * n)), trans_a=True),
                                      gemm(extra.reshape((T * m, n)), dZc.reshape((T * m, n)), trans_a=True)], 1))
        else:
            grads.append(gemm(H2, dZa2, trans_a=True))
        grads.append(reduction.reduce("sum", dZ2, (0,)) if next(wanted) else None)
        if cell == "gru":
            grads.append(reduction.reduce("sum", dZa2, (0,)) if next(wanted) else None)
        if peep:
            dP = None
            if next(wanted):
                dP = device.empty((3, n), dtype)
                _launch(_peephole_grad, 3 * n, _flat(dZ2), _flat(C[:T]), _flat(dP), T * m, n)
            grads.append(dP)
        return tuple(grads)

    return out, backprop


# ---- embedding ---------------------------------------------------------------------------------------
@cuda.jit
def _gather_rows(E, index, out, d):
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[k] = E[index[k // d] * d + k % d]


@cuda.jit
def _scatter_add_rows(g, index, dE, d):
    for k in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        cuda.atomic.add(dE, index[k // d] * d + k % d, g[k])


def embedding(indices, E):
    """e[p] = E[indices[p]] (rows gathered); backprop(g) -> dE with dE[w] = Σ_{p : indices[p] = w} g[p], an atomic
    scatter-add over the positions, so repeated words add up and only the rows used are written."""
    d = E.shape[1]
    index = _flat(indices)
    out = device.empty(tuple(indices.shape) + (d,), E.dtype)
    if out.size:
        _launch(_gather_rows, out.size, _flat(E), index, _flat(out), d)

    def backprop(g):
        dE = _zeros(E.shape, E.dtype)
        if g.size:
            _launch(_scatter_add_rows, g.size, _flat(g), index, _flat(dE), d)
        return dE

    return out, backprop
