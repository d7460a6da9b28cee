"""Turning fully connected layers into convolutions (§4.18), for the convolutional implementation
of sliding windows: a classifier trained on n_H × n_W crops runs on a larger image in one pass and
gives one prediction per window position.

    conv_net = dense_head_to_conv(model, input_shape=(14, 14, 3))
    out = conv_net(x)      # x (m, 16, 16, 3) -> out (m, 2, 2, 4): out[:, i, j] = model(crop at (2i, 2j))
"""
from __future__ import annotations

import copy

import numpy as np

from ..backend import use_backend
from ..dtypes import set_default_dtype
from ..errors import ShapeError
from ..tensor import Parameter
from .batchnorm import BatchNorm
from .conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
from .core import Activation, Dense, Sequential
from .dropout import Dropout
from .layer import Layer
from .residual import ResidualBlock

#: layers that act on each position's neighbourhood only, so they run unchanged on a larger image
TRUNK_LAYERS = (Conv2D, MaxPool2D, AvgPool2D, ResidualBlock, BatchNorm, Activation, Dropout)
#: layers after the Flatten that act on each feature vector alone: kept, working on the channel axis
HEAD_PASSTHROUGH = (Activation, Dropout, BatchNorm)


def dense_head_to_conv(model: Sequential, input_shape) -> Sequential:
    """A new Sequential computing `model`'s function convolutionally: the layers before the Flatten are
    copied, the first Dense after it becomes a Conv2D with f = the Flatten input's n_H (= n_W) and
    W_conv = W.reshape(f, f, n_C, n_out) (the Flatten order is NHWC row-major, so this is the same
    Z = X·W + b), every later Dense(n_in, n_out) a 1×1 Conv2D with W.reshape(1, 1, n_in, n_out);
    activations, dropout and batch norm are kept and act on the channel axis.

    `input_shape` is the (n_H, n_W, n_C) the model was trained on: on that size the result gives
    (m, 1, 1, n_out) equal to the model's (m, n_out). On a larger image it gives one output per
    window: out[:, i, j] = model(x[:, s·i : s·i + n_H, s·j : s·j + n_W]) with s the product of the
    strides before the Flatten, stored with the window as `.window_stride` and `.window` on the
    result. That equality is exact when the layers before the Flatten do not pad (with padding,
    windows touching the image border see the padding where a crop would see pixels). Parameters
    are copied: training either model leaves the other as it was.
    """
    if not isinstance(model, Sequential):
        raise ShapeError(f"dense_head_to_conv: expected a Sequential model, got a {type(model).__name__}")
    layers = list(model.layers())
    flatten_at = [i for i, layer in enumerate(layers) if isinstance(layer, Flatten)]
    if not flatten_at:
        raise ShapeError(f"dense_head_to_conv: model {model.name!r} has no Flatten layer, so its Dense layers "
                         f"have no image before them to convolve; expected a trunk of convolutional layers, then "
                         f"Flatten, then Dense layers")
    if len(flatten_at) > 1:
        raise ShapeError(f"dense_head_to_conv: model {model.name!r} has {len(flatten_at)} Flatten layers "
                         f"(at {flatten_at}); expected exactly one between the trunk and the Dense head")
    trunk, head = layers[:flatten_at[0]], layers[flatten_at[0] + 1:]
    shape, stride = _trunk_geometry(model, trunk, input_shape)
    if not any(isinstance(layer, Dense) for layer in head):
        raise ShapeError(f"dense_head_to_conv: model {model.name!r} has no Dense layer after its Flatten; "
                         f"nothing to turn into a convolution")

    converted = [_copy(layer) for layer in trunk]
    features = None     # None: still the Flatten's input image, else the channels of the last layer
    for layer in head:
        if isinstance(layer, Dense):
            converted.append(_dense_as_conv(model, layer, shape if features is None else None, features))
            features = layer.n_out
        elif isinstance(layer, HEAD_PASSTHROUGH):
            if features is None and isinstance(layer, BatchNorm):
                raise ShapeError(f"dense_head_to_conv: BatchNorm layer {layer.name!r} of model {model.name!r} "
                                 f"normalizes the {int(np.prod(shape[1:]))} flattened features between the "
                                 f"Flatten and the first Dense, which no convolution reproduces; expected it "
                                 f"after a Dense layer or before the Flatten")
            converted.append(_on_channel_axis(model, _copy(layer)))
        else:
            raise ShapeError(f"dense_head_to_conv: layer {layer.name!r} of model {model.name!r} is a "
                             f"{type(layer).__name__}, which cannot follow the Flatten in a convertible head; "
                             f"expected Dense, {', '.join(t.__name__ for t in HEAD_PASSTHROUGH)}")
    result = Sequential(*converted, name=f"{model.name}_conv")
    result.training = model.training
    result.window, result.window_stride = (int(input_shape[0]), int(input_shape[1])), stride
    return result


