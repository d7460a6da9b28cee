"""Whole-sequence recurrences (§5.1–5.3, 5.5–5.6): `rnn`, `gru`, `lstm`, and the `embedding` lookup.

Sequences are batch-first, x (m, T_x, n_x); states a (m, n_a). Weights follow Dense's Z = X·W + b,
with the gates stacked along the columns:

    rnn:  W_ax (n_x, n_a), W_aa (n_a, n_a), b_a (n_a,)
    gru:  W_x (n_x, 3n_a), W_a (n_a, 3n_a), b_x, b_a (3n_a,)   columns [Γ_r | Γ_u | c̃]
    lstm: W_x (n_x, 4n_a), W_a (n_a, 4n_a), b (4n_a,)          columns [Γ_u | Γ_f | Γ_o | c̃]
          P (3, n_a) optional peepholes, rows [u, f, o]

`mask` (an attribute: a NumPy (m, T_x) array of 0/1 or bools, None = every step real) marks the
real steps of a variable-length batch: at a padded step the state is carried over unchanged
(a<t> = a<t-1>, c<t> = c<t-1>) and the output is 0, so padded steps receive no gradient.

`returns` picks the output: "sequence" gives the outputs a<t> for every step, (m, T_x, n_a);
"state" gives the final states stacked on axis 1, (m, S, n_a) with S = 1 ([a<T>]) or 2 for the
LSTM ([a<T>, c<T>]); "both" gives the two joined along axis 1, (m, T_x + S, n_a). One op, one
output, so autograd needs nothing new; `lamina.functional` splits them.

The defaults loop over time with primitive ops (the input projection X·W_x + b of every step is
one `dense` before the loop) and join the steps with `concatenate`. Backends replace them with
fused whole-sequence kernels (the CPU backend does: one matrix product per step, fused gates).
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError, ShapeError
from .registry import COMPOSITE, Op, Sample, call, check_float, check_ndim

RETURNS = ("sequence", "state", "both")

#: gates per cell type (columns of W_x and W_a are n_gates·n_a)
N_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
#: final states per cell type (the LSTM has a and c)
N_STATES = {"rnn": 1, "gru": 1, "lstm": 2}


# ---- helpers shared by the defaults and the kernels ---------------------------------------------
def mask_array(op: str, mask, m: int, T: int):
    """`mask` as a (m, T) uint8 array of 0/1 (None stays None); a clear error for a wrong shape."""
    if mask is None:
        return None
    if hasattr(mask, "numpy") and not isinstance(mask, np.ndarray):
        mask = mask.numpy()
    mask = np.asarray(mask)
    if mask.shape != (m, T):
        raise ShapeError(f"{op}: 'mask' must have shape (m, T_x) = ({m}, {T}), got {mask.shape}")
    if mask.dtype.kind not in "biuf" or not np.all((mask == 0) | (mask == 1)):
        raise OpError(f"{op}: 'mask' must hold only 0/1 (or booleans), got dtype {mask.dtype}")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def split_returns(out, returns: str, T: int):
    """(sequence or None, [final states]) of an op output made with `returns` (the inverse of the packing)."""
    if returns == "sequence":
        return out, []
    first = 0 if returns == "state" else T
    states = [out[:, k] for k in range(first, out.shape[1])]
    return (out[:, :T] if returns == "both" else None), states


def _constant(like, array):
    from ..tensor import Tensor

    return Tensor(array, dtype=like.dtype, backend=like.backend)


def _run(x, states, step, mask, returns, op):
    """The time loop of every default: states ← step(x_proj<t>, states) for t = 0..T-1, with masked steps
    carrying the states over; returns the packed output (see the module docstring)."""
    m, T = x.shape[0], x.shape[1]
    mask = mask_array(op, mask, m, T)
    outputs = []
    for t in range(T):
        new = step(t, states)
        if mask is not None and not mask[:, t].all():
            keep = _constant(x, mask[:, t, None].astype(np.float64))
            new = [keep * n + (1.0 - keep) * s for n, s in zip(new, states)]
            outputs.append(new[0] * keep)
        else:
            outputs.append(new[0])
        states = new
    steps = outputs if returns != "state" else []
    parts = steps + (states if returns != "sequence" else [])
    parts = [p.reshape(m, 1, p.shape[-1]) for p in parts]
    return parts[0] if len(parts) == 1 else call("concatenate", *parts, axis=1)


# ---- simple RNN -----------------------------------------------------------------------------------
def rnn(x, a0, W_ax, W_aa, b_a, *, mask=None, returns="sequence"):
    """a<t> = tanh(a<t-1>·W_aa + x<t>·W_ax + b_a) for t = 1..T_x (the seed's g(W_a[a, x] + b_a) with
    W_a = [W_aa; W_ax]); masked steps carry a<t-1> over and output 0."""
    proj = call("dense", x, W_ax, b_a)

    def step(t, states):
        return [call("tanh", proj[:, t] + call("matmul", states[0], W_aa))]

    return _run(x, [a0], step, mask, returns, "rnn")


# ---- GRU ------------------------------------------------------------------------------------------
def gru(x, a0, W_x, W_a, b_x, b_a, *, reset_after=True, mask=None, returns="sequence"):
    """Γ_r = σ(x·W_xr + a·W_ar + b_r), Γ_u = σ(x·W_xu + a·W_au + b_u), a<t> = Γ_u*c̃ + (1 − Γ_u)*a<t-1>;
    the seed's full GRU (reset_after=False): c̃ = tanh(x·W_xc + b_xc + (Γ_r*a<t-1>)·W_ac + b_ac);
    reset_after=True (PyTorch/cuDNN): c̃ = tanh(x·W_xc + b_xc + Γ_r*(a<t-1>·W_ac + b_ac))."""
    n = a0.shape[-1]
    proj = call("dense", x, W_x, b_x)
    W_ru, W_c = W_a[:, :2 * n], W_a[:, 2 * n:]
    b_ru, b_c = b_a[:2 * n], b_a[2 * n:]

    def step(t, states):
        a = states[0]
        p = proj[:, t]
        gates = call("sigmoid", p[:, :2 * n] + call("matmul", a, W_ru) + b_ru)
        r, u = gates[:, :n], gates[:, n:]
        if reset_after:
            c = call("tanh", p[:, 2 * n:] + r * (call("matmul", a, W_c) + b_c))
        else:
            c = call("tanh", p[:, 2 * n:] + call("matmul", r * a, W_c) + b_c)
        return [u * c + (1.0 - u) * a]

    return _run(x, [a0], step, mask, returns, "gru")


# ---- LSTM -----------------------------------------------------------------------------------------
def lstm(x, a0, c0, W_x, W_a, b, P=None, *, mask=None, returns="sequence"):
    """Γ_k = σ(x·W_xk + a<t-1>·W_ak + b_k [+ P_k*c<t-1>]) for k = u, f, o; c̃ = tanh(x·W_xc + a<t-1>·W_ac + b_c);
    c<t> = Γ_u*c̃ + Γ_f*c<t-1>, a<t> = Γ_o*tanh(c<t>). P (3, n_a): the seed's peepholes (c<t-1> into all gates)."""
    n = a0.shape[-1]
    proj = call("dense", x, W_x, b)

    def step(t, states):
        a, c = states
        z = proj[:, t] + call("matmul", a, W_a)
        pre = z[:, :3 * n]
        if P is not None:
            pre = pre + (c.reshape(c.shape[0], 1, n) * P).reshape(c.shape[0], 3 * n)
        gates = call("sigmoid", pre)
        u, f, o = gates[:, :n], gates[:, n:2 * n], gates[:, 2 * n:]
        c_new = u * call("tanh", z[:, 3 * n:]) + f * c
        return [o * call("tanh", c_new), c_new]

    return _run(x, [a0, c0], step, mask, returns, "lstm")


