"""Joining and channel normalisation on the device: `concatenate` (each input copied into its slice of the
output; the gradient of each is its slice of G) and local response normalization over the last axis
(one fused windowed sum over the channels, forward and backward)."""
from __future__ import annotations

from numba import cuda

from .. import device
from . import layout
from .elementwise import _flat


# ---- concatenate -------------------------------------------------------------------------------------
@cuda.jit
def _place(src, out, width, total, offset):
    """out viewed as (outer, total) gets src viewed as (outer, width) at columns [offset, offset + width)."""
    for k in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        out[(k // width) * total + offset + k % width] = src[k]


def concatenate(arrays, axis: int):
    """out = [X_0, X_1, …] along `axis` (non-negative): with the axes after `axis` flattened into it, input i
    is a (outer, c_i·inner) block copied to columns o_i·inner … (o_i + c_i)·inner of out (outer, C·inner)."""
    shape = tuple(arrays[0].shape)
    inner = _prod(shape[axis + 1:])
    total = sum(a.shape[axis] for a in arrays)
    out = device.empty(shape[:axis] + (total,) + shape[axis + 1:], arrays[0].dtype)
    offset = 0
    for a in arrays:
        if a.size:
            blocks, threads = device.launch_1d(a.size)
            _place[blocks, threads](_flat(a), _flat(out), a.shape[axis] * inner, total * inner, offset * inner)
        offset += a.shape[axis]
    return out


def split(g, sizes, axis: int):
    """The slices of g along `axis` of the given sizes (the adjoint of `concatenate`), each C-ordered."""
    shape = tuple(g.shape)
    outer, inner, total = _prod(shape[:axis]), _prod(shape[axis + 1:]), shape[axis]
    parts, offset = [], 0
    for size in sizes:
        part = layout.gather(g, offset * inner, (outer, size * inner), (total * inner, 1))
        parts.append(part.reshape(shape[:axis] + (size,) + shape[axis + 1:]))
        offset += size
    return parts


def _prod(shape) -> int:
    result = 1
    for n in shape:
        result *= int(n)
    return result


# ---- local response normalization (channels last) ---------------------------------------------------
@cuda.jit
def _lrn_forward(x, out, d, n_C, before, after, scale, k, beta):
    """d_c = k + α/n·Σ_{c' = c − before}^{c + after} a_c'² (inside [0, n_C)), b_c = a_c·d_c^(−β)."""
    for q in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = q % n_C
        base = q - c
        energy = x[q] * 0
        for cc in range(max(c - before, 0), min(c + after + 1, n_C)):
            energy += x[base + cc] * x[base + cc]
        denominator = k + scale * energy
        d[q] = denominator
        out[q] = x[q] * denominator ** -beta


@cuda.jit
def _lrn_backward(x, out, d, g, dx, n_C, before, after, scale, beta):
    """da_j = g_j·d_j^(−β) − 2αβ/n·a_j·Σ_{c = j − after}^{j + before} g_c·b_c/d_c (b_c/d_c = a_c·d_c^(−β−1))."""
    for q in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        j = q % n_C
        base = q - j
        total = x[q] * 0
        for c in range(max(j - after, 0), min(j + before + 1, n_C)):
            total += g[base + c] * out[base + c] / d[base + c]
        dx[q] = g[q] * d[q] ** -beta - 2 * beta * scale * x[q] * total


def local_response_norm(x, before: int, after: int, scale: float, k: float, beta: float):
    """(b, backprop) of b_c = a_c / (k + scale·Σ_{c' in c's window} a_c'²)^β over the last axis, the window
    `before` channels before c and `after` after; backprop(g) -> da."""
    n_C = tuple(x.shape)[-1]
    out = device.empty(x.shape, x.dtype)
    d = device.empty(x.shape, x.dtype)
    typed = x.dtype.type
    if x.size:
        blocks, threads = device.launch_1d(x.size)
        _lrn_forward[blocks, threads](_flat(x), _flat(out), _flat(d), n_C, before, after, typed(scale), typed(k),
                                      typed(beta))

    def backprop(g):
        dx = device.empty(x.shape, x.dtype)
        if x.size:
            blocks, threads = device.launch_1d(x.size)
            _lrn_backward[blocks, threads](_flat(x), _flat(out), _flat(d), _flat(g), _flat(dx), n_C, before, after,
                                           typed(scale), typed(beta))
        return dx

    return out, backprop
