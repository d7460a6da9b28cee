"""Whole-sequence recurrences (§5.1–5.6) on the device: the simple RNN, GRU and LSTM forward and backward
(BPTT), and the embedding's row gather and atomic scatter-add.

The layout mirrors the CPU backend's `_recurrent.pyx`, time-major: XW (T, m, G) holds x<t>·W_x + b for every
step (one `gemm` before the loop), the states H, C (T + 1, m, n) with H[0] = a<0>. The cells (one device
function each, with one signature) run either inside the persistent kernels of `persistent.py` (one launch per
direction: the default) or step by step, as follows (LAMINA_CUDA_PERSISTENT_RNN=0). Each step is one product of
a<t-1> with all the gates' recurrent weights (matmul's tiled kernel) and one fused pointwise kernel (gate
nonlinearities, state update, mask, and the write of the op's output: the step's a<t> and, at the last step,
the final states); XW[t] is overwritten with the activated gates, which the backward reads. The backward
mirrors it: per step one fused kernel makes dZ[t] (the gradient of the gates' pre-activations) and one product
dZ[t]·W_aᵀ, which the next (earlier) step's kernel adds to the state gradient it reads; after the loop dX, dW_x,
dW_a, db are single products and sums over all steps. mask[i, t] = 0 (a padded step) carries the states over,
writes a zero output and leaves dZ[t, i] = 0. The step kernels take the whole arrays and t, and the step
products write one preallocated buffer each, so a step allocates nothing and makes no array views.

The seed's GRU (reset_after=False) needs Γ_r before its candidate's product (Γ_r·a<t-1>)·W_ac: two products and
two pointwise kernels per step, forward and backward.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import cuda

from .. import device
from . import elementwise as ew
from . import layout, persistent, reduction
from .elementwise import _flat
from .geometry import device_vector
from .joining import concatenate
from .matmul import affine, gemm, product


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


@cuda.jit(device=True, inline=True)
def _store_state(H, new, real, out, t, T, k, n, mn, width, y_on, final_col):
    """a<t> = `new` at a real step, a<t-1> at a padded one, into H[t + 1]; the op's output gets a<t> (0 at a padded
    step) and, at the last step, the final state. Returns a<t>."""
    i, j = k // n, k % n
    value = new if real else H[t * mn + k]
    H[(t + 1) * mn + k] = value
    if y_on:
        _emit(out, value if real else value * 0, i, t, j, n, width)
    if final_col >= 0 and t == T - 1:
        _emit(out, value, i, final_col, j, n, width)
    return value


# ---- the cells -----------------------------------------------------------------------------------------
# Every cell computes one (example i, unit j) of step t from the whole time-major arrays (flat): XW, dZ (T, m, G)
# at t·m·G, H, C (T + 1, m, n) at t·m·n (a<t-1>) and (t + 1)·m·n (a<t>). They share one signature, so the step
# kernels below and the persistent kernels (persistent.py) run any of them: forward cells read gate q of
# z_a = a<t-1>·W_a at za[z0 + q·zs]; backward cells get back = (dZa[t+1]·W_aᵀ)[i, j]. Arguments a cell has no
# use for (b_a, P, C, extra for the RNN) are placeholders.
@cuda.jit(device=True, inline=True)
def _rnn_cell(XW, za, z0, zs, b_a, P, peep, H, C, extra, mask, masked, t, T, m, n, out, width, y_on, final_col, i, j):
    """a<t> = tanh(XW[t] + z_a) at real steps, a<t-1> at padded ones."""
    mn, k = m * n, i * n + j
    _store_state(H, math.tanh(XW[t * mn + k] + za[z0]), _real(mask, masked, T, i, t), out, t, T, k, n, mn, width,
                 y_on, final_col)


@cuda.jit(device=True, inline=True)
def _rnn_cell_backward(gates, H, C, extra, P, peep, dh, back, dc, dZ, dZa, g, mask, masked, t, T, m, n, width, y_on,
                       i, j):
    """dZ[t] = (dh + back + dY<t>)·(1 − a<t>²) at real steps; dh keeps what a padded step carries (0 at a real one:
    its share went into dZ)."""
    mn, k = m * n, i * n + j
    d = dh[k] + back
    if _real(mask, masked, T, i, t):
        grad = d + g[(i * width + t) * n + j] if y_on else d
        a = H[(t + 1) * mn + k]
        dZ[t * mn + k] = grad * (1 - a * a)
        dh[k] = d * 0
    else:
        dZ[t * mn + k] = d * 0
        dh[k] = d


@cuda.jit(device=True, inline=True)
def _gru_cell(XW, za, z0, zs, b_a, P, peep, H, C, extra, mask, masked, t, T, m, n, out, width, y_on, final_col, i, j):
    """reset_after: Γ_r, Γ_u = σ(XW[t] + z_a + b_a), c̃ = tanh(XW_c + Γ_r·(z_a,c + b_ac)), a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>;
    XW[t] becomes [Γ_r, Γ_u, c̃], extra[t] = z_a,c + b_ac."""
    mn, k = m * n, i * n + j
    row = (t * m + i) * 3 * n
    h_prev = H[t * mn + k]
    zc = za[z0 + 2 * zs] + b_a[2 * n + j]
    r = _sigmoid(XW[row + j] + za[z0] + b_a[j])
    u = _sigmoid(XW[row + n + j] + za[z0 + zs] + b_a[n + j])
    c = math.tanh(XW[row + 2 * n + j] + r * zc)
    extra[t * mn + k] = zc
    XW[row + j], XW[row + n + j], XW[row + 2 * n + j] = r, u, c
    _store_state(H, u * c + (1 - u) * h_prev, _real(mask, masked, T, i, t), out, t, T, k, n, mn, width, y_on,
                 final_col)


@cuda.jit(device=True, inline=True)
def _gru_backward(gates, H, extra, dh, back, dZx, dZa, dZc, g, mask, masked, t, T, m, n, width, y_on, reset_after,
                  i, j):
    """With grad = dh + back + dY<t>: dz_u = grad·(c̃ − a<t-1>)·Γ_u(1 − Γ_u), dz_c = grad·Γ_u·(1 − c̃²), dh ← grad·(1 − Γ_u);
    reset_after also dz_r = dz_c·extra·Γ_r(1 − Γ_r) and dZa[t] = [dz_r, dz_u, Γ_r·dz_c]. The seed's GRU leaves dz_r
    to `_gru_reset_backward_seed` and copies dz_c to dZc[t] (T, m, n) for its product with W_acᵀ."""
    mn, k = m * n, i * n + j
    row = (t * m + i) * 3 * n
    d = dh[k] + back
    if not _real(mask, masked, T, i, t):
        for q in range(3):
            dZx[row + q * n + j] = d * 0
            if reset_after:
                dZa[row + q * n + j] = d * 0
        if not reset_after:
            dZc[t * mn + k] = d * 0
        dh[k] = d
        return
    grad = d + g[(i * width + t) * n + j] if y_on else d
    r, u, c = gates[row + j], gates[row + n + j], gates[row + 2 * n + j]
    dz_u = grad * (c - H[t * mn + k]) * u * (1 - u)
    dz_c = grad * u * (1 - c * c)
    dh[k] = grad * (1 - u)
    dZx[row + n + j] = dz_u
    dZx[row + 2 * n + j] = dz_c
    if reset_after:
        dz_r = dz_c * extra[t * mn + k] * r * (1 - r)
        dZx[row + j] = dz_r
        dZa[row + j], dZa[row + n + j], dZa[row + 2 * n + j] = dz_r, dz_u, dz_c * r
    else:
        dZc[t * mn + k] = dz_c


@cuda.jit(device=True, inline=True)
def _gru_cell_backward(gates, H, C, extra, P, peep, dh, back, dc, dZ, dZa, g, mask, masked, t, T, m, n, width, y_on,
                       i, j):
    """The reset_after GRU's backward cell (dZ the input gates' gradient, dZa the recurrent ones')."""
    _gru_backward(gates, H, extra, dh, back, dZ, dZa, dZ, g, mask, masked, t, T, m, n, width, y_on, True, i, j)