# ---- checks ---------------------------------------------------------------------------------------
def _expect(op, name, tensor, shape):
    if tensor.shape != shape:
        raise ShapeError(f"{op}: {name!r} must have shape {shape}, got {tensor.shape}")


def _check_sequence(op, x, states, W_x, W_a, biases, mask, returns):
    check_ndim(op, "x", x, (3,))
    check_float(op, "x", x)
    m, T, n_x = x.shape
    check_ndim(op, "W_a", W_a, (2,))
    n = W_a.shape[0]
    g = N_GATES[op] * n
    if W_a.shape != (n, g):
        raise ShapeError(f"{op}: recurrent weights 'W_a' must have shape (n_a, {N_GATES[op]}·n_a), got {W_a.shape}")
    _expect(op, "W_x", W_x, (n_x, g))
    for name, t in states:
        _expect(op, name, t, (m, n))
    for name, t in biases:
        _expect(op, name, t, (g,))
    for name, t in [("W_x", W_x), ("W_a", W_a)] + list(states) + list(biases):
        if t.dtype != x.dtype:
            raise OpError(f"{op}: {name!r} has dtype {t.dtype} but x has {x.dtype}; they must match")
    if returns not in RETURNS:
        raise OpError(f"{op}: 'returns' must be one of {RETURNS}, got {returns!r}")
    mask_array(op, mask, m, T)


