"""Convolution and pooling ops on NHWC images (§4.1–4.4): conv2d, max/avg pooling, global pooling.

Images are `(m, n_H, n_W, n_C)`, filters `(f, f, n_C_prev, n_C)` (HWIO). Along each spatial axis
an input of size n, padded by p_begin + p_end and read by an f-wide window moving by s, gives

    n_out = ⌊(n + p_begin + p_end − f)/s⌋ + 1        (the seed's ⌊(n + 2p − f)/s⌋ + 1)

`padding` is an int p (p on every side), "valid" (0) or "same": TensorFlow's rule, total
pad = max((⌈n/s⌉ − 1)·s + f − n, 0) split with the extra pixel on the bottom/right, so that
n_out = ⌈n/s⌉ (for stride 1 and odd f it is the seed's p = (f − 1)/2 on both sides).

The defaults are written with primitive ops only: every window position is gathered by one
`getitem` with integer index arrays (its backward scatter-adds), positions in the padding read
pixel 0 and are then masked (times 0, plus a fill value), and a convolution is then one `matmul`
(im2col). Backends replace them with fused kernels (the CPU backend does).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import OpError, ShapeError
from .registry import COMPOSITE, Op, Sample, call, check_float, check_ndim

PADDING_NAMES = ("valid", "same")


# ---- shape rules (one source of truth: the kernels and the layers use these) ------------------
def axis_padding(op: str, n: int, f: int, stride: int, padding) -> tuple[int, int]:
    """(pad before, pad after) along an axis of size n for a window f moving by `stride`."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            total = max((math.ceil(n / stride) - 1) * stride + f - n, 0)
            return total // 2, total - total // 2
        raise OpError(f"{op}: 'padding' must be 'valid', 'same' or a non-negative int, got {padding!r}")
    if isinstance(padding, (bool, np.bool_)) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise OpError(f"{op}: 'padding' must be 'valid', 'same' or a non-negative int, got {padding!r}")
    return int(padding), int(padding)


def output_size(n: int, f: int, stride: int, pads: tuple[int, int]) -> int:
    """⌊(n + p_begin + p_end − f)/s⌋ + 1."""
    return (n + pads[0] + pads[1] - f) // stride + 1


def spatial_geometry(op: str, shape: tuple, f: int, stride: int, padding):
    """((pad_top, pad_bottom), (pad_left, pad_right)), (n_H_out, n_W_out) for an NHWC `shape`; a clear
    error when the window does not fit the padded input."""
    _check_window(op, f, stride)
    pads = tuple(axis_padding(op, n, f, stride, padding) for n in shape[1:3])
    for n, (before, after), axis in zip(shape[1:3], pads, ("height", "width")):
        if n + before + after < f:
            raise ShapeError(f"{op}: the {f}×{f} window is larger than the padded input: {axis} {n} + padding "
                             f"{before}+{after} < f = {f} (input shape {shape}, padding={padding!r})")
    return pads, tuple(output_size(n, f, stride, p) for n, p in zip(shape[1:3], pads))


