"""The CUDA backend: tensors hold Numba device arrays, and every op runs as a CUDA kernel.

Data crosses to the host only in `to_numpy` (`.numpy()`, printing, checkpoints). Device arrays
are C-ordered; a transpose or a gather writes a new one. Every primitive op has a kernel here; the
hot composite ops have fused kernels (kernels/fused.py, kernels/matmul.py) and the others run their
default implementations, made of primitives, so they stay on the device too.
"""
from __future__ import annotations

import math

import numpy as np
from lamina.backend import Backend, kernel
from lamina.ops.convolution import spatial_geometry
from lamina.ops.lrn import lrn_window
from lamina.ops.recurrent import mask_array
from lamina.ops.updates import MOMENTUM_DAMPENINGS, split_epsilon

from . import device
from .kernels import elementwise as ew
from .kernels import convolution, fused, layout, normalization, reduction
from .kernels import joining, recurrent
from .kernels.geometry import basic_index_view
from .kernels.matmul import affine, gemm, weight_and_bias_gradients

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _DeviceDescription:
    """`CudaBackend.description`: the device in words, read when asked (the GPU's name, or the simulator)."""

    def __get__(self, instance, owner) -> str:
        return device.describe()


class CudaBackend(Backend):
    name = "cuda"
    description = _DeviceDescription()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return device.availability()

    # ---- data movement and allocation ---------------------------------------------------------
    def asarray(self, data, dtype):
        dtype = np.dtype(dtype)
        if device.is_device_array(data):
            return ew.identity(data, out_dtype=dtype)
        return device.to_device(np.asarray(data, dtype=dtype))

    def to_numpy(self, array) -> np.ndarray:
        return array.copy_to_host()

    def full(self, shape, value, dtype):
        return ew.fill(device.empty(tuple(shape), dtype), value)

    # ---- arithmetic -----------------------------------------------------------------------------
    @kernel("add")
    def add(self, a, b):
        return ew.add(a, b), lambda g: (g, g)

    @kernel("sub")
    def sub(self, a, b):
        return ew.sub(a, b), lambda g: (g, ew.neg(g))

    @kernel("mul")
    def mul(self, a, b):
        return ew.mul(a, b), lambda g: (ew.mul(g, b), ew.mul(g, a))

    @kernel("div")
    def div(self, a, b):
        """y = a/b; da = g/b, db = -g·a/b² = -da·y."""
        y = ew.div(a, b)

        def backprop(g):
            da = ew.div(g, b)
            return da, ew.scaled_product(da, y, p0=-1.0)

        return y, backprop

    @kernel("power")
    def power(self, x, *, exponent):
        return ew.power(x, p0=float(exponent)), lambda g: (ew.power_grad(g, x, p0=float(exponent)),)

    @kernel("exp")
    def exp(self, x):
        y = ew.exp(x)
        return y, lambda g: (ew.mul(g, y),)

    @kernel("log")
    def log(self, x):
        return ew.log(x), lambda g: (ew.div(g, x),)

    @kernel("tanh")
    def tanh(self, x):
        y = ew.tanh(x)
        return y, lambda g: (ew.tanh_grad(g, y),)

    @kernel("clip")
    def clip(self, x, *, low, high):
        low = -np.inf if low is None else float(low)
        high = np.inf if high is None else float(high)
        return ew.clip(x, p0=low, p1=high), lambda g: (ew.inside_grad(g, x, p0=low, p1=high),)

    @kernel("cast")
    def cast(self, x, *, dtype):
        return ew.identity(x, out_dtype=np.dtype(dtype)), lambda g: (ew.identity(g, out_dtype=x.dtype),)

    @kernel("greater")
    def greater(self, a, b):
        return ew.greater(a, b), None

    @kernel("matmul")
    def matmul(self, a, b):
        """C = A·B over broadcast batches; dA = G·Bᵀ, dB = Aᵀ·G (summed over broadcast batches by autograd)."""
        return gemm(a, b), lambda g: (gemm(g, b, trans_b=True), gemm(a, g, trans_a=True))

    # ---- reductions -------------------------------------------------------------------------------
    @kernel("sum")
    def sum(self, x, *, axis=None, keepdims=False):
        axes = _axes(x.ndim, axis)
        kept_shape = _keepdims_shape(x.shape, axes)
        y = reduction.reduce("sum", x, axes) if axes else ew.identity(x)
        y = y.reshape(kept_shape if keepdims else tuple(n for i, n in enumerate(x.shape) if i not in axes))
        return y, lambda g: (layout.broadcast_to(g.reshape(kept_shape), x.shape),)

    @kernel("max")
    def max(self, x, *, axis=None, keepdims=False):
        axes = _axes(x.ndim, axis)
        if not axes:
            return ew.identity(x), lambda g: (ew.identity(g),)
        y = reduction.reduce("max", x, axes)
        kept_shape = _keepdims_shape(x.shape, axes)
        out = y.reshape(kept_shape if keepdims else tuple(n for i, n in enumerate(x.shape) if i not in axes))
        return out, lambda g: (reduction.max_backward(x, axes, y, g),)

    # ---- layout -----------------------------------------------------------------------------------
    @kernel("reshape")
    def reshape(self, x, *, shape):
        shape = _resolve_shape(x.size, shape)
        return x.reshape(shape), lambda g: (g.reshape(x.shape),)

    @kernel("transpose")
    def transpose(self, x, *, axes=None):
        axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(int(a) % x.ndim for a in axes)
        inverse = tuple(int(i) for i in np.argsort(axes))
        return layout.transpose(x, axes), lambda g: (layout.transpose(g, inverse),)

    @kernel("getitem")
    def getitem(self, x, *, index):
        """Basic indexing gathers a strided view (its adjoint scatters); advanced indexing gathers positions
        NumPy computes on the host, and its adjoint scatter-adds them (repeats accumulate)."""
        view = basic_index_view(tuple(x.shape), index)
        if view is not None:
            offset, shape, strides = view
            out = layout.gather(x, offset, shape, strides)
            return out, lambda g: (layout.scatter_into_zeros(g, x.shape, offset, strides),)
        positions = device.to_device(layout.host_flat_index(tuple(x.shape), index))
        return layout.gather_indexed(x, positions), lambda g: (layout.scatter_add(g, positions, x.shape),)

    @kernel("one_hot")
    def one_hot(self, labels, *, num_classes, dtype):
        return layout.one_hot(labels, num_classes, np.dtype(dtype)), None

    # ---- fused activations ---------------------------------------------------------------------------
    @kernel("relu")
    def relu(self, x):
        """max(0, z); dz = g·[z > 0]."""
        return ew.relu(x), lambda g: (ew.relu_grad(g, x),)

    @kernel("leaky_relu")
    def leaky_relu(self, x, *, alpha=0.01):
        """z if z > 0 else α·z; dz = g·(1 if z > 0 else α)."""
        alpha = float(alpha)
        return ew.leaky_relu(x, p0=alpha), lambda g: (ew.leaky_relu_grad(g, x, p0=alpha),)

    @kernel("sigmoid")
    def sigmoid(self, x):
        """σ(z) = 1/(1 + e^(-z)); dz = g·σ·(1 - σ)."""
        y = ew.sigmoid(x)
        return y, lambda g: (ew.sigmoid_grad(g, y),)

    @kernel("neg")
    def neg(self, x):
        return ew.neg(x), lambda g: (ew.neg(g),)

    @kernel("softmax")
    def softmax(self, x, *, axis=-1):
        """y_i = e^(z_i - max z)/Σ_j e^(z_j - max z) over the last axis; dz = y·(g - Σ_j g_j·y_j)."""
        if not _last_axis(x, axis):
            return NotImplemented
        y = fused.softmax_rows(x, log=False)
        return y, lambda g: (fused.softmax_rows_backward(y, g, log=False),)

    @kernel("log_softmax")
    def log_softmax(self, x, *, axis=-1):
        """y_i = z_i - max z - log Σ_j e^(z_j - max z) over the last axis; dz = g - e^y·Σ_j g_j."""
        if not _last_axis(x, axis):
            return NotImplemented
        y = fused.softmax_rows(x, log=True)
        return y, lambda g: (fused.softmax_rows_backward(y, g, log=True),)

    @kernel("softmax_cross_entropy")
    def softmax_cross_entropy(self, logits, labels, *, needs_input_grad=None):
        """J = -1/m Σ_i Σ_k y_ik·log softmax(z_i)_k, labels int (m,) or one-hot/soft (m, n);
        dJ/dz = g·(softmax(z)·Σ_k y_k - y)/m, dJ/dy = -g·log softmax(z)/m (float labels only)."""
        if logits.dtype not in FLOATS or logits.ndim != 2 or logits.size == 0:
            return NotImplemented
        m, n = logits.shape
        if labels.dtype.kind in "iu":       # their range was checked by the op (a label outside gives a NaN loss)
            losses, shifts, log_norms = fused.cross_entropy_index(logits, labels)

            def backprop(g):
                return fused.cross_entropy_index_backward(logits, labels, shifts, log_norms, g), None
        else:
            if labels.dtype != logits.dtype:
                return NotImplemented
            losses, shifts, log_norms, y_sums = fused.cross_entropy_dense(logits, labels)
            label_grad = (needs_input_grad or (True, True))[1]

            def backprop(g):
                return fused.cross_entropy_dense_backward(logits, labels, shifts, log_norms, y_sums, g, label_grad)
        return reduction.reduce_rows("sum", losses, 1, m, scale=1.0 / m).reshape(()), backprop

    @kernel("dense")
    def dense(self, x, W, b=None, *, needs_input_grad=None):
        """Z = X·W + b; dX = G·Wᵀ, dW = Xᵀ·G, db = Σ_rows G, each only if `needs_input_grad` asks for it (dW and
        db together as one product, [X | 1]ᵀ·G). X of more than two dimensions is taken as (rows, n_in)."""
        n_in = tuple(x.shape)[-1]
        x2 = x.reshape((x.size // n_in, n_in))
        z = affine(x2, W, b)
        needs = needs_input_grad or (True,) * (2 if b is None else 3)

        def backprop(g):
            g2 = g.reshape((g.size // W.shape[1], W.shape[1]))
            dx = gemm(g2, W, trans_b=True).reshape(x.shape) if needs[0] else None
            if b is not None and needs[1] and needs[2]:
                dW, db = weight_and_bias_gradients(x2, g2)
                return dx, dW, db
            dW = gemm(x2, g2, trans_a=True) if needs[1] else None
            if b is None:
                return dx, dW
            return dx, dW, reduction.reduce("sum", g2, (0,)) if needs[2] else None

        return z.reshape(tuple(x.shape)[:-1] + (W.shape[1],)), backprop

    # ---- optimizer updates, in place ----------------------------------------------------------------
    @kernel("sgd_update")
    def sgd_update(self, param, grad, *, lr):
        """θ ← θ - α·dθ, in place."""
        if not _same_float(param, grad):
            return NotImplemented
        fused.sgd(param, grad, lr)
        return (param,), None

    @kernel("momentum_update")
    def momentum_update(self, param, grad, v, *, lr, beta, dampening):
        """In place: v ← β·v + c·dθ; θ ← θ - α·v, c = 1-β ("ewa") or 1 ("simplified")."""
        if not _same_float(param, grad, v):
            return NotImplemented
        fused.momentum(param, grad, v, lr, beta, MOMENTUM_DAMPENINGS[dampening](beta))
        return (param, v), None

    @kernel("rmsprop_update")
    def rmsprop_update(self, param, grad, s, *, lr, beta, epsilon, epsilon_inside_sqrt=False):
        """In place: s ← β·s + (1-β)·dθ²; θ ← θ - α·dθ/(√s + ε), or α·dθ/√(s + ε) if `epsilon_inside_sqrt`."""
        if not _same_float(param, grad, s):
            return NotImplemented
        fused.rmsprop(param, grad, s, lr, beta, *split_epsilon(epsilon, epsilon_inside_sqrt))
        return (param, s), None

    @kernel("adam_update")
    def adam_update(self, param, grad, v, s, *, lr, beta1, beta2, epsilon, step, epsilon_inside_sqrt=False):
        """In place: v ← β1·v + (1-β1)·dθ; s ← β2·s + (1-β2)·dθ²; θ ← θ - α·v̂/(√ŝ + ε),
        v̂ = v/(1-β1^t), ŝ = s/(1-β2^t)."""
        if not _same_float(param, grad, v, s):
            return NotImplemented
        fused.adam(param, grad, v, s, lr, beta1, beta2, *split_epsilon(epsilon, epsilon_inside_sqrt), step)
        return (param, v, s), None

    # ---- batch normalization, convolution and pooling (NHWC images, HWIO filters) --------------------
    @kernel("batch_norm")
    def batch_norm(self, x, gamma, beta, running_mean, running_var, *, training, momentum=0.9, epsilon=1e-5,
                   axis=-1, needs_input_grad=None):
        """out = γ·(x - μ)/√(σ² + ε) + β over the rows of x as (N, C), C = the last axis, with the batch's μ, σ²
        (the running averages then updated in place) or, in inference, the running averages (which then get
        gradients too); the backward formulas are in kernels/normalization.py, the same as the CPU kernel's."""
        if not (_same_float(x, gamma, beta, running_mean, running_var) and x.ndim >= 2 and x.size
                and axis in (-1, x.ndim - 1)):
            return NotImplemented
        n_C = tuple(x.shape)[-1]
        x2 = x.reshape((x.size // n_C, n_C))
        out, mean, inv_std, scale = normalization.batch_norm_forward(x2, gamma, beta, running_mean, running_var,
                                                                     training, momentum, epsilon)
        needs = needs_input_grad or (True,) * 5

        def backprop(g):
            grads = normalization.batch_norm_backward(g.reshape(x2.shape), x2, gamma, mean, inv_std, scale,
                                                      training, needs)
            return (None if grads[0] is None else grads[0].reshape(x.shape),) + grads[1:]

        return out.reshape(x.shape), backprop

    @kernel("conv2d")
    def conv2d(self, x, W, b=None, *, stride=1, padding="valid", needs_input_grad=None):
        """Z = im2col(x)·W₂ + b with W₂ = W as (f·f·n_C_prev, n_C); dW₂ = im2col(x)ᵀ·G, db = Σ_rows G,
        dx = col2im(G·W₂ᵀ), each only if `needs_input_grad` asks for it. The products read the columns from
        the images (kernels/convolution.py), which index at most MAX_PIXELS pixels; beyond, the default runs."""
        arrays = (x, W) if b is None else (x, W, b)
        if not _same_float(*arrays) or x.ndim != 4 or W.ndim != 4 or W.shape[0] != W.shape[1] \
                or x.shape[3] != W.shape[2] or not x.size or not W.size:
            return NotImplemented
        ((top, _), (left, _)), out_hw = spatial_geometry("conv2d", x.shape, W.shape[0], stride, padding)
        if max(math.prod(x.shape[:3]), x.shape[0] * math.prod(out_hw)) > convolution.MAX_PIXELS:
            return NotImplemented
        z = convolution.conv2d_forward(x, W, b, stride, top, left, out_hw)
        needs = needs_input_grad or (True,) * len(arrays)

        def backprop(g):
            dx, dW, db = convolution.conv2d_backward(x, W, g, stride, top, left, out_hw, needs)
            return (dx, dW) if b is None else (dx, dW, db)

        return z, backprop

    @kernel("max_pool2d")
    def max_pool2d(self, x, *, f, stride=None, padding=0):
        """out = the max of each f×f window (the padding never wins); the gradient goes to the window's
        first maximum, as PyTorch's."""
        setup = _pooling("max_pool2d", x, f, stride, padding)
        if setup is None or x.shape[1] * x.shape[2] >= 2 ** 31:     # (argmax holds y·n_W + z as int32)
            return NotImplemented
        stride, top, left, out_hw = setup
        out, argmax = convolution.max_pool_forward(x, f, stride, top, left, out_hw)
        return out, lambda g: (convolution.max_pool_backward(g, argmax, x.shape, f, stride, top, left),)

    @kernel("avg_pool2d")
    def avg_pool2d(self, x, *, f, stride=None, padding=0):
        """out = 1/f² Σ over each f×f window (padding counts as zeros); dx = 1/f² Σ of g over the windows
        holding each pixel."""
        setup = _pooling("avg_pool2d", x, f, stride, padding)
        if setup is None:
            return NotImplemented
        stride, top, left, out_hw = setup
        out = convolution.avg_pool_forward(x, f, stride, top, left, out_hw)
        return out, lambda g: (convolution.avg_pool_backward(g, x.shape, f, stride, top, left),)

    @kernel("global_avg_pool2d")
    def global_avg_pool2d(self, x):
        """out[i, c] = 1/(n_H·n_W) Σ_{h,w} x[i, h, w, c]; dx[i, h, w, c] = g[i, c]/(n_H·n_W)."""
        if x.dtype not in FLOATS or x.ndim != 4 or not x.size:
            return NotImplemented
        return (convolution.global_avg_pool_forward(x),
                lambda g: (convolution.global_avg_pool_backward(g, x.shape),))


    # ---- joining, local response normalization (§4.7, 4.10), recurrences and embeddings (§5.1–5.6) ------
    @kernel("concatenate")
    def concatenate(self, *arrays, axis=-1):
        """out = [X_0, X_1, …] along `axis` (each input copied into its slice); dX_i = G[…, o_i:o_i + c_i, …],
        o_i = Σ_(j<i) c_j."""
        if arrays[0].ndim == 0 or any(a.dtype != arrays[0].dtype for a in arrays):
            return NotImplemented
        ax = int(axis) % arrays[0].ndim
        sizes = [a.shape[ax] for a in arrays]
        return joining.concatenate(arrays, ax), lambda g: tuple(joining.split(g, sizes, ax))

    @kernel("local_response_norm")
    def local_response_norm(self, x, *, size=5, alpha=1e-4, beta=0.75, k=2.0):
        """b_c = a_c·d_c^(−β), d_c = k + α/n·Σ_{c' in c's window} a_c'² (one fused windowed sum over the channels);
        da_j = g_j·d_j^(−β) − (2αβ/n)·a_j·Σ_{c : j in c's window} g_c·a_c·d_c^(−β−1)."""
        if x.dtype not in FLOATS or x.ndim < 2:
            return NotImplemented
        before, after = lrn_window(size)
        out, backprop = joining.local_response_norm(x, before, after, alpha / size, k, beta)
        return out, lambda g: (backprop(g),)

    @kernel("rnn")
    def rnn(self, x, a0, W_ax, W_aa, b_a, *, mask=None, returns="sequence", needs_input_grad=None):
        """a<t> = tanh(a<t-1>·W_aa + x<t>·W_ax + b_a): one product per step and one fused kernel (BPTT likewise)."""
        return self._sequence("rnn", x, [a0], W_ax, W_aa, b_a, None, None, mask, returns, True, needs_input_grad)

    @kernel("gru")
    def gru(self, x, a0, W_x, W_a, b_x, b_a, *, reset_after=True, mask=None, returns="sequence",
            needs_input_grad=None):
        """a<t> = Γ_u·c̃ + (1 − Γ_u)·a<t-1>, gates [r | u | c̃] from one product a<t-1>·W_a per step and one fused
        kernel (two of each for the seed's GRU, whose c̃ needs Γ_r·a<t-1> first)."""
        return self._sequence("gru", x, [a0], W_x, W_a, b_x, b_a, None, mask, returns, bool(reset_after),
                              needs_input_grad)

    @kernel("lstm")
    def lstm(self, x, a0, c0, W_x, W_a, b, P=None, *, mask=None, returns="sequence", needs_input_grad=None):
        """c<t> = Γ_u·c̃ + Γ_f·c<t-1>, a<t> = Γ_o·tanh(c<t>), gates [u | f | o | c̃] from one product a<t-1>·W_a per
        step and one fused kernel, optional peepholes P."""
        return self._sequence("lstm", x, [a0, c0], W_x, W_a, b, None, P, mask, returns, True, needs_input_grad)

    def _sequence(self, cell, x, states, W_x, W_a, b_x, b_a, P, mask, returns, reset_after, needs_input_grad):
        arrays = [x, *states, W_x, W_a, b_x] + [a for a in (b_a, P) if a is not None]
        if not _same_float(*arrays) or 0 in (x.shape[0], x.shape[1], W_a.shape[0]):
            return NotImplemented
        mask = mask_array(cell, mask, x.shape[0], x.shape[1])
        if mask is not None and mask.all():
            mask = None
        out, backprop = recurrent.sequence(cell, x, states, W_x, W_a, b_x, b_a, P, mask, returns, reset_after)
        return out, lambda g: backprop(g, needs_input_grad)

    @kernel("embedding")
    def embedding(self, indices, E):
        """e = E[indices] (rows gathered); dE[w] = Σ of the output gradient at the positions holding w (an atomic
        scatter-add: only the rows used are written). The op's check has already bounds-checked the indices."""
        if E.dtype not in FLOATS or np.dtype(indices.dtype).kind not in "iu":
            return NotImplemented
        out, backprop = recurrent.embedding(indices, E)
        return out, lambda g: (None, backprop(g))


# ---- helpers ------------------------------------------------------------------------------------------
def _axes(ndim: int, axis) -> tuple[int, ...]:
    """Sorted distinct non-negative axes (every axis for None)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted({int(a) % max(ndim, 1) for a in axes}))


def _keepdims_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _resolve_shape(size: int, shape) -> tuple:
    shape = tuple(int(n) for n in shape)
    if -1 in shape:
        known = int(np.prod([n for n in shape if n != -1], dtype=np.int64))
        shape = tuple(size // known if n == -1 else n for n in shape)
    return shape


def _last_axis(x, axis) -> bool:
    return x.dtype in FLOATS and x.ndim > 0 and x.size > 0 and axis in (-1, x.ndim - 1)


def _same_float(*arrays) -> bool:
    return arrays[0].dtype in FLOATS and all(a.dtype == arrays[0].dtype for a in arrays)


def _pooling(op, x, f, stride, padding):
    """(stride, pad top, pad left, (n_H_out, n_W_out)) of a pooling kernel (stride None = f), or None for inputs
    the kernels leave to the op's default: not float, empty, or a padding over f/2 (the op's check refuses
    it; the kernels count on every window holding a pixel of the image)."""
    if x.dtype not in FLOATS or x.ndim != 4 or not x.size:
        return None
    stride = f if stride is None else stride
    pads, out_hw = spatial_geometry(op, x.shape, f, stride, padding)
    if max(max(p) for p in pads) > f // 2:
        return None
    return stride, pads[0][0], pads[1][0], out_hw
