"""The CPU backend: the reference NumPy kernels, with compiled kernels for the hot paths.

The compiled (Cython) kernels take float32/float64 arrays; inputs they only read are made
C-contiguous first (a copy only when they are not). Everything else goes where it would
without them: a primitive to the inherited reference kernel, a composite to its default
implementation (the kernel returns NotImplemented), so every input works and the common
ones are fast.
Outputs are fresh arrays only where the op needs one; the optimizer updates work in place.

Kernels whose backward is costly per input (`dense`, `softmax_cross_entropy`) take an optional
`needs_input_grad`, one bool per input, and skip the gradients nobody asked for (as PyTorch's
`ctx.needs_input_grad`); without it they compute every gradient.
"""
from __future__ import annotations


import numpy as np

from lamina.backend import kernel
from lamina.errors import OpError
from lamina.ops.convolution import spatial_geometry
from lamina.ops.recurrent import N_STATES, mask_array
from lamina.ops.lrn import lrn_window
from lamina.ops.updates import MOMENTUM_DAMPENINGS, split_epsilon
from lamina.reference import ReferenceBackend

from . import _activations, _batchnorm, _convolution, _matmul, _optimizers, _recurrent, _softmax, _winograd

COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: conv2d: filter banks of at most this many numbers (f·f·n_C_prev·n_C: 4 KiB of float32, L1-resident) run
#: the direct kernel (so do banks of fewer filters than a vector holds); larger ones Winograd, one product
#: (1×1) or im2col + a product (measured with BLAS products: they won from about 27·48 numbers up, the direct
#: kernel below, where a product only n_C wide spends its time on packing and copying)
DIRECT_MAX_WEIGHTS = 1024
#: conv2d: 3×3 stride-1 filter banks with at most this many (input, output) channel pairs run Winograd's
#: F(4×4, 3×3); it does a quarter of the multiplications, but its transformed filters (36 of them per pair)
#: and weight gradient outgrow the caches (measured, 2 threads, fwd+bwd, 32 images: 384→384 at 14×14 Winograd
#: 0.58× the time of im2col, 512→512 at 7×7 2.0×, at 14×14 0.92×)
WINOGRAD_MAX_CHANNEL_PAIRS = 384 * 384


