"""Batch normalization over the rows of x as (N, C), C = the features (last) axis, and the per-column
sums and moments it and the conv2d bias gradient are made of.

A column sum over many rows is split in passes so that the whole GPU takes part: chunks of rows
× columns, one thread each (neighbouring threads read neighbouring columns), write partial sums;
the chunks' sums are added the same way while there are more than CHUNK_ROWS of them, then by one
thread per column. The training statistics go the same way in one pass over x: each chunk's mean and
sum of squared deviations by Welford's update, merged by Chan's formula, which, unlike Σx² − (Σx)²/N,
keeps its accuracy when the mean is large against the spread. Every pass runs in a fixed order, so the
results are deterministic.
"""
from __future__ import annotations

import math

from numba import cuda

from .. import device
from .elementwise import _flat, mul
from .reduction import reduce

#: rows each thread of the first pass adds up
CHUNK_ROWS = 64

_SUM, _GRAD_SUMS = 0, 1


@cuda.jit
def _partial_column_sums(a, b, center, partial, rows, cols, chunk, mode):
    """Over the rows r of chunk k, for column c: s1 = Σ a (mode _SUM), or s1 = Σ a and s2 = Σ a·(b − center_c)
    (mode _GRAD_SUMS); partial[k, 0, c] = s1, partial[k, 1, c] = s2."""
    chunks = partial.size // (2 * cols)
    for t in range(cuda.grid(1), chunks * cols, cuda.gridsize(1)):
        k, c = t // cols, t % cols
        s1, s2 = a[0] * 0, a[0] * 0
        for r in range(k * chunk, min(rows, (k + 1) * chunk)):
            v = a[r * cols + c]
            s1 += v
            if mode == _GRAD_SUMS:
                s2 += v * (b[r * cols + c] - center[c])
        partial[(2 * k) * cols + c] = s1
        partial[(2 * k + 1) * cols + c] = s2


@cuda.jit(device=True)
def _summed(partial, first, last, c, cols):
    """(Σ s1, Σ s2) of chunks first … last − 1 of `partial` (chunks, 2, C), for column c, in order."""
    s1, s2 = partial[0] * 0, partial[0] * 0
    for k in range(first, last):
        s1 += partial[(2 * k) * cols + c]
        s2 += partial[(2 * k + 1) * cols + c]
    return s1, s2


@cuda.jit
def _merge_sums(partial, merged, rows, cols, chunk, group):
    """merged[j] = the sums of partial's chunks j·group … (j + 1)·group − 1, for every column."""
    chunks, outer = partial.size // (2 * cols), merged.size // (2 * cols)
    for t in range(cuda.grid(1), outer * cols, cuda.gridsize(1)):
        j, c = t // cols, t % cols
        merged[(2 * j) * cols + c], merged[(2 * j + 1) * cols + c] = _summed(
            partial, j * group, min(chunks, (j + 1) * group), c, cols)


def _merge_passes(partial, merge, rows: int, chunk: int):
    """(partial, rows per chunk) after merging `partial` (chunks, 2, C) CHUNK_ROWS chunks at a time with the kernel
    `merge` (`_merge_sums`, `_merge_moments`) while there are more than CHUNK_ROWS: the whole GPU takes part,
    not one thread a column."""
    chunks, _, cols = partial.shape
    while chunks > CHUNK_ROWS:
        outer = math.ceil(chunks / CHUNK_ROWS)
        merged = device.empty((outer, 2, cols), partial.dtype)
        blocks, threads = device.launch_1d(outer * cols)
        merge[blocks, threads](_flat(partial), _flat(merged), rows, cols, chunk, CHUNK_ROWS)
        partial, chunks, chunk = merged, outer, chunk * CHUNK_ROWS
    return partial, chunk


def _chunk_sums(mode: int, a2, b2=None, center=None):
    """The sums of `_partial_column_sums` over the rows of the (N, C) arrays, in at most CHUNK_ROWS chunks:
    (chunks, 2, C)."""
    rows, cols = a2.shape
    chunks = max(1, math.ceil(rows / CHUNK_ROWS))
    partial = device.empty((chunks, 2, cols), a2.dtype)
    blocks, threads = device.launch_1d(chunks * cols)
    _partial_column_sums[blocks, threads](_flat(a2), _flat(a2 if b2 is None else b2),
                                          a2[0] if center is None else center, _flat(partial), rows, cols,
                                          CHUNK_ROWS, mode)
    return _merge_passes(partial, _merge_sums, rows, CHUNK_ROWS)[0]


def column_sums(a2):
    """Σ_rows of the (N, C) device array: (C,)."""
    partial = _chunk_sums(_SUM, a2)
    return (partial[0] if partial.shape[0] == 1 else reduce("sum", partial, (0,)))[0]


