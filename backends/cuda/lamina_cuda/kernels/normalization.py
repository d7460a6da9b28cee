"""Batch normalization over the rows of x as (N, C), C = the features (last) axis, and the per-column
sums it and the conv2d bias gradient are made of.

A column sum over many rows is split in passes so that the whole GPU takes part: chunks of rows
× columns, one thread each (neighbouring threads read neighbouring columns), write partial sums;
the chunks' sums are added the same way while there are more than CHUNK_ROWS of them, then by one
thread per column. Every pass runs in a fixed order, so the sums are deterministic.
"""
from __future__ import annotations

import math

from numba import cuda

from .. import device
from .elementwise import _flat, mul
from .reduction import reduce

#: rows each thread of the first pass adds up
CHUNK_ROWS = 64

_SUM, _SQUARED_DEVIATION, _GRAD_SUMS = 0, 1, 2


@cuda.jit
def _partial_column_sums(a, b, center, partial, rows, cols, chunk, mode):
    """Over the rows r of chunk k, for column c: s1 = Σ a (mode 0), Σ (a − center_c)² (mode 1), or
    s1 = Σ a and s2 = Σ a·(b − center_c) (mode 2); partial[k, 0, c] = s1, partial[k, 1, c] = s2."""
    chunks = partial.size // (2 * cols)
    for t in range(cuda.grid(1), chunks * cols, cuda.gridsize(1)):
        k, c = t // cols, t % cols
        s1, s2 = a[0] * 0, a[0] * 0
        for r in range(k * chunk, min(rows, (k + 1) * chunk)):
            v = a[r * cols + c]
            if mode == 0:
                s1 += v
            elif mode == 1:
                d = v - center[c]
                s1 += d * d
            else:
                s1 += v
                s2 += v * (b[r * cols + c] - center[c])
        partial[(2 * k) * cols + c] = s1
        partial[(2 * k + 1) * cols + c] = s2


def _column_sums(mode: int, a2, b2=None, center=None):
    """(2, C) sums over the rows of the (N, C) arrays (see `_partial_column_sums`)."""
    rows, cols = a2.shape
    chunks = max(1, math.ceil(rows / CHUNK_ROWS))
    partial = device.empty((chunks, 2, cols), a2.dtype)
    blocks, threads = device.launch_1d(chunks * cols)
    _partial_column_sums[blocks, threads](_flat(a2), _flat(a2 if b2 is None else b2),
                                          a2[0] if center is None else center, _flat(partial), rows, cols,
                                          CHUNK_ROWS, mode)
    if chunks == 1:
        return partial.reshape((2, cols))
    if chunks > CHUNK_ROWS:              # many chunks: sum them in parallel the same way, not one thread a column
        return _column_sums(_SUM, partial.reshape((chunks, 2 * cols)))[0].reshape((2, cols))
    return reduce("sum", partial, (0,))


def column_sums(a2):
    """Σ_rows of the (N, C) device array: (C,)."""
    return _column_sums(_SUM, a2)[0]


# ---- per-feature statistics (C threads) ---------------------------------------------------------
@cuda.jit
def _training_statistics(deviations, gamma, beta, running_mean, running_var, momentum, epsilon, n, mean, inv_std,
                         scale, shift):
    """From deviations[0] = Σ (x − μ)²: σ² = deviations[0]/N, inv_std = 1/√(σ² + ε), scale = γ·inv_std,
    shift = β; running ← momentum·running + (1 − momentum)·(μ, σ²·N/(N − 1)), in place."""
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        var = deviations[0, c] / n
        inv_std[c] = 1.0 / math.sqrt(var + epsilon)
        scale[c] = gamma[c] * inv_std[c]
        shift[c] = beta[c]
        running_mean[c] = momentum * running_mean[c] + (1 - momentum) * mean[c]
        running_var[c] = momentum * running_var[c] + (1 - momentum) * var * n / (n - 1)


@cuda.jit
def _mean(sums, n, mean):
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        mean[c] = sums[0, c] / n


@cuda.jit
def _inference_statistics(gamma, beta, running_mean, running_var, epsilon, mean, inv_std, scale, shift):
    """μ, σ² = the running averages; inv_std = 1/√(σ² + ε), scale = γ·inv_std, shift = β."""
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        mean[c] = running_mean[c]
        inv_std[c] = 1.0 / math.sqrt(running_var[c] + epsilon)
        scale[c] = gamma[c] * inv_std[c]
        shift[c] = beta[c]