class CpuBackend(ReferenceBackend):
    name = "cpu"
    description = "NumPy arrays, BLAS matmul and Cython kernels (OpenMP where built with it)"

    def asarray(self, data, dtype):
        return np.array(data, dtype=dtype, copy=True, order="C")

    # ---- elementwise activations ---------------------------------------------------------
    @kernel("relu")
    def relu(self, x):
        """max(0, z); dz = g·[z > 0]."""
        if not _compiled(x):
            return NotImplemented
        return _unary(x, _activations.relu_forward, _activations.relu_backward, save_output=False)

    @kernel("leaky_relu")
    def leaky_relu(self, x, *, alpha=0.01):
        """z if z > 0 else α·z; dz = g·(1 if z > 0 else α)."""
        if not _compiled(x):
            return NotImplemented
        return _unary(x, _activations.leaky_relu_forward, _activations.leaky_relu_backward,
                      save_output=False, params=(float(alpha),))

    @kernel("sigmoid")
    def sigmoid(self, x):
        """σ(z) = 1/(1 + e^(-z)); dz = g·σ·(1 - σ)."""
        if not _compiled(x):
            return NotImplemented
        return _unary(x, _activations.sigmoid_forward, _activations.sigmoid_backward, save_output=True)

    @kernel("tanh")
    def tanh(self, x):
        """tanh(z); dz = g·(1 - tanh²(z))."""
        if not _compiled(x):
            return super().tanh(x)
        return _unary(x, _activations.tanh_forward, _activations.tanh_backward, save_output=True)

    # ---- softmax over the last axis ----------------------------------------------------------
    @kernel("softmax")
    def softmax(self, x, *, axis=-1):
        """y_i = e^(z_i - max z)/Σ_j e^(z_j - max z) over the last axis; dz = y·(g - Σ_j g_j·y_j)."""
        if not (_compiled(x) and _is_last_axis(x, axis)):
            return NotImplemented
        return _unary(x, _softmax.softmax_forward, _softmax.softmax_backward, save_output=True, rows=True)

    @kernel("log_softmax")
    def log_softmax(self, x, *, axis=-1):
        """y_i = (z_i - max z) - log Σ_j e^(z_j - max z) over the last axis; dz = g - e^y·Σ_j g_j."""
        if not (_compiled(x) and _is_last_axis(x, axis)):
            return NotImplemented
        return _unary(x, _softmax.log_softmax_forward, _softmax.log_softmax_backward, save_output=True,
                      rows=True)

    @kernel("softmax_cross_entropy")
    def softmax_cross_entropy(self, logits, labels, *, needs_input_grad=None):
        """J = -1/m Σ_i Σ_k y_ik·log softmax(z_i)_k, labels int (m,) or one-hot/soft (m, n);
        dJ/dz = g·(softmax(z)·Σ_k y_k - y)/m, dJ/dy = -g·log softmax(z)/m (float labels only)."""
        if not _compiled(logits) or logits.size == 0:
            return NotImplemented
        z = _c_order(logits)
        m = z.shape[0]
        shift, log_norm = np.empty(m, z.dtype), np.empty(m, z.dtype)
        if labels.dtype.kind in "iu":
            index = _c_order(labels.astype(np.int64, copy=False))
            if m and (index.min() < 0 or index.max() >= z.shape[1]):   # the compiled loops do not bounds-check
                raise OpError(f"softmax_cross_entropy: labels must lie in [0, {z.shape[1]}), got values from "
                              f"{index.min()} to {index.max()}")
            total = _softmax.cross_entropy_index_forward(z, index, shift, log_norm)

            def backprop(g):
                dz = np.empty_like(z)
                _softmax.cross_entropy_index_backward(z, index, shift, log_norm, float(g) / m, dz)
                return dz, None
        else:
            y = _c_order(labels.astype(z.dtype, copy=False))
            y_sum = np.empty(m, z.dtype)
            total = _softmax.cross_entropy_dense_forward(z, y, shift, log_norm, y_sum)
            _, label_grad = needs_input_grad or (True, True)

            def backprop(g):
                dz = np.empty_like(z)
                dy = np.empty_like(y) if label_grad else None
                _softmax.cross_entropy_dense_backward(z, y, shift, log_norm, y_sum, float(g) / m, dz, dy)
                return dz, dy
        return np.asarray(total / m, dtype=z.dtype), backprop

    # ---- dense layers -------------------------------------------------------------------------
    @kernel("dense")
    def dense(self, x, W, b=None, *, needs_input_grad=None):
        """Z = X·W + b (BLAS, bias added in place); dX = G·Wᵀ, dW = Xᵀ·G, db = Σ_rows G (NumPy's
        column sum: a compiled one is no faster), each only if `needs_input_grad` asks for it.
        X of more than two dimensions is taken as (rows, n_in)."""
        arrays = (x, W) if b is None else (x, W, b)
        if not _compiled(*arrays):
            return NotImplemented
        x2 = x.reshape(-1, x.shape[-1])
        z = np.matmul(x2, W)
        if b is not None:
            z += b
        needs = needs_input_grad or (True,) * len(arrays)

        def backprop(g):
            g2 = g.reshape(-1, W.shape[1])
            dx = np.matmul(g2, W.T).reshape(x.shape) if needs[0] else None
            dW = np.matmul(x2.T, g2) if needs[1] else None
            if b is None:
                return dx, dW
            return dx, dW, g2.sum(axis=0) if needs[2] else None

        return z.reshape(x.shape[:-1] + (W.shape[1],)), backprop

    # ---- batch normalization ----------------------------------------------------------------------
    @kernel("batch_norm")
    def batch_norm(self, x, gamma, beta, running_mean, running_var, *, training, momentum=0.9, epsilon=1e-5,
                   axis=-1, needs_input_grad=None):
        """Over the rows of x as (N, C), C = the last axis. Training: μ, σ² (biased) of the batch,
        x̂ = (x - μ)/√(σ² + ε), out = γ·x̂ + β; running ← momentum·running + (1-momentum)·(μ, σ²·N/(N-1))
        in place. dβ = Σ g, dγ = Σ g·x̂, dx = γ/(N·√(σ² + ε))·(N·g - dβ - x̂·dγ). Inference: μ, σ² are the
        running averages, dx = g·γ/√(σ² + ε), and the running averages get their gradients too."""
        stats = (running_mean, running_var)
        if not (_compiled(x, gamma, beta, *stats) and _is_last_axis(x, axis) and _updatable(*stats)):
            return NotImplemented
        x2 = _c_order(x).reshape(-1, x.shape[-1])
        n, dtype = x2.shape[0], x.dtype
        needs = needs_input_grad or (True,) * 5
        if training:
            mean, var = np.empty(x2.shape[1]), np.empty(x2.shape[1])
            _batchnorm.moments(x2, mean, var)
            for running, batch in zip(stats, (mean, var * (n / (n - 1)))):
                running *= momentum
                running += (1.0 - momentum) * batch
        else:
            mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
        inv_std = 1.0 / np.sqrt(var + epsilon)
        center, scale = mean.astype(dtype), (gamma * inv_std).astype(dtype)
        out = np.empty_like(x2)
        _batchnorm.normalize(x2, center, scale, _c_order(beta), out)

        def backprop(g):
            g2 = _c_order(g.astype(dtype, copy=False)).reshape(x2.shape)
            grads = [None] * 5
            if training or any(needs[1:]):
                sum_g, sum_gx = np.empty(x2.shape[1]), np.empty(x2.shape[1])
                _batchnorm.grad_sums(g2, x2, mean, sum_g, sum_gx)
                d_gamma = sum_gx * inv_std                   # Σ g·x̂
                grads[1:3] = d_gamma.astype(dtype), sum_g.astype(dtype)
                if not training:
                    grads[3:] = (-scale * sum_g).astype(dtype), (-0.5 * gamma * inv_std ** 3 * sum_gx).astype(dtype)
            if needs[0]:
                dx = np.empty_like(x2)
                if training:
                    b, shift = -scale * inv_std * d_gamma / n, -scale * sum_g / n
                    _batchnorm.input_grad(g2, x2, center, scale, b.astype(dtype), shift.astype(dtype), dx)
                else:
                    zeros = np.zeros_like(scale)
                    _batchnorm.normalize(g2, zeros, scale, zeros, dx)
                grads[0] = dx.reshape(x.shape)
            return tuple(grad if need else None for grad, need in zip(grads, needs))

        return out.reshape(x.shape), backprop

    # ---- convolution and pooling (NHWC images, HWIO filters) ----------------------------------------
    @kernel("conv2d")
    def conv2d(self, x, W, b=None, *, stride=1, padding="valid", needs_input_grad=None):
        """Z = im2col(x)·W₂ + b with W₂ = W as (f·f·n_C_prev, n_C); dW₂ = im2col(x)ᵀ·G, db = Σ_rows G,
        dx = col2im(G·W₂ᵀ), each only if `needs_input_grad` asks for it. Filters of at most
        DIRECT_MAX_WEIGHTS numbers (or fewer filters than a vector holds) run the direct kernel (one output
        row at a time); larger 1×1 ones without padding are one matrix product (_pointwise_conv2d); larger
        3×3 stride-1 ones, up to WINOGRAD_MAX_CHANNEL_PAIRS, Winograd's F(4×4, 3×3) (dx is the convolution
        of G with the filters rotated by 180°, dW the same algorithm's adjoint); the rest im2col blocks of
        pixels on the OpenMP threads and multiply them by _gemm.h's kernel onto the bias (the backward
        rebuilds the columns rather than keeping them alive per layer)."""
        arrays = (x, W) if b is None else (x, W, b)
        if not _compiled(*arrays) or x.ndim != 4 or W.ndim != 4 or W.shape[0] != W.shape[1] \
                or x.shape[3] != W.shape[2]:       # (the op's check refuses these; the loops count on them)
            return NotImplemented
        f, _, c_prev, c_out = W.shape
        ((top, _), (left, _)), (oh, ow) = spatial_geometry("conv2d", x.shape, f, stride, padding)
        x, dtype, width = _c_order(x), x.dtype, f * f * c_prev
        W = _c_order(W)
        W2 = W.reshape(width, c_out)
        direct = W.size <= DIRECT_MAX_WEIGHTS or c_out * dtype.itemsize < 64       # 64 bytes: one vector
        pointwise = not direct and f == 1 and top == left == 0
        winograd = not direct and f == 3 and stride == 1 and c_prev * c_out <= WINOGRAD_MAX_CHANNEL_PAIRS
        if pointwise:
            return _pointwise_conv2d(x, W2, b, stride, needs_input_grad)
        bias = _c_order(b) if b is not None else np.zeros(0 if not direct else c_out, dtype)
        z = np.empty((x.shape[0], oh, ow, c_out), dtype)
        if direct:
            geometry = _convolution.DirectGeometry(c_prev, oh, ow, f, stride, top, left)
            _convolution.conv_direct_forward(x, W2, bias, geometry, z)
        elif winograd:
            _winograd.conv3x3(x, _winograd.transform_filters(W), bias, top, left, z)
        else:
            _convolution.conv_gemm_forward(x, _matmul.pack_panels(W2), bias, f, stride, top, left, z)
        needs = needs_input_grad or (True,) * len(arrays)

        def backprop(g):
            g = _c_order(g.astype(dtype, copy=False))
            dx = np.empty_like(x) if needs[0] else None
            dW2 = np.empty((width, c_out), dtype) if needs[1] else None
            db = np.empty(c_out, dtype) if b is not None and needs[2] else None
            if direct:
                _convolution.conv_direct_backward(x, W2, g, geometry, dx, dW2, db)
            elif winograd:
                if dx is not None:
                    _winograd.conv3x3(g, _winograd.transform_filters(W, flip=True), np.zeros(0, dtype),
                                      f - 1 - top, f - 1 - left, dx)
                if dW2 is not None:
                    dW2 = _winograd.filter_grad3x3(x, g, top, left).reshape(width, c_out)
                if db is not None:
                    db = g.reshape(-1, c_out).sum(axis=0)
            else:
                _convolution.conv_gemm_backward(x, _matmul.pack_panels(W2.T), g.reshape(-1, c_out), oh, ow, f, stride,
                                                top, left, dx, dW2, db)
            dW = None if dW2 is None else dW2.reshape(W.shape)
            return (dx, dW) if b is None else (dx, dW, db)

        return z, backprop

    @kernel("max_pool2d")
    def max_pool2d(self, x, *, f, stride=None, padding=0):
        """out = the max of each f×f window (the padding never wins); the gradient goes to the window's
        first maximum, as PyTorch's."""
        if not _compiled(x) or x.shape[1] * x.shape[2] >= 2 ** 31:
            return NotImplemented
        setup = _pooling("max_pool2d", x, f, stride, padding)
        if setup is None:
            return NotImplemented
        x, stride, top, left, out = setup
        argmax = np.empty(out.shape, dtype=np.int32)     # y·n_W + z of each window's maximum
        _convolution.max_pool_forward(x, f, stride, top, left, out, argmax)

        def backprop(g):
            dx = np.empty_like(x)
            _convolution.max_pool_backward(_c_order(g.astype(x.dtype, copy=False)), argmax, dx)
            return (dx,)

        return out, backprop

    @kernel("avg_pool2d")
    def avg_pool2d(self, x, *, f, stride=None, padding=0):
        """out = 1/f² Σ over each f×f window (padding counts as zeros); dx = 1/f² Σ of g over the windows
        holding each pixel."""
        if not _compiled(x):
            return NotImplemented
        setup = _pooling("avg_pool2d", x, f, stride, padding)
        if setup is None:
            return NotImplemented
        x, stride, top, left, out = setup
        _convolution.avg_pool_forward(x, f, stride, top, left, out)

        def backprop(g):
            dx = np.empty_like(x)
            _convolution.avg_pool_backward(_c_order(g.astype(x.dtype, copy=False)), f, stride, top, left, dx)
            return (dx,)

        return out, backprop

    # ---- joining ----------------------------------------------------------------------------------
    @kernel("concatenate")
    def concatenate(self, *arrays, axis=-1):
        """out = [X_0, X_1, …] along `axis` (one copy); dX_i = G[…, o_i:o_i + c_i, …], o_i = Σ_(j<i) c_j."""
        ax = int(axis) % arrays[0].ndim
        ends = np.cumsum([a.shape[ax] for a in arrays])
        out = np.concatenate(arrays, axis=ax)

        def backprop(g):
            return tuple(np.split(g, ends[:-1], axis=ax))

        return out, backprop

    # ---- local response normalization (channels last) ---------------------------------------------
    @kernel("local_response_norm")
    def local_response_norm(self, x, *, size=5, alpha=1e-4, beta=0.75, k=2.0):
        """b_c = a_c·d_c^(−β), d_c = k + α/n·Σ_{c' in c's window} a_c'² (n shifted adds of a², no band matmul);
        da_j = g_j·d_j^(−β) − (2αβ/n)·a_j·Σ_{c : j in c's window} g_c·a_c·d_c^(−β−1)."""
        if not _compiled(x):
            return NotImplemented
        before, after = lrn_window(size)
        scale = alpha / size
        d = _window_sum(x * x, before, after)
        d *= scale
        d += k
        inv = d ** -beta                     # d^(−β)
        out = x * inv

        def backprop(g):
            g = g.astype(x.dtype, copy=False)
            t = g * out                      # g_c·a_c·d_c^(−β)
            t /= d                           # … ·d_c^(−β−1)
            dx = _window_sum(t, after, before)
            dx *= x
            dx *= -2.0 * beta * scale
            dx += g * inv
            return (dx,)

        return out, backprop

    # ---- recurrent layers and embeddings (§5.1–5.6) ---------------------------------------------------
    @kernel("rnn")
    def rnn(self, x, a0, W_ax, W_aa, b_a, *, mask=None, returns="sequence", needs_input_grad=None):
        """a<t> = tanh(a<t-1>·W_aa + x<t>·W_ax + b_a) over the whole sequence in one compiled loop (BPTT likewise)."""
        return _recurrence("rnn", x, [a0], W_ax, W_aa, b_a, None, None, mask, returns, True, needs_input_grad)

    @kernel("gru")
    def gru(self, x, a0, W_x, W_a, b_x, b_a, *, reset_after=True, mask=None, returns="sequence",
            needs_input_grad=None):
        """a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>, gates [r | u | c̃] from one product a<t-1>·W_a per step (two for the
        seed's GRU, whose c̃ needs Γ_r·a<t-1> first)."""
        return _recurrence("gru", x, [a0], W_x, W_a, b_x, b_a, None, mask, returns, bool(reset_after),
                           needs_input_grad)

    @kernel("lstm")
    def lstm(self, x, a0, c0, W_x, W_a, b, P=None, *, mask=None, returns="sequence", needs_input_grad=None):
        """c<t> = Γ_u·c̃ + Γ_f·c<t-1>, a<t> = Γ_o·tanh(c<t>), gates [u | f | o | c̃] from one product a<t-1>·W_a
        per step, optional peepholes P."""
        return _recurrence("lstm", x, [a0, c0], W_x, W_a, b, None, P, mask, returns, True, needs_input_grad)

    @kernel("embedding")
    def embedding(self, indices, E):
        """e = E[indices] (np.take); dE[w] = Σ of the output gradient at the positions holding w, a compiled
        scatter-add over the positions (only the rows used are written)."""
        if not _compiled(E) or indices.dtype.kind not in "iu":
            return NotImplemented
        index = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= E.shape[0]):   # the compiled loop does not bounds-check
            raise OpError(f"embedding: indices must lie in [0, V) = [0, {E.shape[0]}), got values from "
                          f"{index.min()} to {index.max()}")
        out = np.take(E, index, axis=0).reshape(indices.shape + (E.shape[1],))

        def backprop(g):
            dE = np.zeros(E.shape, dtype=E.dtype)
            _recurrent.embedding_backward(index, _c_order(g.astype(E.dtype, copy=False)).reshape(-1, E.shape[1]), dE)
            return None, dE

        return out, backprop

    # ---- optimizer updates (in place) ------------------------------------------------------------
    @kernel("sgd_update")
    def sgd_update(self, param, grad, *, lr):
        """θ ← θ - α·dθ, in place."""
        if not (_compiled(param, grad) and _updatable(param)):
            return NotImplemented
        _optimizers.sgd_update(param.reshape(-1), _c_order(grad).reshape(-1), lr)
        return (param,), None

    @kernel("momentum_update")
    def momentum_update(self, param, grad, v, *, lr, beta, dampening):
        """In place: v ← β·v + c·dθ; θ ← θ - α·v, c = 1-β ("ewa") or 1 ("simplified")."""
        if not (_compiled(param, grad, v) and _updatable(param, v)):
            return NotImplemented
        _optimizers.momentum_update(param.reshape(-1), _c_order(grad).reshape(-1), v.reshape(-1), lr, beta,
                                    MOMENTUM_DAMPENINGS[dampening](beta))
        return (param, v), None

    @kernel("rmsprop_update")
    def rmsprop_update(self, param, grad, s, *, lr, beta, epsilon, epsilon_inside_sqrt=False):
        """In place: s ← β·s + (1-β)·dθ²; θ ← θ - α·dθ/(√s + ε), or α·dθ/√(s + ε) if `epsilon_inside_sqrt`."""
        if not (_compiled(param, grad, s) and _updatable(param, s)):
            return NotImplemented
        _optimizers.rmsprop_update(param.reshape(-1), _c_order(grad).reshape(-1), s.reshape(-1), lr, beta,
                                   *split_epsilon(epsilon, epsilon_inside_sqrt))
        return (param, s), None

    @kernel("adam_update")
    def adam_update(self, param, grad, v, s, *, lr, beta1, beta2, epsilon, step, epsilon_inside_sqrt=False):
        """In place: v ← β1·v + (1-β1)·dθ; s ← β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√ŝ + ε),
        v̂ = v/(1-β1^t), ŝ = s/(1-β2^t); θ ← θ - α·v̂/√(ŝ + ε) if `epsilon_inside_sqrt`."""
        if not (_compiled(param, grad, v, s) and _updatable(param, v, s)):
            return NotImplemented
        _optimizers.adam_update(param.reshape(-1), _c_order(grad).reshape(-1), v.reshape(-1), s.reshape(-1),
                                lr, beta1, beta2, *split_epsilon(epsilon, epsilon_inside_sqrt), step)
        return (param, v, s), None