# ---- moments: Welford within a chunk, Chan's merge across chunks ----------------------------------
@cuda.jit
def _partial_moments(x, partial, rows, cols, chunk):
    """Over the rows of chunk k, for column c, by Welford's update: partial[k, 0, c] = the mean,
    partial[k, 1, c] = M2 = Σ (x − mean)²."""
    chunks = partial.size // (2 * cols)
    for t in range(cuda.grid(1), chunks * cols, cuda.gridsize(1)):
        k, c = t // cols, t % cols
        mean, m2, count = x[0] * 0, x[0] * 0, 0
        for r in range(k * chunk, min(rows, (k + 1) * chunk)):
            v = x[r * cols + c]
            count += 1
            delta = v - mean
            mean += delta / count
            m2 += delta * (v - mean)
        partial[(2 * k) * cols + c] = mean
        partial[(2 * k + 1) * cols + c] = m2


@cuda.jit(device=True)
def _merged(partial, first, last, c, cols, rows, chunk):
    """(count, mean, M2) of chunks first … last − 1 of `partial` (chunk k holds rows k·chunk … of `rows`), for
    column c, merged in order by Chan's formula: δ = mean_b − mean_a, mean = mean_a + δ·n_b/n,
    M2 = M2_a + M2_b + δ²·n_a·n_b/n."""
    count, mean, m2 = 0, partial[0] * 0, partial[0] * 0
    for k in range(first, last):
        n_b = min(chunk, rows - k * chunk)
        total = count + n_b
        delta = partial[(2 * k) * cols + c] - mean
        mean += delta * n_b / total
        m2 += partial[(2 * k + 1) * cols + c] + delta * delta * count * n_b / total
        count = total
    return count, mean, m2


@cuda.jit
def _merge_moments(partial, merged, rows, cols, chunk, group):
    """merged[j] = the moments of partial's chunks j·group … (j + 1)·group − 1, for every column."""
    chunks, outer = partial.size // (2 * cols), merged.size // (2 * cols)
    for t in range(cuda.grid(1), outer * cols, cuda.gridsize(1)):
        j, c = t // cols, t % cols
        _, mean, m2 = _merged(partial, j * group, min(chunks, (j + 1) * group), c, cols, rows, chunk)
        merged[(2 * j) * cols + c] = mean
        merged[(2 * j + 1) * cols + c] = m2


def _moments(x2):
    """(partial moments (chunks, 2, C) of at most CHUNK_ROWS chunks, rows per chunk) of the (N, C) array."""
    rows, cols = x2.shape
    chunk = CHUNK_ROWS
    chunks = max(1, math.ceil(rows / chunk))
    partial = device.empty((chunks, 2, cols), x2.dtype)
    blocks, threads = device.launch_1d(chunks * cols)
    _partial_moments[blocks, threads](_flat(x2), _flat(partial), rows, cols, chunk)
    return _merge_passes(partial, _merge_moments, rows, chunk)


# ---- per-feature statistics (C threads) ---------------------------------------------------------
@cuda.jit
def _training_statistics(partial, rows, chunk, gamma, beta, running_mean, running_var, momentum, epsilon, mean,
                         inv_std, scale, shift):
    """From the chunks' moments (`_merged`): μ, σ² = M2/N, inv_std = 1/√(σ² + ε), scale = γ·inv_std, shift = β;
    running ← momentum·running + (1 − momentum)·(μ, σ²·N/(N − 1)), in place."""
    cols = mean.size
    chunks = partial.size // (2 * cols)
    for c in range(cuda.grid(1), cols, cuda.gridsize(1)):
        n, mu, m2 = _merged(partial, 0, chunks, c, cols, rows, chunk)
        var = m2 / n
        mean[c] = mu
        inv_std[c] = 1.0 / math.sqrt(var + epsilon)
        scale[c] = gamma[c] * inv_std[c]
        shift[c] = beta[c]
        running_mean[c] = momentum * running_mean[c] + (1 - momentum) * mu
        running_var[c] = momentum * running_var[c] + (1 - momentum) * m2 / (n - 1)


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
def _parameter_grads(partial, sums, gamma, inv_std, d_gamma, d_beta, d_mean, d_var, inference):
    """sums = (Σ g, Σ g·(x − μ)) from the chunks' partial sums; dβ = Σ g, dγ = Σ g·x̂ = Σ g·(x − μ)·inv_std; in
    inference also d running_mean = −γ·inv_std·Σ g and d running_var = −½·γ·inv_std³·Σ g·(x − μ)."""
    cols = d_beta.size
    chunks = partial.size // (2 * cols)
    for c in range(cuda.grid(1), cols, cuda.gridsize(1)):
        sums[0, c], sums[1, c] = _summed(partial, 0, chunks, c, cols)
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
        partial, chunk = _moments(x2)
        _per_feature(_training_statistics, c, _flat(partial), n, chunk, gamma, beta, running_mean, running_var,
                     dtype(momentum), dtype(epsilon), mean, inv_std, scale, shift)
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
        sums = device.empty((2, c), x2.dtype)
        d_gamma, d_beta, d_mean, d_var = (device.empty((c,), x2.dtype) for _ in range(4))
        _per_feature(_parameter_grads, c, _flat(_chunk_sums(_GRAD_SUMS, g2, x2, mean)), sums, gamma, inv_std, d_gamma,
                     d_beta, d_mean, d_var, not training)
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

