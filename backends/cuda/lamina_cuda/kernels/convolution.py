"""Convolution and pooling kernels on NHWC images (HWIO filters): conv2d as the tiled GEMM over the
column matrix im2col(x), read straight from the image (implicit GEMM: the columns are never stored),
col2im for its input gradient, max pooling with stored argmax, average pooling and global average pooling.

Every kernel is a grid-stride loop over a flat C-ordered array whose last axis is the channel, so
consecutive threads touch consecutive channels and their reads and writes coalesce. The backward
kernels gather: each input pixel sums the contributions of the ≤ ⌈f/s⌉² windows that hold it, so
no two threads write one element (no atomics, and the sums are deterministic, unlike an atomic
scatter whose order, and so whose rounding, changes from run to run).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, int32, uint32, uint64

from .. import device
from . import layout
from .elementwise import _flat
from .geometry import c_strides, device_vector
from .matmul import SliceLoader, affine, gemm, product, slice_origin, slice_steps, slice_store, tiling_for, \
    with_bias
from .normalization import column_sums
from .reduction import reduce

#: blocks the dW product should launch (≈ two per SM of an H100): the images are split into groups,
#: one batched product each, then summed
DW_TARGET_BLOCKS = 264
#: the most bytes the per-group partial dW may take
DW_PARTIAL_BYTES = 64 * 1024 * 1024


# ---- index arithmetic (device functions) ----------------------------------------------------------
@cuda.jit(device=True)
def _unravel(k, n_H, n_W, C):
    """(i, y, z, c) of flat index k into a C-ordered (m, n_H, n_W, C) array."""
    c, rest = k % C, k // C
    z, rest = rest % n_W, rest // n_W
    return rest // n_H, rest % n_H, z, c


@cuda.jit(device=True)
def _windows_holding(y, pad, f, stride, n_out):
    """[first, last] output positions whose window (starting at o·s − pad, f wide) holds input position y;
    first > last when none does."""
    t = y + pad - f + 1
    first = 0 if t <= 0 else (t + stride - 1) // stride
    last = min(n_out - 1, (y + pad) // stride)
    return first, last


# ---- conv2d: the columns as a product's operand, col2im ------------------------------------------
#: the most pixels (m·n_H·n_W) of an image batch the implicit loader indexes (32-bit arithmetic)
MAX_PIXELS = 2 ** 31 - 1
#: a window offset that puts every pixel outside the image (the state of rows and columns past the operand)
OUTSIDE = -(1 << 30)


@cuda.jit(device=True, inline=True)
def _advance(state, row, step, inner_size, middle_size):
    """Adds `step` to the mixed-radix counter state[row] = (outer, middle, inner), inner < inner_size and
    middle < middle_size: the inner digit first, carrying into the middle one, then the outer."""
    inner = int32(state[row, 2] + step)
    while inner >= inner_size:
        inner = int32(inner - inner_size)
        state[row, 1] += 1
        if state[row, 1] == middle_size:
            state[row, 1] = 0
            state[row, 0] += 1
    state[row, 2] = inner


def im2col_loader(width: int, BK: int, T: int, k_contiguous: bool) -> SliceLoader:
    """The `SliceLoader` of the column matrix cols = im2col(x) (m·oh·ow, f·f·n_C_prev), read from the NHWC image x
    as the product needs it: cols[(i·oh + h)·ow + w, (a·f + b)·C + c] = x[i, h·s + a − top, w·s + b − left, c],
    0 in the padding, with the product's `geometry` (n_H, n_W, n_C_prev, oh, ow, f, stride, top, left) (`_geometry`).
    `k_contiguous`: A = cols (the forward's rows are pixels, k a window position); else A = colsᵀ (dW's rows
    are window positions, k runs over pixels, from pixel x0 of the batch).

    `begin` divides once per thread: the state holds each load's pixel and the window position of its column;
    a slice moves them along k by BK with additions and a carry, no divisions. The index arithmetic is 32-bit
    (`int32` around each step: NVVM narrows what Numba types as 64-bit), which needs fewer than 2³¹ pixels."""
    LOADS, ROW_STEP, K_STEP = slice_steps(width, BK, T, k_contiguous)
    origin = slice_origin(width, BK, k_contiguous)
    WINDOW = LOADS          # the state's row of the window position (a, b, c)

    @cuda.jit(device=True, inline=True)
    def set_window(state, j, C, f):
        """state[WINDOW] = (a, b, c) of column j."""
        state[WINDOW, 2], ab = j % C, j // C
        state[WINDOW, 0], state[WINDOW, 1] = ab // f, ab % f

    @cuda.jit(device=True, inline=True)
    def begin(state, x0, first, extent, K, tid, geometry):
        H, oh, ow, f, stride, top, left = geometry[0], geometry[3], geometry[4], geometry[5], geometry[6], \
            geometry[7], geometry[8]
        i, kk = origin(tid)
        if k_contiguous:        # pixel rows first + i + l·ROW_STEP: (i·n_H, h·s − top, w·s − left), fixed
            for l in range(LOADS):
                p = x0 + first + i + l * ROW_STEP
                rest = p % (oh * ow)
                state[l, 0] = int32(p // (oh * ow) * H)
                state[l, 1] = int32(rest // ow * stride - top) if first + i + l * ROW_STEP < extent else OUTSIDE
                state[l, 2] = int32(rest % ow * stride - left)
            set_window(state, kk, geometry[2], f)
        else:                   # pixels x0 + kk + l·K_STEP along k: (i, h, w), moving; column first + i
            for l in range(LOADS):
                p = x0 + kk + l * K_STEP
                rest = p % (oh * ow)
                state[l, 0], state[l, 1], state[l, 2] = int32(p // (oh * ow)), int32(rest // ow), int32(rest % ow)
            set_window(state, first + i, geometry[2], f)
            state[WINDOW, 0] = int32(state[WINDOW, 0] - top) if first + i < extent else OUTSIDE
            state[WINDOW, 1] = int32(state[WINDOW, 1] - left)

    @cuda.jit(device=True, inline=True)
    def load(x, state, x0, first, k0, extent, K, tid, staged, geometry):
        H, W, C = uint32(geometry[0]), uint32(geometry[1]), int32(geometry[2])
        oh, ow, f, stride = int32(geometry[3]), int32(geometry[4]), int32(geometry[5]), int32(geometry[6])
        i, kk = origin(tid)
        for l in range(LOADS):
            if k_contiguous:
                row, y, z = state[l, 0], int32(state[l, 1] + state[WINDOW, 0]), int32(state[l, 2] + state[WINDOW, 1])
            else:
                row = int32(state[l, 0] * H)
                y = int32(state[l, 1] * stride + state[WINDOW, 0])
                z = int32(state[l, 2] * stride + state[WINDOW, 1])
            if k0 + kk + l * K_STEP < K and uint32(y) < H and uint32(z) < W:     # unsigned: y ≥ 0 too
                staged[l] = x[uint64(uint32((row + y) * W + z)) * uint64(uint32(C)) + uint64(state[WINDOW, 2])]
            else:
                staged[l] = 0
        if k_contiguous:        # the window position moves on by BK: c first, carrying into b, then a
            _advance(state, WINDOW, BK, C, f)
        else:                   # each pixel moves on by BK: w first, carrying into h, then i
            for l in range(LOADS):
                _advance(state, l, BK, ow, oh)

    return SliceLoader(LOADS, (LOADS + 1, 3), begin, load, slice_store(width, BK, T, k_contiguous))


@cuda.jit
def _col2im(dcols, dx, H, W, C, oh, ow, f, stride, top, left):
    """dx[i, y, z, c] = Σ dcols[(i·oh + h)·ow + w, (a·f + b)·C + c] over the windows (h, w) holding (y, z),
    a = y + top − h·s, b = z + left − w·s."""
    width = f * f * C
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        i, y, z, c = _unravel(k, H, W, C)
        h0, h1 = _windows_holding(y, top, f, stride, oh)
        w0, w1 = _windows_holding(z, left, f, stride, ow)
        total = dcols[0] * 0
        for h in range(h0, h1 + 1):
            a = y + top - h * stride
            for w in range(w0, w1 + 1):
                b = z + left - w * stride
                total += dcols[((i * oh + h) * ow + w) * width + (a * f + b) * C + c]
        dx[k] = total


def _is_pointwise(f, stride, top, left) -> bool:
    """A 1×1 window, stride 1, no padding: the columns are x itself."""
    return f == 1 and stride == 1 and top == 0 and left == 0


def col2im(dcols, x_shape: tuple, f: int, stride: int, top: int, left: int, out_hw: tuple):
    """The adjoint of `im2col`: each pixel of an x-shaped array sums its entries of the columns."""
    m, H, W, C = x_shape
    oh, ow = out_hw
    if _is_pointwise(f, stride, top, left):
        return dcols.reshape(tuple(x_shape))
    dx = device.empty(tuple(x_shape), dcols.dtype)
    blocks, threads = device.launch_1d(dx.size)
    _col2im[blocks, threads](_flat(dcols), _flat(dx), H, W, C, oh, ow, f, stride, top, left)
    return dx


def _dw_groups(m: int, width: int, c_out: int, dtype) -> int:
    """How many groups of images the dW product is split into: enough for DW_TARGET_BLOCKS blocks of the
    tiled product, within DW_PARTIAL_BYTES of partial sums, and a divisor of m."""
    tiling = tiling_for(dtype)
    blocks = math.ceil(width / tiling.BM) * math.ceil(c_out / tiling.BN)
    wanted = min(m, math.ceil(DW_TARGET_BLOCKS / blocks),
                 max(1, DW_PARTIAL_BYTES // (width * c_out * np.dtype(dtype).itemsize)))
    return max(d for d in range(1, wanted + 1) if m % d == 0)


def _geometry(x_shape: tuple, f: int, stride: int, top: int, left: int, out_hw: tuple) -> tuple:
    """The `geometry` tuple `im2col_loader` reads: (n_H, n_W, n_C_prev, oh, ow, f, stride, top, left)."""
    return tuple(int(v) for v in (*x_shape[1:], *out_hw, f, stride, top, left))


def conv2d_forward(x, W, b, stride: int, top: int, left: int, out_hw: tuple):
    """Z = im2col(x)·W₂ + b, W₂ = W as (f·f·n_C_prev, n_C): (m, oh, ow, n_C). A 1×1 window of stride 1 without
    padding is a plain product of x; otherwise the product reads its columns from x (`im2col_loader`)."""
    f, _, c_prev, c_out = W.shape
    W2 = W.reshape((f * f * c_prev, c_out))
    shape = (x.shape[0],) + tuple(out_hw) + (c_out,)
    if _is_pointwise(f, stride, top, left):
        return affine(x.reshape((x.size // c_prev, c_prev)), W2, b).reshape(shape)
    zero, geometry = device_vector((0,)), _geometry(x.shape, f, stride, top, left, out_hw)
    z = with_bias(lambda bias: product(_flat(x), _flat(W2), device.empty((math.prod(shape[:3]), c_out), x.dtype),
                                       f * f * c_prev, zero, zero, bias=bias, a_loader=im2col_loader,
                                       geometry=geometry), b, c_out, x.dtype)
    return z.reshape(shape)


def conv2d_backward(x, W, g, stride: int, top: int, left: int, out_hw: tuple, needs: tuple):
    """(dx, dW, db) for upstream g (m, oh, ow, n_C), None where `needs` (x, W, b) says False:
    dW₂ = im2col(x)ᵀ·G (per group of images, then summed), db = Σ_rows G; dx = col2im(G·W₂ᵀ), which for
    stride 1 is the convolution of g (padded by f − 1 − top, f − 1 − left) with W turned by 180° (`_turned`),
    computed as the forward is, without the columns."""
    f, _, c_prev, c_out = W.shape
    m, width = x.shape[0], f * f * c_prev
    rows = m * out_hw[0] * out_hw[1]
    g2 = g.reshape((rows, c_out))
    dx = dW = db = None
    if needs[1]:
        groups = _dw_groups(m, width, c_out, x.dtype)
        per_group = rows // groups
        partial = device.empty((groups, width, c_out), x.dtype)
        b_offsets = device_vector(tuple(k * per_group * c_out for k in range(groups)))
        if _is_pointwise(f, stride, top, left):
            a_offsets = device_vector(tuple(k * per_group * width for k in range(groups)))
            product(_flat(x), _flat(g2), partial, per_group, a_offsets, b_offsets, trans_a=True)
        else:
            a_offsets = device_vector(tuple(k * per_group for k in range(groups)))     # the groups' first pixels
            product(_flat(x), _flat(g2), partial, per_group, a_offsets, b_offsets, trans_a=True,
                    a_loader=im2col_loader, geometry=_geometry(x.shape, f, stride, top, left, out_hw))
        dW = (partial.reshape((width, c_out)) if groups == 1 else reduce("sum", partial, (0,))).reshape(W.shape)
    if len(needs) > 2 and needs[2]:
        db = column_sums(g2)
    if needs[0]:
        if stride == 1:
            dx = conv2d_forward(g, _turned(W), None, 1, f - 1 - top, f - 1 - left, tuple(x.shape[1:3]))
        else:
            dx = col2im(gemm(g2, W.reshape((width, c_out)), trans_b=True), x.shape, f, stride, top, left, out_hw)
    return dx, dW, db


def _turned(W):
    """W' (f, f, n_C, n_C_prev) with W'[a, b, o, c] = W[f − 1 − a, f − 1 − b, c, o]: the filter that takes g back to
    dx in a stride-1 convolution."""
    f, _, c_prev, c_out = W.shape
    strides = c_strides(W.shape)
    return layout.gather(W, (f - 1) * (strides[0] + strides[1]), (f, f, c_out, c_prev),
                         (-strides[0], -strides[1], 1, c_out))


# ---- pooling -------------------------------------------------------------------------------------
@cuda.jit
def _max_pool_forward(x, out, argmax, H, W, C, oh, ow, f, stride, top, left):
    """out[i, h, w, c] = max of x[i, y, z, c] over the window's pixels inside the image; argmax = y·n_W + z
    of its first maximum in row-major window order (the padding never wins)."""
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, h, w, c = _unravel(k, oh, ow, C)
        y0, z0 = h * stride - top, w * stride - left
        ya, yb = max(y0, 0), min(y0 + f, H)
        za, zb = max(z0, 0), min(z0 + f, W)
        best, where = x[((i * H + ya) * W + za) * C + c], ya * W + za
        for y in range(ya, yb):
            for z in range(za, zb):
                v = x[((i * H + y) * W + z) * C + c]
                if v > best:
                    best, where = v, y * W + z
        out[k], argmax[k] = best, where


@cuda.jit
def _max_pool_backward(g, argmax, dx, H, W, C, oh, ow, f, stride, top, left):
    """dx[i, y, z, c] = Σ g[i, h, w, c] over the windows holding (y, z) whose maximum it was."""
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        i, y, z, c = _unravel(k, H, W, C)
        h0, h1 = _windows_holding(y, top, f, stride, oh)
        w0, w1 = _windows_holding(z, left, f, stride, ow)
        here, total = y * W + z, g[0] * 0
        for h in range(h0, h1 + 1):
            for w in range(w0, w1 + 1):
                o = ((i * oh + h) * ow + w) * C + c
                if argmax[o] == here:
                    total += g[o]
        dx[k] = total


@cuda.jit
def _avg_pool_forward(x, out, H, W, C, oh, ow, f, stride, top, left):
    """out[i, h, w, c] = 1/f² Σ x[i, y, z, c] over the window's pixels inside the image (padding adds 0)."""
    inv_area = 1.0 / (f * f)
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, h, w, c = _unravel(k, oh, ow, C)
        y0, z0 = h * stride - top, w * stride - left
        total = x[0] * 0
        for y in range(max(y0, 0), min(y0 + f, H)):
            for z in range(max(z0, 0), min(z0 + f, W)):
                total += x[((i * H + y) * W + z) * C + c]
        out[k] = total * inv_area