@cuda.jit(device=True, inline=True)
def _lstm_cell(XW, za, z0, zs, b_a, P, peep, H, C, extra, mask, masked, t, T, m, n, out, width, y_on, final_col, i,
               j):
    """Γ_u, Γ_f, Γ_o = σ(z_k [+ P_k·c<t-1>]), c̃ = tanh(z_c), z = XW[t] + z_a; c<t> = Γ_u·c̃ + Γ_f·c<t-1>,
    a<t> = Γ_o·tanh(c<t>); XW[t] becomes [Γ_u, Γ_f, Γ_o, c̃]."""
    mn, k = m * n, i * n + j
    row = (t * m + i) * 4 * n
    cp = C[t * mn + k]
    pu, pf, po = (P[j] * cp, P[n + j] * cp, P[2 * n + j] * cp) if peep else (cp * 0, cp * 0, cp * 0)
    u = _sigmoid(XW[row + j] + za[z0] + pu)
    f = _sigmoid(XW[row + n + j] + za[z0 + zs] + pf)
    o = _sigmoid(XW[row + 2 * n + j] + za[z0 + 2 * zs] + po)
    cc = math.tanh(XW[row + 3 * n + j] + za[z0 + 3 * zs])
    XW[row + j], XW[row + n + j], XW[row + 2 * n + j], XW[row + 3 * n + j] = u, f, o, cc
    real = _real(mask, masked, T, i, t)
    c_new = u * cc + f * cp if real else cp
    C[(t + 1) * mn + k] = c_new
    _store_state(H, o * math.tanh(c_new), real, out, t, T, k, n, mn, width, y_on, final_col)
    if final_col >= 0 and t == T - 1:
        _emit(out, c_new, i, final_col + 1, j, n, width)


