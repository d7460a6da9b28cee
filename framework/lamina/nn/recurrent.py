"""Recurrent layers (§5.1–5.3, 5.5–5.8): SimpleRNN, GRU, LSTM, Bidirectional, stacking, TimeDistributed.

Inputs are batch-first, x (m, T_x, n_x). Each layer runs its whole sequence as one op (`rnn`, `gru`,
`lstm` in lamina.ops.recurrent), so a backend's fused kernel computes the forward pass and the
backpropagation through time in one call.

    layer(x, initial_state=None, mask=None)

`initial_state`: a<0> (m, n_a) (a pair (a<0>, c<0>) for the LSTM); zeros when None. `mask`: (m, T_x) 0/1
marking the real steps of a padded batch; a padded step carries the state over and outputs 0.
The result is a<T_x> (m, n_a) — the state after each sequence's last real step — or, with
`return_sequences=True`, every a<t> (m, T_x, n_a); with `return_state=True` a tuple
(output, a<T_x>) ((output, a<T_x>, c<T_x>) for the LSTM).

Truncated backpropagation through time: feed a long sequence in chunks of k steps and pass the
final state of one chunk, detached, as the initial state of the next:

    state = None
    for chunk in chunks:                               # x[:, i:i + k]
        y, *state = layer(chunk, initial_state=detach_state(state), ...)   # return_state=True
        ...loss on y; backward; step...

The forward pass is the full sequence's; gradients stop at the chunk boundary (k steps back).
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..backend import get_backend
from ..dtypes import get_default_dtype
from ..errors import LaminaError, ShapeError
from ..ops.recurrent import N_STATES, mask_array
from ..tensor import Parameter, Tensor
from .core import Sequential
from .dropout import Dropout
from .layer import Layer


def detach_state(state):
    """The state(s) of a recurrent layer cut from the graph (None stays None): for truncated BPTT."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(detach_state(s) for s in state)