@cuda.jit
def _avg_pool_backward(g, dx, H, W, C, oh, ow, f, stride, top, left):
    """dx[i, y, z, c] = 1/f² Σ g[i, h, w, c] over the windows holding (y, z)."""
    inv_area = 1.0 / (f * f)
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        i, y, z, c = _unravel(k, H, W, C)
        h0, h1 = _windows_holding(y, top, f, stride, oh)
        w0, w1 = _windows_holding(z, left, f, stride, ow)
        total = g[0] * 0
        for h in range(h0, h1 + 1):
            for w in range(w0, w1 + 1):
                total += g[((i * oh + h) * ow + w) * C + c]
        dx[k] = total * inv_area


def _pool_args(x, out_hw, f, stride, top, left):
    m, H, W, C = x.shape
    return (H, W, C, out_hw[0], out_hw[1], f, stride, top, left)


def max_pool_forward(x, f: int, stride: int, top: int, left: int, out_hw: tuple):
    """(out (m, oh, ow, C), argmax int32 of the same shape: y·n_W + z of each window's first maximum)."""
    shape = (x.shape[0],) + tuple(out_hw) + (x.shape[3],)
    out, argmax = device.empty(shape, x.dtype), device.empty(shape, np.int32)
    blocks, threads = device.launch_1d(out.size)
    _max_pool_forward[blocks, threads](_flat(x), _flat(out), _flat(argmax), *_pool_args(x, out_hw, f, stride, top,
                                                                                         left))
    return out, argmax


