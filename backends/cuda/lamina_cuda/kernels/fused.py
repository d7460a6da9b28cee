"""Fused kernels for the hot composite ops: softmax and log-softmax over rows, softmax cross-entropy,
the bias row sum of dense layers, and the optimizer updates, which work in place."""
from __future__ import annotations

import math

from numba import cuda

from .. import device
from .elementwise import _flat


# ---- softmax over rows (one thread per row) ----------------------------------------------------------
@cuda.jit(device=True)
def _row_shift_and_log_norm(z, base, cols):
    """(max z, log Σ e^(z - max z)) of the row starting at `base`."""
    shift = z[base]
    for j in range(1, cols):
        shift = max(shift, z[base + j])
    total = z[base] * 0
    for j in range(cols):
        total += math.exp(z[base + j] - shift)
    return shift, math.log(total)


@cuda.jit
def _softmax_rows(z, out, cols, log):
    for row in range(cuda.grid(1), z.size // cols, cuda.gridsize(1)):
        base = row * cols
        shift, log_norm = _row_shift_and_log_norm(z, base, cols)
        for j in range(cols):
            y = z[base + j] - shift - log_norm
            out[base + j] = y if log else math.exp(y)


@cuda.jit
def _softmax_rows_backward(y, g, dz, cols, log):
    """softmax: dz = y·(g - Σ g·y); log-softmax: dz = g - e^y·Σ g."""
    for row in range(cuda.grid(1), y.size // cols, cuda.gridsize(1)):
        base = row * cols
        total = g[base] * 0
        for j in range(cols):
            total += g[base + j] if log else g[base + j] * y[base + j]
        for j in range(cols):
            dz[base + j] = g[base + j] - math.exp(y[base + j]) * total if log else y[base + j] * (g[base + j] - total)


def softmax_rows(z, log: bool):
    """Softmax (or log-softmax) over the last axis of the C-ordered z."""
    out = device.empty(z.shape, z.dtype)
    cols = tuple(z.shape)[-1]
    blocks, threads = device.launch_1d(z.size // cols)
    _softmax_rows[blocks, threads](_flat(z), _flat(out), cols, log)
    return out


def softmax_rows_backward(y, g, log: bool):
    dz = device.empty(y.shape, y.dtype)
    cols = tuple(y.shape)[-1]
    blocks, threads = device.launch_1d(y.size // cols)
    _softmax_rows_backward[blocks, threads](_flat(y), _flat(g), _flat(dz), cols, log)
    return dz


# ---- softmax cross-entropy --------------------------------------------------------------------------
@cuda.jit
def _cross_entropy_index(z, labels, losses, shifts, log_norms, cols):
    """losses_i = log Σ_k e^(z_ik) - z_i,label; NaN for a label outside [0, cols) (the op's check reports those
    before any kernel runs: this only keeps a direct call from reading outside the row)."""
    for row in range(cuda.grid(1), labels.size, cuda.gridsize(1)):
        base = row * cols
        shift, log_norm = _row_shift_and_log_norm(z, base, cols)
        shifts[row], log_norms[row] = shift, log_norm
        label = labels[row]
        if 0 <= label < cols:
            losses[row] = shift + log_norm - z[base + label]
        else:
            losses[row] = math.nan


@cuda.jit
def _cross_entropy_index_backward(z, labels, shifts, log_norms, g, inv_m, dz, cols):
    """dz = g/m·(softmax(z) - onehot(label)), g the loss's upstream gradient (read here, not on the host)."""
    scale = g[0] * inv_m
    for row in range(cuda.grid(1), labels.size, cuda.gridsize(1)):
        base = row * cols
        for j in range(cols):
            p = math.exp(z[base + j] - shifts[row] - log_norms[row])
            dz[base + j] = scale * (p - 1) if j == labels[row] else scale * p


@cuda.jit
def _cross_entropy_dense(z, y, losses, shifts, log_norms, y_sums, cols):
    """losses_i = Σ_k y_ik·(log Σ_j e^(z_ij) - z_ik)."""
    for row in range(cuda.grid(1), y.size // cols, cuda.gridsize(1)):
        base = row * cols
        shift, log_norm = _row_shift_and_log_norm(z, base, cols)
        shifts[row], log_norms[row] = shift, log_norm
        loss, y_sum = z[base] * 0, z[base] * 0
        for j in range(cols):
            loss += y[base + j] * (shift + log_norm - z[base + j])
            y_sum += y[base + j]
        losses[row], y_sums[row] = loss, y_sum


@cuda.jit
def _cross_entropy_dense_backward(z, y, shifts, log_norms, y_sums, g, inv_m, dz, dy, label_grad):
    """dz = g/m·(softmax(z)·Σ_k y_k - y); dy = -g/m·log softmax(z)."""
    scale = g[0] * inv_m
    cols = z.size // shifts.size
    for row in range(cuda.grid(1), shifts.size, cuda.gridsize(1)):
        base = row * cols
        for j in range(cols):
            log_p = z[base + j] - shifts[row] - log_norms[row]
            dz[base + j] = scale * (math.exp(log_p) * y_sums[row] - y[base + j])
            if label_grad:
                dy[base + j] = -scale * log_p


def cross_entropy_index(z, labels):
    """(per-row losses, shifts, log norms) for integer labels."""
    m, cols = z.shape
    losses, shifts, log_norms = (device.empty((m,), z.dtype) for _ in range(3))
    blocks, threads = device.launch_1d(m)
    _cross_entropy_index[blocks, threads](_flat(z), labels, losses, shifts, log_norms, cols)
    return losses, shifts, log_norms


def cross_entropy_index_backward(z, labels, shifts, log_norms, g):
    """dz for the mean loss's upstream gradient g (a device scalar)."""
    dz = device.empty(z.shape, z.dtype)
    blocks, threads = device.launch_1d(z.shape[0])
    _cross_entropy_index_backward[blocks, threads](_flat(z), labels, shifts, log_norms, _flat(g),
                                                   z.dtype.type(1 / z.shape[0]), _flat(dz), z.shape[1])
    return dz


def cross_entropy_dense(z, y):
    """(per-row losses, shifts, log norms, label sums) for one-hot or soft labels y."""
    m, cols = z.shape
    losses, shifts, log_norms, y_sums = (device.empty((m,), z.dtype) for _ in range(4))
    blocks, threads = device.launch_1d(m)
    _cross_entropy_dense[blocks, threads](_flat(z), _flat(y), losses, shifts, log_norms, y_sums, cols)
    return losses, shifts, log_norms, y_sums


def cross_entropy_dense_backward(z, y, shifts, log_norms, y_sums, g, label_grad: bool):
    """(dz, dy or None) for the mean loss's upstream gradient g (a device scalar)."""
    dz = device.empty(z.shape, z.dtype)
    dy = device.empty(z.shape, z.dtype) if label_grad else dz
    blocks, threads = device.launch_1d(z.shape[0])
    _cross_entropy_dense_backward[blocks, threads](_flat(z), _flat(y), shifts, log_norms, y_sums, _flat(g),
                                                   z.dtype.type(1 / z.shape[0]), _flat(dz), _flat(dy), label_grad)
    return dz, (dy if label_grad else None)


# ---- optimizer updates, in place ----------------------------------------------------------------------
@cuda.jit
def _sgd(param, grad, lr):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[i] -= lr * grad[i]


@cuda.jit
def _momentum(param, grad, v, lr, beta, grad_scale):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        v[i] = beta * v[i] + grad_scale * grad[i]
        param[i] -= lr * v[i]


@cuda.jit
def _rmsprop(param, grad, s, lr, beta, eps_in, eps_out):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        s[i] = beta * s[i] + (1 - beta) * grad[i] * grad[i]
        param[i] -= lr * grad[i] / (math.sqrt(s[i] + eps_in) + eps_out)


@cuda.jit
def _adam(param, grad, v, s, lr, beta1, beta2, eps_in, eps_out, unbias1, unbias2):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        v[i] = beta1 * v[i] + (1 - beta1) * grad[i]
        s[i] = beta2 * s[i] + (1 - beta2) * grad[i] * grad[i]
        param[i] -= lr * (v[i] * unbias1) / (math.sqrt(s[i] * unbias2 + eps_in) + eps_out)


def _typed(dtype, *values):
    return tuple(dtype.type(v) for v in values)


def sgd(param, grad, lr):
    """θ ← θ - α·dθ."""
    blocks, threads = device.launch_1d(param.size)
    _sgd[blocks, threads](_flat(param), _flat(grad), *_typed(param.dtype, lr))


def momentum(param, grad, v, lr, beta, grad_scale):
    """v ← β·v + c·dθ; θ ← θ - α·v."""
    blocks, threads = device.launch_1d(param.size)
    _momentum[blocks, threads](_flat(param), _flat(grad), _flat(v), *_typed(param.dtype, lr, beta, grad_scale))


def rmsprop(param, grad, s, lr, beta, eps_in, eps_out):
    """s ← β·s + (1-β)·dθ²; θ ← θ - α·dθ/(√(s + ε_in) + ε_out)."""
    blocks, threads = device.launch_1d(param.size)
    _rmsprop[blocks, threads](_flat(param), _flat(grad), _flat(s),
                              *_typed(param.dtype, lr, beta, eps_in, eps_out))


def adam(param, grad, v, s, lr, beta1, beta2, eps_in, eps_out, step):
    """v ← β1·v + (1-β1)·dθ; s ← β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√(ŝ + ε_in) + ε_out)."""
    blocks, threads = device.launch_1d(param.size)
    unbias1, unbias2 = 1.0 / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step)
    _adam[blocks, threads](_flat(param), _flat(grad), _flat(v), _flat(s),
                           *_typed(param.dtype, lr, beta1, beta2, eps_in, eps_out, unbias1, unbias2))