class _Recurrent(Layer):
    """What SimpleRNN, GRU and LSTM share: sizes, options, initial states, masks and the outputs."""

    op = ""

    def __init__(self, input_size: int, hidden_size: int, return_sequences: bool = False,
                 return_state: bool = False, name: str | None = None):
        super().__init__(name)
        if int(input_size) <= 0 or int(hidden_size) <= 0:
            raise ShapeError(f"{type(self).__name__} layer {self.name!r}: input_size (n_x) and hidden_size (n_a) "
                             f"must be positive, got {input_size} and {hidden_size}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self._backend, self._dtype = get_backend(), get_default_dtype()

    @property
    def config(self) -> dict:
        """The constructor's arguments (Bidirectional builds its backward twin from them)."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "return_sequences": self.return_sequences, "return_state": self.return_state}

    def _uniform(self, *shape) -> Parameter:
        """U(−1/√n_a, 1/√n_a), PyTorch's default for its recurrent layers."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        array = self._backend.random_uniform(shape, self._dtype, -bound, bound)
        return Parameter._wrap(array, self._backend, requires_grad=True)

    def _bias(self, size: int, gate: slice, start: float) -> Parameter:
        """A bias of `size` numbers drawn as _uniform's, except the gate's, which all start at `start`."""
        b = self._backend.to_numpy(self._uniform(size).data).copy()
        b[gate] = start
        return Parameter._wrap(self._backend.asarray(b, self._dtype), self._backend, requires_grad=True)

    def _attrs(self) -> dict:
        return {}

    def _states(self, x, initial_state) -> list:
        label = f"{type(self).__name__} layer {self.name!r}"
        count = N_STATES[self.op]
        if initial_state is None:
            zeros = self._backend.zeros((x.shape[0], self.hidden_size), x.dtype)
            return [Tensor._wrap(zeros, x.backend) for _ in range(count)]
        states = [initial_state] if isinstance(initial_state, Tensor) else list(initial_state)
        if len(states) != count:
            what = "a<0>" if count == 1 else "(a<0>, c<0>)"
            raise LaminaError(f"{label}: 'initial_state' must be {what}, got {len(states)} tensor(s)")
        for s in states:
            if s.shape != (x.shape[0], self.hidden_size):
                raise ShapeError(f"{label}: initial states must have shape (m, n_a) = ({x.shape[0]}, "
                                 f"{self.hidden_size}), got {s.shape}")
        return [s.astype(x.dtype) for s in states]

    def forward(self, x, initial_state=None, mask=None):
        returns = ("both" if self.return_state else "sequence") if self.return_sequences else "state"
        result = self._run(x, initial_state, mask, returns)
        if returns == "sequence":
            return result
        sequence, states = result
        output = sequence if self.return_sequences else states[0]
        return (output, *states) if self.return_state else output

    def run(self, x, initial_state=None, mask=None):
        """(a<1>…a<T_x> (m, T_x, n_a), [a<T_x>] or [a<T_x>, c<T_x>]) whatever return_sequences and return_state
        say: to go on with a sequence later (one step at a time when sampling), pass the states back as
        `initial_state`."""
        sequence, states = self._run(x, initial_state, mask, "both")
        return sequence, list(states)

    def _run(self, x, initial_state, mask, returns):
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ShapeError(f"{type(self).__name__} layer {self.name!r}: expected input of shape (m, T_x, n_x) "
                             f"with n_x = input_size = {self.input_size}, got {x.shape}")
        return getattr(F, self.op)(x, *self._states(x, initial_state), *self._weights(), mask=mask, returns=returns,
                                   **self._attrs())

    def output_shape(self, input_shape):
        m, T = input_shape[0], input_shape[1]
        out = (m, T, self.hidden_size) if self.return_sequences else (m, self.hidden_size)
        if not self.return_state:
            return out
        return (out,) + ((m, self.hidden_size),) * N_STATES[self.op]

    def describe(self) -> str:
        seq = ", return_sequences=True" if self.return_sequences else ""
        return f"{self.input_size} -> {self.hidden_size}{seq}"


class SimpleRNN(_Recurrent):
    """a<t> = tanh(a<t-1>·W_aa + x<t>·W_ax + b_a), W_ax (n_x, n_a), W_aa (n_a, n_a), b_a (n_a,); the seed's
    a<t> = g(W_a[a<t-1>, x<t>] + b_a) with g = tanh. A prediction ŷ<t> = g(a<t>·W_ya + b_y) is a Dense
    (or TimeDistributed(Dense)) on top."""

    op = "rnn"
    weight_names = ("W_ax", "W_aa")

    def __init__(self, input_size, hidden_size, return_sequences=False, return_state=False, name=None):
        super().__init__(input_size, hidden_size, return_sequences, return_state, name)
        self.W_ax = self._uniform(self.input_size, self.hidden_size)
        self.W_aa = self._uniform(self.hidden_size, self.hidden_size)
        self.b_a = self._uniform(self.hidden_size)

    def _weights(self):
        return [self.W_ax, self.W_aa, self.b_a]


class GRU(_Recurrent):
    """Γ_r = σ(x·W_xr + a·W_ar + b_r), Γ_u = σ(x·W_xu + a·W_au + b_u), a<t> = Γ_u*c̃ + (1 − Γ_u)*a<t-1>, with
    c̃ = tanh(x·W_xc + b_xc + Γ_r*(a<t-1>·W_ac + b_ac)) if reset_after (PyTorch/cuDNN, the default) or the
    seed's full GRU c̃ = tanh(x·W_xc + b_xc + (Γ_r*a<t-1>)·W_ac + b_ac). W_x (n_x, 3n_a), W_a (n_a, 3n_a),
    b_x and b_a (3n_a,), gate columns [r | u | c̃]. (PyTorch's z is 1 − Γ_u.) `update_bias`, if given, starts
    the update gate's bias b_xu + b_au there (e.g. −1: Γ_u ≈ 0.27, the memory kept by default, as LSTM's
    forget_bias does); otherwise every bias starts uniform, as PyTorch's."""

    op = "gru"
    weight_names = ("W_x", "W_a")

    def __init__(self, input_size, hidden_size, return_sequences=False, return_state=False, reset_after=True,
                 update_bias: float | None = None, name=None):
        super().__init__(input_size, hidden_size, return_sequences, return_state, name)
        self.reset_after = bool(reset_after)
        self.update_bias = None if update_bias is None else float(update_bias)
        n = self.hidden_size
        self.W_x = self._uniform(self.input_size, 3 * n)
        self.W_a = self._uniform(n, 3 * n)
        gate_u = slice(n, 2 * n)
        self.b_x = self._uniform(3 * n) if self.update_bias is None else self._bias(3 * n, gate_u, self.update_bias)
        self.b_a = self._uniform(3 * n) if self.update_bias is None else self._bias(3 * n, gate_u, 0.0)

    @property
    def config(self):
        return {**super().config, "reset_after": self.reset_after, "update_bias": self.update_bias}

    def _weights(self):
        return [self.W_x, self.W_a, self.b_x, self.b_a]

    def _attrs(self):
        return {"reset_after": self.reset_after}

    def describe(self):
        return super().describe() + ("" if self.reset_after else ", reset_after=False")


class LSTM(_Recurrent):
    """Γ_k = σ(x·W_xk + a<t-1>·W_ak + b_k [+ P_k*c<t-1>]) for k = u (update), f (forget), o (output);
    c̃ = tanh(x·W_xc + a<t-1>·W_ac + b_c), c<t> = Γ_u*c̃ + Γ_f*c<t-1>, a<t> = Γ_o*tanh(c<t>).
    W_x (n_x, 4n_a), W_a (n_a, 4n_a), b (4n_a,), gate columns [u | f | o | c̃]; peephole=True adds the
    seed's peephole weights P (3, n_a) (c<t-1> into every gate, element by element). The forget gate's bias
    starts at `forget_bias` (1, as Keras: remember by default)."""

    op = "lstm"
    weight_names = ("W_x", "W_a", "P")

    def __init__(self, input_size, hidden_size, return_sequences=False, return_state=False, peephole=False,
                 forget_bias: float = 1.0, name=None):
        super().__init__(input_size, hidden_size, return_sequences, return_state, name)
        self.peephole, self.forget_bias = bool(peephole), float(forget_bias)
        n = self.hidden_size
        self.W_x = self._uniform(self.input_size, 4 * n)
        self.W_a = self._uniform(n, 4 * n)
        self.b = self._bias(4 * n, slice(n, 2 * n), self.forget_bias)
        self.P = self._uniform(3, n) if self.peephole else None

    @property
    def config(self):
        return {**super().config, "peephole": self.peephole, "forget_bias": self.forget_bias}

    def _weights(self):
        return [self.W_x, self.W_a, self.b] + ([self.P] if self.P is not None else [])

    def describe(self):
        return super().describe() + (", peephole=True" if self.peephole else "")


def _lengths(label: str, mask, m: int, T: int) -> np.ndarray:
    """Each sequence's length from a prefix mask (1…1 0…0); an error for any other mask."""
    mask = mask_array(label, mask, m, T)
    lengths = mask.sum(axis=1, dtype=np.int64)
    if not np.array_equal(mask, (np.arange(T)[None, :] < lengths[:, None]).astype(np.uint8)):
        raise ShapeError(f"{label}: 'mask' must mark a prefix of each sequence (1…1 then 0…0: padding at the end) "
                         f"so the backward direction can reverse each sequence within its length")
    return lengths


def reverse_sequences(x, lengths=None):
    """x<t> of each sequence in reverse order within its length: out[i, t] = x[i, L_i − 1 − t] for t < L_i and
    x[i, t] after (the padding stays where it is). lengths None: the whole time axis is reversed."""
    m, T = x.shape[0], x.shape[1]
    if lengths is None:
        return x[:, ::-1]
    t = np.arange(T)[None, :]
    lengths = np.asarray(lengths, dtype=np.int64)
    index = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x[np.arange(m)[:, None], index]


class Bidirectional(Layer):
    """a<t> = [a→<t>, a←<t>]: `layer` reads each sequence forwards, a fresh twin of it (same configuration,
    its own weights) backwards (within each sequence's length when a mask is given), and their activations
    are joined per step on the features axis (2n_a). Without return_sequences the output is
    [a→<T_x>, a←<1>] (each direction's last state); return_state adds the forward then backward states.
    initial_state: (forward's, backward's), each in the wrapped layer's form."""

    def __init__(self, layer: _Recurrent, name: str | None = None):
        if not isinstance(layer, _Recurrent):
            raise LaminaError(f"Bidirectional: 'layer' must be a SimpleRNN, GRU or LSTM, got {type(layer).__name__}")
        super().__init__(name or f"bidirectional_{layer.name}")
        self.forward_layer = layer
        self.backward_layer = type(layer)(**layer.config, name=f"{layer.name}_backward")

    def forward(self, x, initial_state=None, mask=None):
        inner = self.forward_layer
        if x.ndim != 3:
            raise ShapeError(f"Bidirectional layer {self.name!r}: expected input of shape (m, T_x, n_x), got {x.shape}")
        lengths = None if mask is None else _lengths(f"Bidirectional layer {self.name!r}", mask, x.shape[0], x.shape[1])
        first, second = (None, None) if initial_state is None else initial_state
        fwd = inner(x, initial_state=first, mask=mask)
        bwd = self.backward_layer(reverse_sequences(x, lengths), initial_state=second, mask=mask)
        fwd_states, bwd_states = [], []
        if inner.return_state:
            fwd, *fwd_states = fwd
            bwd, *bwd_states = bwd
        if inner.return_sequences:
            bwd = reverse_sequences(bwd, lengths)
        out = F.concatenate([fwd, bwd], axis=-1)
        return (out, *fwd_states, *bwd_states) if inner.return_state else out

    def output_shape(self, input_shape):
        inner = self.forward_layer.output_shape(input_shape)
        if not self.forward_layer.return_state:
            return inner[:-1] + (2 * inner[-1],)
        out, states = inner[0], inner[1:]
        return (out[:-1] + (2 * out[-1],),) + states + states

    def describe(self) -> str:
        return f"{type(self.forward_layer).__name__} {self.forward_layer.describe()}"


def stacked(cell: type, input_size: int, hidden_size: int, num_layers: int, keep_prob: float = 1.0,
            return_sequences: bool = False, bidirectional: bool = False, **options) -> Sequential:
    """A deep RNN (§5.8): `num_layers` recurrent layers where a^[l]<t> is the input x<t> of layer l + 1, with
    inverted dropout (keep_prob) between them; every layer but the last returns its sequence. `cell` is
    SimpleRNN, GRU or LSTM; `options` go to each layer (reset_after, peephole, ...)."""
    if int(num_layers) < 1:
        raise LaminaError(f"stacked: num_layers must be at least 1, got {num_layers}")
    layers = []
    n_in = input_size
    for l in range(int(num_layers)):
        last = l == num_layers - 1
        layer = cell(n_in, hidden_size, return_sequences=return_sequences or not last, **options)
        layers.append(Bidirectional(layer) if bidirectional else layer)
        n_in = hidden_size * (2 if bidirectional else 1)
        if not last and keep_prob < 1.0:
            layers.append(Dropout(keep_prob))
    return Sequential(*layers)


class TimeDistributed(Layer):
    """y<t> = layer(x<t>) for every step: (m, T_x, ...) is folded to (m·T_x, ...), run through `layer`
    once, and unfolded (e.g. ŷ<t> = softmax(a<t>·W_ya + b_y) with TimeDistributed(Dense(n_a, n_y)))."""

    def __init__(self, layer: Layer, name: str | None = None):
        super().__init__(name or f"time_distributed_{layer.name}")
        self.layer = layer

    def forward(self, x):
        if x.ndim < 3:
            raise ShapeError(f"TimeDistributed layer {self.name!r}: expected input (m, T_x, ...), got {x.shape}")
        m, T = x.shape[0], x.shape[1]
        y = self.layer(x.reshape((m * T,) + tuple(x.shape[2:])))
        return y.reshape((m, T) + tuple(y.shape[1:]))

    def output_shape(self, input_shape):
        inner = self.layer.output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    def describe(self) -> str:
        return f"{type(self.layer).__name__} {self.layer.describe()}"


RECURRENT_LAYERS = {"simple_rnn": SimpleRNN, "gru": GRU, "lstm": LSTM, "bidirectional": Bidirectional,
                    "time_distributed": TimeDistributed}