@cuda.jit
def _normalize(x, mean, scale, shift, out, cols):
    """out = (x − μ)·scale + shift per column."""
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c = k % cols
        out[k] = (x[k] - mean[c]) * scale[c] + shift[c]


@cuda.jit
def _parameter_grads(sums, gamma, inv_std, d_gamma, d_beta, d_mean, d_var, inference):
    """dβ = Σ g, dγ = Σ g·x̂ = Σ g·(x − μ)·inv_std; in inference also d running_mean = −γ·inv_std·Σ g and
    d running_var = −½·γ·inv_std³·Σ g·(x − μ)."""
    for c in range(cuda.grid(1), d_beta.size, cuda.gridsize(1)):
        d_beta[c] = sums[0, c]
        d_gamma[c] = sums[1, c] * inv_std[c]
        if inference:
            d_mean[c] = -gamma[c] * inv_std[c] * sums[0, c]
            d_var[c] = -0.5 * gamma[c] * inv_std[c] ** 3 * sums[1, c]


@cuda.jit
def _training_input_grad(g, x, mean, scale, inv_std, sums, n, dx, cols):
    """dx = γ·inv_std/N·(N·g − Σ g − x̂·Σ g·x̂), x̂ = (x − μ)·inv_std."""
    for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c = k % cols
        x_hat = (x[k] - mean[c]) * inv_std[c]
        dx[k] = scale[c] * (g[k] - (sums[0, c] + x_hat * sums[1, c] * inv_std[c]) / n)


def _per_feature(kernel, c: int, *args):
    blocks, threads = device.launch_1d(c)
    kernel[blocks, threads](*args)


def batch_norm_forward(x2, gamma, beta, running_mean, running_var, training: bool, momentum: float,
                       epsilon: float):
    """(out (N, C), mean, inv_std, scale) for x as (N, C); in training the running averages are updated in
    place (see the kernels' formulas)."""
    n, c = x2.shape
    dtype = x2.dtype.type
    mean, inv_std, scale, shift = (device.empty((c,), x2.dtype) for _ in range(4))
    if training:
        _per_feature(_mean, c, _column_sums(_SUM, x2), dtype(n), mean)
        deviations = _column_sums(_SQUARED_DEVIATION, x2, center=mean)
        _per_feature(_training_statistics, c, deviations, gamma, beta, running_mean, running_var, dtype(momentum),
                     dtype(epsilon), dtype(n), mean, inv_std, scale, shift)
    else:
        _per_feature(_inference_statistics, c, gamma, beta, running_mean, running_var, dtype(epsilon), mean,
                     inv_std, scale, shift)
    out = device.empty(x2.shape, x2.dtype)
    blocks, threads = device.launch_1d(out.size)
    _normalize[blocks, threads](_flat(x2), mean, scale, shift, _flat(out), c)
    return out, mean, inv_std, scale


def batch_norm_backward(g2, x2, gamma, mean, inv_std, scale, training: bool, needs: tuple):
    """(dx, dγ, dβ, d running_mean, d running_var), None where `needs` says False (and for the running
    averages in training, which do not reach the output)."""
    n, c = x2.shape
    grads = [None] * 5
    if training or any(needs[1:]):
        sums = _column_sums(_GRAD_SUMS, g2, x2, mean)
        d_gamma, d_beta, d_mean, d_var = (device.empty((c,), x2.dtype) for _ in range(4))
        _per_feature(_parameter_grads, c, sums, gamma, inv_std, d_gamma, d_beta, d_mean, d_var, not training)
        grads[1:] = (d_gamma, d_beta) + ((None, None) if training else (d_mean, d_var))
    if needs[0]:
        dx = device.empty(x2.shape, x2.dtype)
        blocks, threads = device.launch_1d(dx.size)
        if training:
            _training_input_grad[blocks, threads](_flat(g2), _flat(x2), mean, scale, inv_std, sums,
                                                  x2.dtype.type(n), _flat(dx), c)
        else:                                                  # dx = g·γ·inv_std
            mul(g2, scale, out=dx)
        grads[0] = dx
    return tuple(grad if need else None for grad, need in zip(grads, needs))