def max_pool_backward(g, argmax, x_shape: tuple, f: int, stride: int, top: int, left: int):
    dx = device.empty(tuple(x_shape), g.dtype)
    blocks, threads = device.launch_1d(dx.size)
    _max_pool_backward[blocks, threads](_flat(g), _flat(argmax), _flat(dx),
                                        *_pool_args(dx, g.shape[1:3], f, stride, top, left))
    return dx


def avg_pool_forward(x, f: int, stride: int, top: int, left: int, out_hw: tuple):
    out = device.empty((x.shape[0],) + tuple(out_hw) + (x.shape[3],), x.dtype)
    blocks, threads = device.launch_1d(out.size)
    _avg_pool_forward[blocks, threads](_flat(x), _flat(out), *_pool_args(x, out_hw, f, stride, top, left))
    return out


def avg_pool_backward(g, x_shape: tuple, f: int, stride: int, top: int, left: int):
    dx = device.empty(tuple(x_shape), g.dtype)
    blocks, threads = device.launch_1d(dx.size)
    _avg_pool_backward[blocks, threads](_flat(g), _flat(dx), *_pool_args(dx, g.shape[1:3], f, stride, top, left))
    return dx


# ---- global average pooling ----------------------------------------------------------------------
@cuda.jit
def _global_avg_pool_forward(x, out, HW, C):
    """out[i, c] = 1/(n_H·n_W) Σ_{p} x[i, p, c] (one thread per (i, c); neighbours read neighbouring c)."""
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c, i = k % C, k // C
        total = x[0] * 0
        base = i * HW * C + c
        for p in range(HW):
            total += x[base + p * C]
        out[k] = total / HW


@cuda.jit
def _global_avg_pool_backward(g, dx, HW, C):
    """dx[i, p, c] = g[i, c]/(n_H·n_W)."""
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c, i = k % C, k // (HW * C)
        dx[k] = g[i * C + c] / HW


def global_avg_pool_forward(x):
    m, H, W, C = x.shape
    out = device.empty((m, C), x.dtype)
    blocks, threads = device.launch_1d(out.size)
    _global_avg_pool_forward[blocks, threads](_flat(x), _flat(out), H * W, C)
    return out


def global_avg_pool_backward(g, x_shape: tuple):
    m, H, W, C = x_shape
    dx = device.empty(tuple(x_shape), g.dtype)
    blocks, threads = device.launch_1d(dx.size)
    _global_avg_pool_backward[blocks, threads](_flat(g), _flat(dx), H * W, C)
    return dx

