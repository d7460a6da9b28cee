"""Inception (GoogLeNet, §4.9–4.10): 1×1 "network in network" bottlenecks and the Inception module, whose
parallel branches (1×1, 3×3, 5×5 convolutions and a same-padded max pool) are concatenated on channels.
Also the pieces GoogLeNet's side branches need: `ConvUnit` and `AdaptiveAvgPool2D`."""
from __future__ import annotations

import functools

import numpy as np

from .. import functional as F
from ..errors import ShapeError
from ..ops import call
from ..tensor import Tensor
from .batchnorm import BatchNorm
from .conv import Conv2D, MaxPool2D, _check_image
from .core import Sequential
from .layer import Layer

#: torchvision's BasicConv2d normalizes with ε = 0.001 (the TensorFlow Inception value)
BATCH_NORM_EPSILON = 1e-3


class ConvUnit(Layer):
    """a = ReLU(conv(x) + b), or with `batch_norm` a = ReLU(BN(conv(x))) with a bias-free convolution and
    BN ε = 0.001 (torchvision's BasicConv2d; BN's β takes the bias's place). He initialization (ReLU follows)."""

    def __init__(self, n_in: int, n_C: int, f: int, stride: int = 1, padding=0, batch_norm: bool = False,
                 name: str | None = None):
        super().__init__(name)
        self.batch_norm = bool(batch_norm)
        self.conv = Conv2D(n_in, n_C, f, stride=stride, padding=padding, use_bias=not self.batch_norm,
                           activation=None if self.batch_norm else "relu", init="he")
        if self.batch_norm:
            self.bn = BatchNorm(n_C, epsilon=BATCH_NORM_EPSILON)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) if self.batch_norm else self.conv(x)

    def output_shape(self, input_shape):
        return self.conv.output_shape(input_shape)

    def describe(self) -> str:
        return self.conv.describe().replace(", activation='relu'", "") + (", BN" if self.batch_norm else "") + \
            ", ReLU"


class SummaryRow(Layer):
    """A row of a summary table for a layer that reads `source`'s output (shape `source_shape`) rather than
    the row above's: parallel branches, side branches. `layer=None` makes a parameter-free row whose shape is
    `source_shape` itself (e.g. the concatenation of branches)."""

    def __init__(self, layer: Layer | None, source: str, source_shape, name: str | None = None):
        super().__init__(name or (layer.name if layer is not None else source))
        self.layer, self.source, self.source_shape = layer, source, source_shape

    def output_shape(self, input_shape):
        if self.source_shape is None or self.layer is None:
            return self.source_shape
        return self.layer.output_shape(self.source_shape)

    def describe(self) -> str:
        if self.layer is None:
            return self.source
        inner = self.layer.describe()
        return f"{inner + ', ' if inner else ''}on {self.source}"


@functools.lru_cache(maxsize=None)
def _row_class(title: str) -> type:
    """A SummaryRow subclass named `title`: Layer.summary labels a row with its class's name."""
    return type(title, (SummaryRow,), {"__doc__": SummaryRow.__doc__})


def summary_row(layer: Layer | None, source: str, source_shape, title: str | None = None) -> SummaryRow:
    """A SummaryRow titled like the layer it shows (or `title`)."""
    return _row_class(title or type(layer).__name__)(layer, source, source_shape)


def summary_view(name: str, rows: dict) -> Layer:
    """A parameter-holding stand-in whose Layer.summary lists `rows` ({key: layer}) in order."""
    view = Layer(name)
    for key, layer in rows.items():
        setattr(view, key, layer)
    return view