# ---- helpers ----------------------------------------------------------------------------------
def _compiled(*arrays) -> bool:
    """Whether the compiled kernels take these arrays: all float32 or all float64."""
    dtype = arrays[0].dtype
    return dtype in COMPILED_DTYPES and all(a.dtype == dtype for a in arrays)


def _updatable(*arrays) -> bool:
    """Whether arrays can be updated in place by a compiled kernel: C-contiguous and writeable."""
    return all(a.flags.c_contiguous and a.flags.writeable for a in arrays)


def _c_order(a):
    """`a` if it is C-contiguous, else a C-contiguous copy (0-d arrays stay 0-d)."""
    return a if a.flags.c_contiguous else np.array(a, order="C")


def _pooling(op, x, f, stride, padding):
    """(C-contiguous x, stride, pad top, pad left, an empty output) of a pooling kernel (stride None = f), or
    None where a padding exceeds f/2 (the op's check refuses it; the compiled loops count on a window
    always holding a pixel of the image)."""
    stride = f if stride is None else stride
    pads, (oh, ow) = spatial_geometry(op, x.shape, f, stride, padding)
    if max(max(p) for p in pads) > f // 2:
        return None
    x = _c_order(x)
    return x, stride, pads[0][0], pads[1][0], np.empty((x.shape[0], oh, ow, x.shape[3]), dtype=x.dtype)