@cuda.jit(device=True, inline=True)
def _lstm_cell_backward(gates, H, C, extra, P, peep, dh, back, dc, dZ, dZa, g, mask, masked, t, T, m, n, width,
                        y_on, i, j):
    """With grad = dh + back + dY<t>: dc<t> = dc + grad·Γ_o·(1 − tanh²c<t>); dz_u = dc<t>·c̃·Γ_u(1 − Γ_u),
    dz_f = dc<t>·c<t-1>·Γ_f(1 − Γ_f), dz_o = grad·tanh c<t>·Γ_o(1 − Γ_o), dz_c = dc<t>·Γ_u·(1 − c̃²);
    dc ← dc<t>·Γ_f [+ Σ_k dz_k·P_k], dh ← 0 (its share went into dZ) at real steps."""
    mn, k = m * n, i * n + j
    row = (t * m + i) * 4 * n
    d = dh[k] + back
    if not _real(mask, masked, T, i, t):
        for q in range(4):
            dZ[row + q * n + j] = d * 0
        dh[k] = d
        return
    grad = d + g[(i * width + t) * n + j] if y_on else d
    u, f, o, cc = gates[row + j], gates[row + n + j], gates[row + 2 * n + j], gates[row + 3 * n + j]
    tc = math.tanh(C[(t + 1) * mn + k])
    dct = dc[k] + grad * o * (1 - tc * tc)
    dz_u = dct * cc * u * (1 - u)
    dz_f = dct * C[t * mn + k] * f * (1 - f)
    dz_o = grad * tc * o * (1 - o)
    dZ[row + j], dZ[row + n + j], dZ[row + 2 * n + j] = dz_u, dz_f, dz_o
    dZ[row + 3 * n + j] = dct * u * (1 - cc * cc)
    dct = dct * f
    if peep:
        dct += dz_u * P[j] + dz_f * P[n + j] + dz_o * P[2 * n + j]
    dc[k] = dct
    dh[k] = d * 0


#: per cell: (forward cell, backward cell, gates)
CELLS = {"rnn": (_rnn_cell, _rnn_cell_backward, 1), "gru": (_gru_cell, _gru_cell_backward, 3),
         "lstm": (_lstm_cell, _lstm_cell_backward, 4)}


