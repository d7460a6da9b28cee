"""The functional API (`lamina.functional`, also `lamina.F`): stateless ops on tensors."""
from __future__ import annotations

from .ops import call
from .tensor import Tensor, tensor


def _t(x) -> Tensor:
    return x if isinstance(x, Tensor) else tensor(x)


def dense(x, W, b=None) -> Tensor:
    """Z = X·W + b, X (m, n_in), W (n_in, n_out), b (n_out,)."""
    x, W = _t(x), _t(W)
    return call("dense", x, W) if b is None else call("dense", x, W, _t(b))


def sigmoid(x) -> Tensor:
    """σ(z) = 1/(1 + e^(-z))."""
    return call("sigmoid", _t(x))


def tanh(x) -> Tensor:
    """tanh(z) = 2/(1 + e^(-2z)) - 1."""
    return call("tanh", _t(x))


def relu(x) -> Tensor:
    """ReLU(z) = max(0, z)."""
    return call("relu", _t(x))


def leaky_relu(x, alpha: float = 0.01) -> Tensor:
    """LReLU(z) = max(α·z, z)."""
    return call("leaky_relu", _t(x), alpha=float(alpha))


def softmax(x, axis: int = -1) -> Tensor:
    """softmax(z)_i = e^(z_i) / Σ_j e^(z_j) along `axis`."""
    return call("softmax", _t(x), axis=axis)


def log_softmax(x, axis: int = -1) -> Tensor:
    """log softmax(z)_i = z_i - log Σ_j e^(z_j) along `axis`."""
    return call("log_softmax", _t(x), axis=axis)


def binary_cross_entropy(probs, y) -> Tensor:
    """L(y, a) = -mean[y·log a + (1 - y)·log(1 - a)] over every element."""
    return call("binary_cross_entropy", _t(probs), _t(y))


def softmax_cross_entropy(logits, labels) -> Tensor:
    """J = -1/m Σ_i log softmax(z_i)[y_i] (labels int (m,) or one-hot (m, n)); dJ/dz = (ŷ - y)/m."""
    return call("softmax_cross_entropy", _t(logits), _t(labels))


def mse(pred, target) -> Tensor:
    """J = mean((ŷ - y)²)."""
    return call("mse", _t(pred), _t(target))


def conv2d(x, W, b=None, stride: int = 1, padding="valid") -> Tensor:
    """Z = X * W + b on NHWC images: x (m, n_H, n_W, n_C_prev), W (f, f, n_C_prev, n_C) (HWIO), b (n_C,);
    padding "valid", "same" or an int; output (m, ⌊(n_H + 2p − f)/s⌋ + 1, ⌊(n_W + 2p − f)/s⌋ + 1, n_C)."""
    x, W = _t(x), _t(W)
    args = (x, W) if b is None else (x, W, _t(b))
    return call("conv2d", *args, stride=stride, padding=padding)


def max_pool2d(x, f: int, stride: int | None = None, padding=0) -> Tensor:
    """The max of each f×f window of each channel, moving by `stride` (default f); NHWC."""
    return call("max_pool2d", _t(x), f=f, stride=stride, padding=padding)


def avg_pool2d(x, f: int, stride: int | None = None, padding=0) -> Tensor:
    """The mean of each f×f window of each channel (padding counts as zeros), moving by `stride` (default f)."""
    return call("avg_pool2d", _t(x), f=f, stride=stride, padding=padding)


def global_avg_pool2d(x) -> Tensor:
    """(m, n_H, n_W, n_C) -> (m, n_C): the mean of each channel over all positions."""
    return call("global_avg_pool2d", _t(x))


def concatenate(tensors, axis: int = -1) -> Tensor:
    """Join tensors along `axis`: out.shape[axis] = Σ_i tensors[i].shape[axis], every other size equal."""
    tensors = [_t(x) for x in tensors]
    if not tensors:
        from .errors import OpError

        raise OpError("concatenate: needs at least one tensor, got none")
    return call("concatenate", *tensors, axis=axis)


def local_response_norm(x, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> Tensor:
    """b_c = a_c / (k + α/n · Σ_{c' in the n-channel window of c} a_c'²)^β over the last (channel) axis."""
    return call("local_response_norm", _t(x), size=size, alpha=alpha, beta=beta, k=k)


def _sequence_op(name, x, inputs, mask, returns, **attrs):
    from .ops.recurrent import split_returns

    out = call(name, _t(x), *[_t(i) for i in inputs if i is not None], mask=mask, returns=returns, **attrs)
    return out if returns == "sequence" else split_returns(out, returns, x.shape[1])


def rnn(x, a0, W_ax, W_aa, b_a, mask=None, returns: str = "sequence"):
    """a<t> = tanh(a<t-1>·W_aa + x<t>·W_ax + b_a) over x (m, T_x, n_x). returns="sequence": every a<t>
    (m, T_x, n_a); "state" or "both": (sequence or None, [a<T_x>]). mask (m, T_x): padded steps carry the state."""
    return _sequence_op("rnn", x, (a0, W_ax, W_aa, b_a), mask, returns)


def gru(x, a0, W_x, W_a, b_x, b_a, reset_after: bool = True, mask=None, returns: str = "sequence"):
    """a<t> = Γ_u*c̃ + (1 − Γ_u)*a<t-1> (gate columns [r | u | c̃]; see lamina.ops.recurrent.gru for c̃ with and
    without reset_after). Returns as `rnn`."""
    return _sequence_op("gru", x, (a0, W_x, W_a, b_x, b_a), mask, returns, reset_after=bool(reset_after))


def lstm(x, a0, c0, W_x, W_a, b, P=None, mask=None, returns: str = "sequence"):
    """c<t> = Γ_u*c̃ + Γ_f*c<t-1>, a<t> = Γ_o*tanh(c<t>) (gate columns [u | f | o | c̃], optional peepholes
    P (3, n_a)). Returns as `rnn`, the states being [a<T_x>, c<T_x>]."""
    return _sequence_op("lstm", x, (a0, c0, W_x, W_a, b, P), mask, returns)


def embedding(indices, E) -> Tensor:
    """e = E[indices]: (…) integer indices into E (V, d) -> (…, d); the gradient adds into the rows used."""
    return call("embedding", _t(indices), _t(E))


ACTIVATIONS = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu, "leaky_relu": leaky_relu, "softmax": softmax,
               "log_softmax": log_softmax}