def _check_rnn(x, a0, W_ax, W_aa, b_a, *, mask=None, returns="sequence"):
    _check_sequence("rnn", x, [("a0", a0)], W_ax, W_aa, [("b_a", b_a)], mask, returns)


def _check_gru(x, a0, W_x, W_a, b_x, b_a, *, reset_after=True, mask=None, returns="sequence"):
    if not isinstance(reset_after, (bool, np.bool_)):
        raise OpError(f"gru: 'reset_after' must be True or False, got {reset_after!r}")
    _check_sequence("gru", x, [("a0", a0)], W_x, W_a, [("b_x", b_x), ("b_a", b_a)], mask, returns)


def _check_lstm(x, a0, c0, W_x, W_a, b, P=None, *, mask=None, returns="sequence"):
    _check_sequence("lstm", x, [("a0", a0), ("c0", c0)], W_x, W_a, [("b", b)], mask, returns)
    if P is not None:
        _expect("lstm", "P", P, (3, W_a.shape[0]))
        if P.dtype != x.dtype:
            raise OpError(f"lstm: 'P' has dtype {P.dtype} but x has {x.dtype}; they must match")


# ---- samples --------------------------------------------------------------------------------------
def _masks(m, T):
    """A prefix mask (lengths T, T−2, 1, …) and a mask with a hole in the middle."""
    lengths = np.array([T, max(T - 2, 1), 1][:m] + [T] * max(m - 3, 0))
    prefix = (np.arange(T)[None, :] < lengths[:, None]).astype(np.uint8)
    holes = np.ones((m, T), np.uint8)
    holes[0, T // 2] = 0
    return prefix, holes


def _sequence_samples(op, extra=0):
    def samples(rng, dtype):
        r = lambda *s: (rng.standard_normal(s) * 0.5).astype(dtype)  # noqa: E731
        m, T, n_x, n = 3, 4, 3, 2
        g = N_GATES[op] * n
        states = [r(m, n) for _ in range(N_STATES[op])]
        biases = [r(g) for _ in range(2 if op == "gru" else 1)]
        base = (r(m, T, n_x), *states, r(n_x, g), r(n, g), *biases)
        prefix, holes = _masks(m, T)
        out = [Sample(base), Sample(base, {"mask": prefix, "returns": "both"}),
               Sample(base, {"mask": holes, "returns": "state"})]
        if op == "gru":
            out += [Sample(base, {"reset_after": False}),
                    Sample(base, {"reset_after": False, "mask": prefix, "returns": "both"})]
        if op == "lstm":
            peep = base + (r(3, n),)
            out += [Sample(peep), Sample(peep, {"mask": prefix, "returns": "both"})]
        return out
    return samples


# ---- embedding ------------------------------------------------------------------------------------
def embedding(indices, E):
    """e = E[indices]: row w of E (V, d) is the vector of word w (rows = words; the seed's E has them as
    columns, e_w = E·o_w); dE[w] = Σ over the positions holding w of the output gradient there."""
    return call("getitem", E, index=indices.numpy().astype(np.int64, copy=False))


def _check_embedding(indices, E):
    check_ndim("embedding", "E", E, (2,))
    check_float("embedding", "E", E)
    if indices.dtype.kind not in "iu":
        raise OpError(f"embedding: 'indices' must be an integer tensor, got dtype {indices.dtype}")
    values = indices.numpy()
    if values.size and (values.min() < 0 or values.max() >= E.shape[0]):
        raise OpError(f"embedding: indices must lie in [0, V) = [0, {E.shape[0]}), got values from "
                      f"{values.min()} to {values.max()}")


def _embedding_samples(rng, dtype):
    E = rng.standard_normal((7, 3)).astype(dtype)
    return [Sample((rng.integers(0, 7, size=(4, 5)), E)),
            Sample((np.array([2, 2, 0, 2, 6]), E)),          # repeated rows add up
            Sample((np.array([[1]]), E))]


RECURRENT_OPS = [
    Op("rnn", COMPOSITE, _sequence_samples("rnn"), _check_rnn, default=rnn, doc=rnn.__doc__),
    Op("gru", COMPOSITE, _sequence_samples("gru"), _check_gru, default=gru, doc=gru.__doc__),
    Op("lstm", COMPOSITE, _sequence_samples("lstm"), _check_lstm, default=lstm, doc=lstm.__doc__),
    Op("embedding", COMPOSITE, _embedding_samples, _check_embedding, default=embedding, doc=embedding.__doc__),
]