def _window_sum(a, before: int, after: int) -> np.ndarray:
    """out[…, c] = Σ_{c' = c − before}^{c + after} a[…, c'] over the last axis, zero outside."""
    n_C = a.shape[-1]
    padded = np.zeros(a.shape[:-1] + (n_C + before + after,), dtype=a.dtype)
    padded[..., before:before + n_C] = a
    out = padded[..., :n_C].copy()
    for offset in range(1, before + after + 1):
        out += padded[..., offset:offset + n_C]
    return out


def _is_last_axis(x, axis) -> bool:
    return x.ndim > 0 and x.size > 0 and axis in (-1, x.ndim - 1)


def _unary(x, forward, backward, *, save_output, rows=False, params=()):
    """Kernel result of a compiled one-input op: forward(x, out, *params) writes f(x) and
    backward(saved, g, dx, *params) writes dL/dx, with saved = f(x) if save_output else x.
    The compiled functions see flat views, or (rows, last axis) views if `rows`."""
    x = _c_order(x)
    view = (-1, x.shape[-1]) if rows else (-1,)
    out = np.empty_like(x)
    forward(x.reshape(view), out.reshape(view), *params)
    saved = (out if save_output else x).reshape(view)

    def backprop(g):
        dx = np.empty_like(x)
        backward(saved, _c_order(g.astype(x.dtype, copy=False)).reshape(view), dx.reshape(view), *params)
        return (dx,)

    return out, backprop