class InceptionModule(Layer):
    """The Inception module (§4.10, Szegedy et al. 2014, figure 2b): four branches on the same input,
    concatenated on channels,

        out = concat_C[ 1×1(x),  3×3(1×1_reduce(x)),  5×5(1×1_reduce(x)),  1×1_proj(maxpool_3×3,s1,same(x)) ]

    with n_1x1 + n_3x3 + n_5x5 + pool_proj output channels and the input's n_H × n_W (every convolution
    and the pool are "same", stride 1). Each convolution is a `ConvUnit`: conv + bias + ReLU (the paper),
    or with `batch_norm=True` bias-free conv + BN(ε = 0.001) + ReLU (torchvision's BasicConv2d). The 1×1
    "reduce" convolutions are the bottlenecks of §4.9. `f_5x5` is the wide branch's filter size: 5 in the
    paper; torchvision's GoogLeNet uses 3 there (a known quirk kept for weight compatibility).
    """

    BRANCHES = ("branch1", "branch2", "branch3", "branch4")

    def __init__(self, n_in: int, n_1x1: int, n_3x3_reduce: int, n_3x3: int, n_5x5_reduce: int, n_5x5: int,
                 pool_proj: int, batch_norm: bool = False, f_5x5: int = 5, name: str | None = None):
        super().__init__(name)
        widths = {"n_in": n_in, "n_1x1": n_1x1, "n_3x3_reduce": n_3x3_reduce, "n_3x3": n_3x3,
                  "n_5x5_reduce": n_5x5_reduce, "n_5x5": n_5x5, "pool_proj": pool_proj}
        bad = {k: v for k, v in widths.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer))
               or v <= 0}
        if bad:
            raise ShapeError(f"InceptionModule layer {self.name!r}: every channel count must be a positive int, "
                             f"got {', '.join(f'{k}={v!r}' for k, v in bad.items())}")
        if isinstance(f_5x5, bool) or not isinstance(f_5x5, (int, np.integer)) or f_5x5 < 1 or f_5x5 % 2 == 0:
            raise ShapeError(f"InceptionModule layer {self.name!r}: f_5x5 must be a positive odd int (a 'same' "
                             f"convolution keeps n_H × n_W only with an odd filter), got {f_5x5!r}")
        self.n_in, self.batch_norm, self.f_5x5 = int(n_in), bool(batch_norm), int(f_5x5)
        self.widths = (int(n_1x1), int(n_3x3), int(n_5x5), int(pool_proj))
        self.n_out = sum(self.widths)
        bn = self.batch_norm
        self.branch1 = ConvUnit(n_in, n_1x1, 1, batch_norm=bn)
        self.branch2 = Sequential(ConvUnit(n_in, n_3x3_reduce, 1, batch_norm=bn),
                                  ConvUnit(n_3x3_reduce, n_3x3, 3, padding=1, batch_norm=bn))
        self.branch3 = Sequential(ConvUnit(n_in, n_5x5_reduce, 1, batch_norm=bn),
                                  ConvUnit(n_5x5_reduce, n_5x5, self.f_5x5, padding=self.f_5x5 // 2, batch_norm=bn))
        self.branch4 = Sequential(MaxPool2D(3, stride=1, padding=1), ConvUnit(n_in, pool_proj, 1, batch_norm=bn))

    def forward(self, x):
        _check_image(self, x, self.n_in)
        return F.concatenate([getattr(self, key)(x) for key in self.BRANCHES], axis=-1)

    def output_shape(self, input_shape):
        if len(input_shape) != 4 or input_shape[3] != self.n_in:
            raise ShapeError(f"InceptionModule layer {self.name!r}: expected NHWC input (m, n_H, n_W, {self.n_in}), "
                             f"got shape {tuple(input_shape)}")
        return tuple(input_shape[:3]) + (self.n_out,)

    def summary(self, input_shape=None, print_fn=print) -> str:
        """Layer.summary's table: each branch shaped from the module's input, then their concatenation."""
        shape = (None,) + tuple(input_shape) if input_shape is not None else None
        rows = {key: summary_row(getattr(self, key), "the input", shape) for key in self.BRANCHES}
        rows["concatenate"] = summary_row(None, "on channels", self.output_shape(shape) if shape is not None
                                          else None, title="Concatenate")
        return summary_view(self.name, rows).summary(input_shape, print_fn=print_fn)

    def describe(self) -> str:
        n_1x1, n_3x3, n_5x5, pool_proj = self.widths
        return (f"{self.n_in} -> {n_1x1}+{n_3x3}+{n_5x5}+{pool_proj} = {self.n_out}, "
                f"{self.f_5x5}×{self.f_5x5} wide branch{', BN' if self.batch_norm else ''}")


def adaptive_windows(n: int, n_out: int) -> list[tuple[int, int]]:
    """[start, end) of output cell i along an axis of n: ⌊i·n/n_out⌋ to ⌈(i+1)·n/n_out⌉ (PyTorch's rule)."""
    return [((i * n) // n_out, -((-(i + 1) * n) // n_out)) for i in range(n_out)]


def averaging_matrix(n: int, n_out: int, dtype) -> np.ndarray:
    """P (n_out × n): P[i, h] = 1/(end_i − start_i) for h in window i, so P·a averages each window."""
    P = np.zeros((n_out, n), dtype=dtype)
    for i, (start, end) in enumerate(adaptive_windows(n, n_out)):
        P[i, start:end] = 1.0 / (end - start)
    return P


class AdaptiveAvgPool2D(Layer):
    """(m, n_H, n_W, n_C) -> (m, o_H, o_W, n_C): out[i, j] = mean of x over rows ⌊i·n_H/o_H⌋…⌈(i+1)·n_H/o_H⌉ − 1
    and columns likewise (PyTorch's adaptive_avg_pool2d), computed as P_H·x·P_Wᵀ with the averaging matrices
    P (two matmuls, so every backend runs it). torchvision's GoogLeNet side branches pool to 4×4 this way."""

    def __init__(self, output_size, name: str | None = None):
        super().__init__(name)
        size = (output_size, output_size) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size):
            raise ShapeError(f"AdaptiveAvgPool2D layer {self.name!r}: output_size must be a positive int or a pair "
                             f"(o_H, o_W) of them, got {output_size!r}")
        self.output_size = (int(size[0]), int(size[1]))

    def forward(self, x):
        _check_image(self, x)
        (oh, ow), (_, h, w, _) = self.output_size, x.shape
        P_H = Tensor(averaging_matrix(h, oh, x.dtype), dtype=x.dtype, backend=x.backend)
        P_Wt = Tensor(averaging_matrix(w, ow, x.dtype).T.copy(), dtype=x.dtype, backend=x.backend)
        channels_first = call("transpose", x, axes=(0, 3, 1, 2))                     # (m, C, H, W)
        pooled = call("matmul", call("matmul", P_H, channels_first), P_Wt)          # (m, C, o_H, o_W)
        return call("transpose", pooled, axes=(0, 2, 3, 1))

    def output_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"AdaptiveAvgPool2D layer {self.name!r}: expected NHWC input (m, n_H, n_W, n_C), got "
                             f"shape {tuple(input_shape)}")
        return (input_shape[0],) + self.output_size + (input_shape[3],)

    def describe(self) -> str:
        return f"output_size={self.output_size}"


class InceptionAux(Layer):
    """GoogLeNet's side branch (§4.10): a classifier on an intermediate feature map whose loss, weighted
    0.3, regularizes training; it is dropped at inference. pool → 1×1 conv to 128 channels + ReLU → Flatten
    → FC(1024) + ReLU → dropout → FC(num_classes) (logits).

    variant="paper" (Szegedy et al. 2014, section 5): 5×5 average pooling with stride 3 (4×4 at the 14×14
    maps of a 224×224 input), plain convolution with bias, dropout of 70% (keep_prob = 0.3); the FC input
    width follows the pooled size of `in_hw`, the tapped map's (n_H, n_W). variant="torchvision": adaptive
    average pooling to 4×4 (any input size), conv + BN(ε = 0.001) + ReLU, the same dropout.
    """

    def __init__(self, n_in: int, num_classes: int, in_hw=(14, 14), variant: str = "torchvision",
                 keep_prob: float = 0.3, name: str | None = None):
        super().__init__(name)
        from .conv import AvgPool2D, Flatten
        from .core import Dense
        from .dropout import Dropout

        if variant not in ("paper", "torchvision"):
            raise ShapeError(f"InceptionAux layer {self.name!r}: variant must be 'paper' or 'torchvision', "
                             f"got {variant!r}")
        self.n_in, self.variant = int(n_in), variant
        self.pool = AdaptiveAvgPool2D(4) if variant == "torchvision" else AvgPool2D(5, stride=3)
        self.conv = ConvUnit(n_in, 128, 1, batch_norm=variant == "torchvision")
        self.flatten = Flatten()
        shape = (None,) + tuple(int(n) for n in in_hw) + (self.n_in,)
        for layer in (self.pool, self.conv, self.flatten):
            shape = layer.output_shape(shape)
        self.fc1 = Dense(shape[1], 1024, activation="relu")
        self.dropout = Dropout(keep_prob)
        self.fc2 = Dense(1024, num_classes)

    def forward(self, x):
        _check_image(self, x, self.n_in)
        for layer in self.layers():
            x = layer(x)
        return x

    def output_shape(self, input_shape):
        for layer in self.layers():
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def describe(self) -> str:
        return f"{self.variant}, {self.n_in} channels -> {self.fc2.n_out} classes"