def _check_window(op, f, stride):
    for name, value in (("f", f), ("stride", stride)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise OpError(f"{op}: {name!r} must be a positive int, got {value!r}")


# ---- the gather every default shares ---------------------------------------------------------------
def window_index(shape: tuple, f: int, stride: int, pads, out_hw):
    """(rows, cols, inside): integer arrays of shape (n_H_out, n_W_out, f, f) with the input pixel each
    window position reads (0 where it falls in the padding) and a 0/1 mask of the positions inside."""
    (top, _), (left, _) = pads
    oh, ow = out_hw
    h = (np.arange(oh) * stride - top)[:, None, None, None] + np.arange(f)[None, None, :, None]
    w = (np.arange(ow) * stride - left)[None, :, None, None] + np.arange(f)[None, None, None, :]
    h, w = np.broadcast_arrays(h, w)
    inside = (h >= 0) & (h < shape[1]) & (w >= 0) & (w < shape[2])
    return np.where(inside, h, 0), np.where(inside, w, 0), inside


def _windows(x, f, stride, pads, out_hw, fill=0.0):
    """x (m, n_H, n_W, C) -> (m, n_H_out, n_W_out, f, f, C), positions in the padding set to `fill`."""
    from ..tensor import Tensor

    rows, cols, inside = window_index(x.shape, f, stride, pads, out_hw)
    patches = call("getitem", x, index=(slice(None), rows, cols, slice(None)))
    if inside.all():
        return patches
    mask = Tensor(inside[..., None], dtype=x.dtype, backend=x.backend)
    patches = patches * mask
    if fill != 0.0:
        patches = patches + Tensor((~inside[..., None]) * fill, dtype=x.dtype, backend=x.backend)
    return patches


# ---- conv2d ----------------------------------------------------------------------------------------
def conv2d(x, W, b=None, *, stride=1, padding="valid"):
    """Z[i, h, w, k] = Σ_{a,b,c} x_pad[i, h·s + a, w·s + b, c]·W[a, b, c, k] + b[k] (cross-correlation,
    as every framework), x (m, n_H, n_W, n_C_prev), W (f, f, n_C_prev, n_C), b (n_C,), zero padding;
    output (m, ⌊(n_H + 2p − f)/s⌋ + 1, ⌊(n_W + 2p − f)/s⌋ + 1, n_C)."""
    f, _, c_prev, c_out = W.shape
    pads, (oh, ow) = spatial_geometry("conv2d", x.shape, f, stride, padding)
    cols = _windows(x, f, stride, pads, (oh, ow)).reshape(x.shape[0] * oh * ow, f * f * c_prev)
    z = call("matmul", cols, W.reshape(f * f * c_prev, c_out))
    if b is not None:
        z = z + b
    return z.reshape(x.shape[0], oh, ow, c_out)


def _check_conv2d(x, W, b=None, *, stride=1, padding="valid"):
    check_ndim("conv2d", "x", x, (4,))
    check_ndim("conv2d", "W", W, (4,))
    check_float("conv2d", "x", x)
    if W.shape[0] != W.shape[1]:
        raise ShapeError(f"conv2d: filters 'W' must be square (f, f, n_C_prev, n_C), got shape {W.shape}")
    if x.shape[3] != W.shape[2]:
        raise ShapeError(f"conv2d: input 'x' has n_C_prev = {x.shape[3]} channels (shape {x.shape}) but 'W' "
                         f"expects {W.shape[2]} (shape {W.shape}, HWIO)")
    if b is not None and b.shape != (W.shape[3],):
        raise ShapeError(f"conv2d: bias 'b' must have shape ({W.shape[3]},) to match W {W.shape}, got {b.shape}")
    for name, t in (("W", W), ("b", b)):
        if t is not None and t.dtype != x.dtype:
            raise OpError(f"conv2d: {name!r} has dtype {t.dtype} but x has {x.dtype}; they must match")
    spatial_geometry("conv2d", x.shape, W.shape[0], stride, padding)


def _conv2d_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(2, 6, 6, 1), r(3, 3, 1, 2), r(2))),                                    # 6×6 * 3×3 -> 4×4
            Sample((r(1, 5, 4, 2), r(3, 3, 2, 3), r(3)), {"padding": "same"}),
            Sample((r(2, 7, 6, 2), r(2, 2, 2, 2)), {"stride": 2, "padding": 1}),               # even f
            Sample((r(1, 7, 8, 1), r(3, 3, 1, 2), r(2)), {"stride": 3, "padding": "same"}),    # asymmetric pad
            Sample((r(2, 3, 3, 3), r(1, 1, 3, 2), r(2)))]                                       # 1×1 convolution