def _pointwise_conv2d(x, W2, b, stride, needs_input_grad):
    """Kernel result of a 1×1 convolution without padding: Z = x_s·W₂ + b with x_s the pixels the stride reads as
    rows (im2col would only copy them), dx_s = G·W₂ᵀ (0 at the pixels skipped), dW₂ = x_sᵀ·G, db = Σ_rows G;
    the products _matmul's, on the OpenMP threads the other convolutions use."""
    m, c_prev, c_out = x.shape[0], W2.shape[0], W2.shape[1]
    x_s = x if stride == 1 else x[:, ::stride, ::stride]
    rows = np.ascontiguousarray(x_s).reshape(-1, c_prev)
    z = np.empty(x_s.shape[:3] + (c_out,), x.dtype)
    _matmul.matmul_panels(rows, _matmul.pack_panels(W2), z.reshape(-1, c_out))
    if b is not None:
        z += b
    needs = needs_input_grad or (True,) * (2 if b is None else 3)

    def backprop(g):
        g2 = _c_order(g.astype(x.dtype, copy=False)).reshape(-1, c_out)
        dx = dW = None
        if needs[0]:
            dx_s = np.empty(x_s.shape, x.dtype)
            _matmul.matmul_panels(g2, _matmul.pack_panels(W2.T), dx_s.reshape(-1, c_prev))
            dx = dx_s if stride == 1 else np.zeros_like(x)
            if stride != 1:
                dx[:, ::stride, ::stride] = dx_s
        if needs[1]:
            dW = np.empty((1, 1, c_prev, c_out), x.dtype)
            _matmul.matmul_tn(rows, g2, dW.reshape(c_prev, c_out))
        if b is None:
            return dx, dW
        return dx, dW, g2.sum(axis=0) if needs[2] else None

    return z, backprop


