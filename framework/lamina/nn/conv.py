"""Convolutional layers (§4.1–4.4) on NHWC images: Conv2D, max/average pooling, global pooling, Flatten.

Output shapes follow the ops' own shape rule (`lamina.ops.convolution.spatial_geometry`), so a
summary knows every shape without running anything.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..backend import get_backend
from ..dtypes import get_default_dtype
from ..errors import ShapeError
from ..ops.convolution import spatial_geometry
from .core import _parameter, activation_and_init
from .layer import Layer


def _spatial_output(layer, op: str, input_shape: tuple, f: int, stride: int, padding) -> tuple:
    """(n_H_out, n_W_out) for an NHWC `input_shape` (None for the batch)."""
    if len(input_shape) != 4:
        raise ShapeError(f"{type(layer).__name__} layer {layer.name!r}: expected NHWC input (m, n_H, n_W, n_C), "
                         f"got shape {tuple(input_shape)}")
    return spatial_geometry(op, (0,) + tuple(input_shape[1:]), f, stride, padding)[1]


def _check_image(layer, x, channels=None, arg="n_in"):
    if x.ndim != 4 or (channels is not None and x.shape[3] != channels):
        want = f"(m, n_H, n_W, {channels}) ({arg}={channels})" if channels is not None else "(m, n_H, n_W, n_C)"
        raise ShapeError(f"{type(layer).__name__} layer {layer.name!r}: expected NHWC input of shape {want}, "
                         f"got {x.shape}")


class Conv2D(Layer):
    """A convolutional layer: A = g(X * W + b) with X (m, n_H, n_W, n_C_prev), W (f, f, n_C_prev, n_C)
    (HWIO) and b (n_C,); output (m, ⌊(n_H + 2p − f)/s⌋ + 1, ⌊(n_W + 2p − f)/s⌋ + 1, n_C).

    `n_in` is n_C_prev, the input's channels (a recipe fills it in from the previous layer's last axis);
    `n_C` the number of filters. `padding` is "valid", "same" or an int; `activation` and `init` as
    Dense's (fan_in = f·f·n_C_prev, fan_out = f·f·n_C).
    """

    weight_names = ("W",)

    def __init__(self, n_in: int, n_C: int, f: int, stride: int = 1, padding="valid", activation=None,
                 init="auto", use_bias: bool = True, name: str | None = None):
        super().__init__(name)
        if int(n_in) <= 0 or int(n_C) <= 0 or int(f) <= 0 or int(stride) <= 0:
            raise ShapeError(f"Conv2D layer {self.name!r}: n_in (n_C_prev), n_C, f and stride must be positive, "
                             f"got {n_in}, {n_C}, {f} and {stride}")
        self.n_C_prev, self.n_C, self.f, self.stride = int(n_in), int(n_C), int(f), int(stride)
        self.padding = padding if isinstance(padding, str) else int(padding)
        spatial_geometry("Conv2D", (0, self.f, self.f, self.n_C_prev), self.f, self.stride, self.padding)
        self.activation_name, self.activation, self.init = activation_and_init(activation, init)
        backend, dtype = get_backend(), get_default_dtype()
        shape = (self.f, self.f, self.n_C_prev, self.n_C)
        self.W = _parameter(self.init(shape, self.f * self.f * self.n_C_prev, self.f * self.f * self.n_C,
                                      backend, dtype), backend)
        self.b = _parameter(backend.zeros((self.n_C,), dtype), backend) if use_bias else None

    def forward(self, x):
        _check_image(self, x, self.n_C_prev)
        z = F.conv2d(x, self.W, self.b, stride=self.stride, padding=self.padding)
        return self.activation(z) if self.activation is not None else z

    def output_shape(self, input_shape):
        oh, ow = _spatial_output(self, "Conv2D", input_shape, self.f, self.stride, self.padding)
        return (input_shape[0], oh, ow, self.n_C)

    def describe(self) -> str:
        act = f", activation={self.activation_name!r}" if self.activation_name else ""
        return (f"{self.n_C_prev} -> {self.n_C}, f={self.f}, stride={self.stride}, "
                f"padding={self.padding!r}{act}")


class _Pool2D(Layer):
    op = ""

    def __init__(self, f: int, stride: int | None = None, padding=0, name: str | None = None):
        super().__init__(name)
        self.f = int(f)
        self.stride = self.f if stride is None else int(stride)
        self.padding = padding if isinstance(padding, str) else int(padding)

    def forward(self, x):
        _check_image(self, x)
        return getattr(F, self.op)(x, f=self.f, stride=self.stride, padding=self.padding)

    def output_shape(self, input_shape):
        oh, ow = _spatial_output(self, self.op, input_shape, self.f, self.stride, self.padding)
        return (input_shape[0], oh, ow, input_shape[3])

    def describe(self) -> str:
        return f"f={self.f}, stride={self.stride}, padding={self.padding!r}"


class MaxPool2D(_Pool2D):
    """Max pooling: the max of each f×f window of each channel, moving by `stride` (default f)."""

    op = "max_pool2d"


class AvgPool2D(_Pool2D):
    """Average pooling over f×f windows moving by `stride` (default f); padding counts as zeros."""

    op = "avg_pool2d"


class GlobalAvgPool2D(Layer):
    """(m, n_H, n_W, n_C) -> (m, n_C): the mean of each channel over all positions."""

    def forward(self, x):
        _check_image(self, x)
        return F.global_avg_pool2d(x)

    def output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


class Flatten(Layer):
    """(m, d1, d2, ...) -> (m, d1·d2·...), in NHWC (row-major) order."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    def output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:], dtype=np.int64)))


CONV_LAYERS = {"conv2d": Conv2D, "max_pool2d": MaxPool2D, "avg_pool2d": AvgPool2D,
               "global_avg_pool2d": GlobalAvgPool2D, "flatten": Flatten}