def _trunk_geometry(model, trunk, input_shape) -> tuple[tuple, int]:
    """(the Flatten's input shape (None, n_H, n_W, n_C), the product of the trunk's strides)."""
    if len(tuple(input_shape)) != 3:
        raise ShapeError(f"dense_head_to_conv: input_shape must be the (n_H, n_W, n_C) that model "
                         f"{model.name!r} was trained on, got {tuple(input_shape)}")
    shape, stride = (None,) + tuple(int(d) for d in input_shape), 1
    for layer in trunk:
        if not isinstance(layer, TRUNK_LAYERS):
            raise ShapeError(f"dense_head_to_conv: layer {layer.name!r} of model {model.name!r} is a "
                             f"{type(layer).__name__}, which cannot come before the Flatten of a model run as "
                             f"sliding windows; expected {', '.join(t.__name__ for t in TRUNK_LAYERS)}")
        shape = tuple(layer.output_shape(shape))
        stride *= int(getattr(layer, "stride", 1))
    if len(shape) != 4:
        raise ShapeError(f"dense_head_to_conv: the Flatten of model {model.name!r} gets shape {shape}; "
                         f"expected an NHWC image (m, n_H, n_W, n_C)")
    return shape, stride


def _dense_as_conv(model, dense: Dense, image_shape, features) -> Conv2D:
    """The Conv2D equal to `dense`: f×f over the Flatten's (n_H, n_W, n_C) input, or 1×1 over `features`."""
    if image_shape is not None:
        _, n_H, n_W, n_C = image_shape
        if n_H != n_W:
            raise ShapeError(f"dense_head_to_conv: Dense layer {dense.name!r} of model {model.name!r} follows a "
                             f"{n_H}×{n_W}×{n_C} image; Conv2D filters are square, so expected n_H = n_W")
        f, n_C_prev = n_H, n_C
    else:
        f, n_C_prev = 1, features
    if f * f * n_C_prev != dense.n_in:
        raise ShapeError(f"dense_head_to_conv: Dense layer {dense.name!r} of model {model.name!r} expects "
                         f"n_in={dense.n_in} features, but the layers before it give {f}·{f}·{n_C_prev} = "
                         f"{f * f * n_C_prev}")
    W = dense.W
    with use_backend(W.backend.name), set_default_dtype(W.dtype):
        conv = Conv2D(n_C_prev, dense.n_out, f, activation=dense.activation, init="zeros",
                      use_bias=dense.b is not None, name=dense.name)
    conv.activation_name = dense.activation_name
    conv.W = _copied(W, W.numpy().reshape(f, f, n_C_prev, dense.n_out))
    if dense.b is not None:
        conv.b = _copied(dense.b, dense.b.numpy())
    return conv


def _on_channel_axis(model, layer: Layer) -> Layer:
    """`layer` (an Activation or BatchNorm written for (m, n) features) acting on NHWC's channel axis."""
    kwargs = layer.kwargs if isinstance(layer, Activation) else None
    axis = kwargs.get("axis") if kwargs is not None else getattr(layer, "axis", None)
    if axis is None:
        return layer
    if axis not in (1, -1):
        raise ShapeError(f"dense_head_to_conv: {type(layer).__name__} layer {layer.name!r} of model "
                         f"{model.name!r} works on axis {axis}; after a Dense layer expected axis 1 or -1 "
                         f"(the features), which becomes the channel axis -1")
    if kwargs is not None:
        kwargs["axis"] = -1
    else:
        layer.axis = -1
    return layer


def _copy(layer: Layer) -> Layer:
    """A deep copy of `layer` whose parameters stay on the same backend objects."""
    memo = {id(p.backend): p.backend for _, p in layer.named_parameters()}
    return copy.deepcopy(layer, memo)


def _copied(like: Parameter, value: np.ndarray) -> Parameter:
    return Parameter._wrap(like.backend.asarray(np.ascontiguousarray(value), like.dtype), like.backend,
                           requires_grad=like.requires_grad)