def _recurrence(cell, x, states, W_x, W_a, b_x, b_a, P, mask, returns, reset_after, needs_input_grad):
    """Kernel result of a whole-sequence `rnn`/`gru`/`lstm`: the input projection X·W_x + b of every step as one
    matrix product (time-major), the time loop forward and backward in _recurrent (GIL released), and the
    weight gradients as single products over all steps: dW_x = Xᵀ·dZ, dW_a = Hᵀ·dZ, db = Σ dZ. Every product
    is _matmul's, on the OpenMP threads the time loops use (see _matmul for why not BLAS)."""
    arrays = [x, *states, W_x, W_a, b_x] + [a for a in (b_a, P) if a is not None]
    if not _compiled(*arrays) or x.shape[0] == 0 or x.shape[1] == 0 or W_a.shape[0] == 0:
        return NotImplemented
    m, T, n_x = x.shape
    n, G = W_a.shape
    dtype = x.dtype
    mask = mask_array(cell, mask, m, T)
    if mask is not None and mask.all():
        mask = None
    W_a, P = _c_order(W_a), (_c_order(P) if P is not None else None)
    seed_gru = cell == "gru" and not reset_after
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * m, n_x)
    XW = np.empty((T, m, G), dtype)
    _matmul.matmul_panels(x_tm, _matmul.pack_panels(W_x), XW.reshape(T * m, G))
    XW += (b_x + b_a) if seed_gru else b_x
    H = np.empty((T + 1, m, n), dtype)
    H[0] = states[0]
    S = N_STATES[cell]
    out = np.empty((m, (T if returns != "state" else 0) + (S if returns != "sequence" else 0), n), dtype)
    Y = out[:, :T] if returns != "state" else None
    if cell == "rnn":
        _recurrent.rnn_forward(XW, W_a, H, mask, Y)
        saved = ()
    elif cell == "gru":
        extra = np.empty((T, m, n), dtype)
        _recurrent.gru_forward(XW, W_a, b_a, H, extra, reset_after, mask, Y, np.empty((m, G), dtype))
        saved = (extra,)
    else:
        C = np.empty((T + 1, m, n), dtype)
        C[0] = states[1]
        _recurrent.lstm_forward(XW, W_a, P if P is not None else np.zeros((3, n), dtype), H, C, mask, Y)
        saved = (C,)
    if returns != "sequence":
        out[:, -S] = H[T]
        if cell == "lstm":
            out[:, -1] = saved[0][T]
    needs = needs_input_grad or (True,) * len(arrays)

    def backprop(g):
        g = _c_order(g.astype(dtype, copy=False))
        dY = g[:, :T] if returns != "state" else None
        finals = [g[:, g.shape[1] - S + k].copy() if returns != "sequence" else np.zeros((m, n), dtype)
                  for k in range(S)]
        dZ = np.empty((T, m, G), dtype)
        dZa, zeros = dZ, np.zeros(n, dtype)
        if cell == "rnn":
            _recurrent.rnn_backward(H, W_a, mask, dY, finals[0], dZ, zeros)
        elif cell == "gru":
            dZa = np.empty((T, m, G), dtype) if reset_after else dZ
            _recurrent.gru_backward(XW, H, saved[0], W_a, reset_after, mask, dY, finals[0], dZ, dZa,
                                    np.empty((m, n), dtype), zeros)
        else:
            _recurrent.lstm_backward(XW, saved[0], W_a, P if P is not None else np.zeros((3, n), dtype), mask, dY,
                                     finals[0], finals[1], dZ, zeros)
        dZ2, dZa2 = dZ.reshape(T * m, G), dZa.reshape(T * m, G)
        dx = None
        if needs[0]:
            dx = np.empty((T * m, n_x), dtype)
            _matmul.matmul_panels(dZ2, _matmul.pack_panels(W_x.T), dx)
            dx = dx.reshape(T, m, n_x).transpose(1, 0, 2)
        dW_x, dW_a = np.empty((n_x, G), dtype), np.empty((n, G), dtype)
        _matmul.matmul_tn(x_tm, dZ2, dW_x)
        if seed_gru:        # the candidate's columns pair with Γ_r·a<t-1>, not a<t-1>
            _matmul.matmul_tn(H[:T].reshape(T * m, n), dZ2[:, :2 * n], dW_a[:, :2 * n])
            _matmul.matmul_tn(saved[0].reshape(T * m, n), dZ2[:, 2 * n:], dW_a[:, 2 * n:])
        else:
            _matmul.matmul_tn(H[:T].reshape(T * m, n), dZa2, dW_a)
        grads = [dx, *finals, dW_x, dW_a, dZ2.sum(axis=0)]
        if cell == "gru":
            grads.append(dZa2.sum(axis=0))
        if P is not None:
            gates = dZ[:, :, :3 * n].reshape(T, m, 3, n)
            grads.append(np.einsum("tmkn,tmn->kn", gates, saved[0][:T]))
        return tuple(grads)

    return out, backprop