# ---- pooling ---------------------------------------------------------------------------------------
def _pool_geometry(op, x, f, stride, padding):
    stride = f if stride is None else stride
    pads, out_hw = spatial_geometry(op, x.shape, f, stride, padding)
    return stride, pads, out_hw


def max_pool2d(x, *, f, stride=None, padding=0):
    """out[i, h, w, c] = max over the f×f window at (h·s, w·s) of channel c; stride defaults to f;
    the padding is never the maximum (as PyTorch's −∞ padding). The gradient goes to the maximum
    (shared equally among tied maxima here; the CPU kernel gives it to the first, as PyTorch)."""
    stride, pads, out_hw = _pool_geometry("max_pool2d", x, f, stride, padding)
    lowest = -float(np.finfo(x.dtype).max)
    return call("max", _windows(x, f, stride, pads, out_hw, fill=lowest), axis=(3, 4))


def avg_pool2d(x, *, f, stride=None, padding=0):
    """out[i, h, w, c] = 1/f² Σ over the f×f window at (h·s, w·s) of channel c; stride defaults to f.
    Padding counts as zeros in the average (PyTorch's default count_include_pad=True)."""
    stride, pads, out_hw = _pool_geometry("avg_pool2d", x, f, stride, padding)
    return call("sum", _windows(x, f, stride, pads, out_hw), axis=(3, 4)) * (1.0 / (f * f))


def _check_pool(op):
    def check(x, *, f, stride=None, padding=0):
        check_ndim(op, "x", x, (4,))
        check_float(op, "x", x)
        stride, pads, _ = _pool_geometry(op, x, f, stride, padding)
        if max(max(p) for p in pads) > f // 2:
            raise ShapeError(f"{op}: padding {pads} (top/bottom, left/right) exceeds half the window f = {f}: a "
                             f"window could hold padding only (input shape {x.shape}, padding={padding!r})")
    return check


def _distinct(rng, shape, dtype):
    """Values 0.05 apart in random order: no ties, so the max's gradient is well defined."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) * 0.05 - size * 0.025).astype(dtype)


def _pool_samples(rng, dtype):
    d = lambda *s: _distinct(rng, s, dtype)  # noqa: E731
    return [Sample((d(2, 4, 4, 2),), {"f": 2}),
            Sample((d(1, 5, 5, 3),), {"f": 3, "stride": 1, "padding": 1}),
            Sample((d(2, 7, 6, 1),), {"f": 3, "stride": 2}),
            Sample((d(1, 5, 7, 2),), {"f": 2, "stride": 3, "padding": "same"}),
            Sample((d(1, 6, 5, 2),), {"f": 3, "stride": 1, "padding": "same"})]


def global_avg_pool2d(x):
    """out[i, c] = 1/(n_H·n_W) Σ_{h,w} x[i, h, w, c]: (m, n_H, n_W, n_C) -> (m, n_C)."""
    return call("mean", x, axis=(1, 2))


def _check_global_pool(x):
    check_ndim("global_avg_pool2d", "x", x, (4,))
    check_float("global_avg_pool2d", "x", x)


def _global_pool_samples(rng, dtype):
    return [Sample((rng.standard_normal((2, 3, 4, 5)).astype(dtype),)),
            Sample((rng.standard_normal((1, 1, 1, 3)).astype(dtype),))]


CONVOLUTION_OPS = [
    Op("conv2d", COMPOSITE, _conv2d_samples, _check_conv2d, default=conv2d, doc=conv2d.__doc__),
    Op("max_pool2d", COMPOSITE, _pool_samples, _check_pool("max_pool2d"), default=max_pool2d,
       doc=max_pool2d.__doc__),
    Op("avg_pool2d", COMPOSITE, _pool_samples, _check_pool("avg_pool2d"), default=avg_pool2d,
       doc=avg_pool2d.__doc__),
    Op("global_avg_pool2d", COMPOSITE, _global_pool_samples, _check_global_pool, default=global_avg_pool2d,
       doc=global_avg_pool2d.__doc__),
]