@lru_cache(maxsize=None)
def _step_kernels(cell, cell_backward):
    """(step, step_backward): one step's cells over every (i, j), z_a = a<t-1>·W_a (m, G) from the step's product;
    backward with back = dZa[t+1]·W_aᵀ (m, n) from the later step's product."""

    @cuda.jit
    def step(XW, za, b_a, P, peep, H, C, extra, mask, masked, t, T, m, n, out, width, y_on, final_col):
        G = za.size // m
        for k in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            i, j = k // n, k % n
            cell(XW, za, i * G + j, n, b_a, P, peep, H, C, extra, mask, masked, t, T, m, n, out, width, y_on,
                 final_col, i, j)

    @cuda.jit
    def step_backward(gates, H, C, extra, P, peep, dh, back, dc, dZ, dZa, g, mask, masked, t, T, m, n, width, y_on):
        for k in range(cuda.grid(1), m * n, cuda.gridsize(1)):
            cell_backward(gates, H, C, extra, P, peep, dh, back[k], dc, dZ, dZa, g, mask, masked, t, T, m, n, width,
                          y_on, k // n, k % n)

    return step, step_backward


# ---- the seed's GRU (reset_after=False): two products and two pointwise kernels per step ------------------
@cuda.jit
def _gru_gates_seed(XW, zru, H, extra, t, m, n):
    """First half: Γ_r, Γ_u = σ(XW[t] + a<t-1>·W_a,ru) into XW[t]; extra[t] = Γ_r·a<t-1>."""
    G, mn = 3 * n, m * n
    for k in range(cuda.grid(1), mn, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = t * m * G + i * G
        r = _sigmoid(XW[row + j] + zru[i * 2 * n + j])
        XW[row + n + j] = _sigmoid(XW[row + n + j] + zru[i * 2 * n + n + j])
        XW[row + j] = r
        extra[t * mn + k] = r * H[t * mn + k]


@cuda.jit
def _gru_update_seed(XW, zc, H, mask, masked, t, T, m, n, out, width, y_on, final_col):
    """Second half: c̃ = tanh(XW_c + (Γ_r·a<t-1>)·W_ac) into XW[t]; a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>."""
    G, mn = 3 * n, m * n
    for k in range(cuda.grid(1), mn, cuda.gridsize(1)):
        i, j = k // n, k % n
        row = t * m * G + i * G
        h_prev = H[t * mn + k]
        c = math.tanh(XW[row + 2 * n + j] + zc[k])
        XW[row + 2 * n + j] = c
        u = XW[row + n + j]
        _store_state(H, u * c + (1 - u) * h_prev, _real(mask, masked, T, i, t), out, t, T, k, n, mn, width, y_on,
                     final_col)


@cuda.jit
def _gru_step_backward_seed(gates, H, extra, dh, back, dZx, dZc, g, mask, masked, t, T, m, n, width, y_on):
    for k in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        _gru_backward(gates, H, extra, dh, back[k], dZx, dZx, dZc, g, mask, masked, t, T, m, n, width, y_on, False,
                      k // n, k % n)


@cuda.jit
def _gru_reset_backward_seed(gates, H, dh, d_reset, dZx, dZru, mask, masked, t, T, m, n):
    """With d_reset = dz_c·W_acᵀ = ∂L/∂(Γ_r·a<t-1>): dh += d_reset·Γ_r, dz_r = d_reset·a<t-1>·Γ_r(1 − Γ_r);
    dZru[t] (T, m, 2n) = [dz_r, dz_u] for the product with W_a,ruᵀ."""
    G, mn = 3 * n, m * n
    for k in range(cuda.grid(1), mn, cuda.gridsize(1)):
        i, j = k // n, k % n
        row, ru = t * m * G + i * G, t * m * 2 * n + i * 2 * n
        if _real(mask, masked, T, i, t):
            r = gates[row + j]
            dh[k] += d_reset[k] * r
            dZx[row + j] = d_reset[k] * H[t * mn + k] * r * (1 - r)
        dZru[ru + j] = dZx[row + j]
        dZru[ru + n + j] = dZx[row + n + j]


# ---- LSTM peepholes ------------------------------------------------------------------------------------
@cuda.jit
def _peephole_grad(dZ, C, dP, rows, n):
    """dP[q, j] = Σ_r dZ[r, q·n + j]·c<t-1>[r, j] over the T·m time-major rows r, q = u, f, o."""
    G = 4 * n
    for k in range(cuda.grid(1), dP.size, cuda.gridsize(1)):
        q, j = k // n, k % n
        acc = dZ[0] * 0
        for r in range(rows):
            acc += dZ[r * G + q * n + j] * C[r * n + j]
        dP[k] = acc


# ---- the whole sequence ------------------------------------------------------------------------------
def _launch(kernel, n_items, *args):
    blocks, threads = device.launch_1d(n_items)
    kernel[blocks, threads](*args)


@lru_cache(maxsize=None)
def _placeholder():
    """One device byte, uploaded once, for the arrays a cell has no use for (and for no mask): an unmasked
    sequence copies nothing to the device, which would wait for the work queued before it."""
    return device.to_device(np.ones((1,), np.uint8))


def _zeros(shape, dtype):
    return ew.fill(device.empty(shape, dtype), 0)


def _columns(W, start: int, stop: int):
    """A C-ordered copy of W[:, start:stop]."""
    return layout.gather(W, start, (W.shape[0], stop - start), (W.shape[1], 1))


class _StepProduct:
    """out (M, N) = A_t·op(B) into one preallocated buffer, A_t the (M, K) block at offset t·M·K of a flat
    time-major array: the tiled product of `matmul` launched without allocating or slicing per step."""

    def __init__(self, B, M: int, K: int, trans_b: bool = False):
        self.B, self.K, self.trans_b = _flat(B), K, trans_b
        self.out = device.empty((M, B.shape[0] if trans_b else B.shape[1]), B.dtype)
        self.flat = _flat(self.out)

    def __call__(self, A, t: int):
        M = self.out.shape[0]
        product(A, self.B, self.out, self.K, device_vector((t * M * self.K,)), device_vector((0,)),
                trans_b=self.trans_b)
        return self.flat


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
    mask_d = _flat(device.to_device(mask)) if masked else _placeholder()
    x_tm = layout.transpose(x, (1, 0, 2)).reshape((T * m, n_x))
    XW = affine(x_tm, W_x, b_x)
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
    peep = P is not None
    XW_f, H_f, out_f = _flat(XW), _flat(H), _flat(out)
    C_f = _flat(C) if cell == "lstm" else _placeholder()
    extra_f = _flat(extra) if cell == "gru" else _placeholder()
    P_f = _flat(P) if peep else _placeholder()
    common = (mask_d, masked)
    tail = (out_f, width, y_on, final_col)
    cell_args = (b_a if cell == "gru" else _placeholder(), P_f, peep, H_f, C_f, extra_f, *common)
    forward_cell, backward_cell, gates = CELLS[cell]
    whole = None if seed_gru else persistent.plan(dtype, m, n, gates)
    forward, backward = persistent.kernels(np.dtype(dtype), gates, forward_cell, backward_cell, whole.staged) \
        if whole else (None, None)
    if whole and not persistent.launch(forward, whole, XW_f, persistent.weights(whole, W_a, by_rows=False),
                                       *cell_args, T, m, n, *tail):
        whole = None            # the cooperative kernel cannot run here: step by step after all
    if seed_gru:
        W_ru, W_c = _columns(W_a, 0, 2 * n), _columns(W_a, 2 * n, G)
        gates_product, candidate_product = _StepProduct(W_ru, m, n), _StepProduct(W_c, m, n)
        for t in range(T):
            _launch(_gru_gates_seed, m * n, XW_f, gates_product(H_f, t), H_f, extra_f, t, m, n)
            _launch(_gru_update_seed, m * n, XW_f, candidate_product(extra_f, t), H_f, *common, t, T, m, n, *tail)
    elif not whole:
        step = _step_kernels(forward_cell, backward_cell)[0]
        recurrent_product = _StepProduct(W_a, m, n)
        for t in range(T):
            _launch(step, m * n, XW_f, recurrent_product(H_f, t), *cell_args, t, T, m, n, *tail)

    def backprop(g, needs=None):
        needs = needs or (True,) * (len(states) + 4 + (cell == "gru") + peep)
        g_f = _flat(g)
        if returns != "sequence":
            finals = [layout.gather(g, (final_col + s) * n, (m, n), (width * n, 1)) for s in range(S)]
        else:
            finals = [_zeros((m, n), dtype) for _ in range(S)]
        dh, dc = _flat(finals[0]), _flat(finals[-1])
        dZ = device.empty((T, m, G), dtype)
        dZa = device.empty((T, m, G), dtype) if cell == "gru" and reset_after else dZ
        dZ_f, dZa_f = _flat(dZ), _flat(dZa)
        back_args = (XW_f, H_f, C_f, extra_f, P_f, peep, dh)
        back = _flat(_zeros((m, n), dtype))
        if whole and persistent.launch(backward, whole, XW_f, persistent.weights(whole, W_a, by_rows=True),
                                       *back_args[1:], dc, dZ_f, dZa_f, g_f, *common, T, m, n, width, y_on):
            back = _StepProduct(W_a, m, G, trans_b=True)(dZa_f, 0)
        elif seed_gru:
            dZc, dZru = device.empty((T, m, n), dtype), device.empty((T, m, 2 * n), dtype)
            dZc_f, dZru_f = _flat(dZc), _flat(dZru)
            reset_product, gates_back = _StepProduct(W_c, m, n, trans_b=True), _StepProduct(W_ru, m, 2 * n, trans_b=True)
            for t in range(T - 1, -1, -1):
                _launch(_gru_step_backward_seed, m * n, XW_f, H_f, extra_f, dh, back, dZ_f, dZc_f, g_f, *common, t, T,
                        m, n, width, y_on)
                _launch(_gru_reset_backward_seed, m * n, XW_f, H_f, dh, reset_product(dZc_f, t), dZ_f, dZru_f,
                        *common, t, T, m, n)
                back = gates_back(dZru_f, t)
        else:
            step_backward = _step_kernels(forward_cell, backward_cell)[1]
            state_back = _StepProduct(W_a, m, G, trans_b=True)
            for t in range(T - 1, -1, -1):
                _launch(step_backward, m * n, *back_args, back, dc, dZ_f, dZa_f, g_f, *common, t, T, m, n, width, y_on)
                back = state_back(dZa_f, t)
        da0 = ew.add(finals[0], back.reshape((m, n)))
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
                _launch(_peephole_grad, 3 * n, dZ_f, C_f, _flat(dP), T * m, n)
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
