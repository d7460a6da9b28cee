"""`Layer`: parameters, sub-layers, train/eval mode, freezing, summaries and state."""
from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from ..errors import CheckpointError, ShapeError
from ..tensor import Parameter, Tensor


def _snake(name: str) -> str:
    """Conv2D -> conv2d, MaxPool2D -> max_pool2d, BatchNorm -> batch_norm."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


class Layer:
    """Base class of layers. Subclasses assign `Parameter`s and sub-layers as attributes
    and implement `forward`; `output_shape` lets summaries know shapes without running."""

    #: the parameters that are weights, the only ones regularizers act on (§2.3: not biases, nor
    #: normalization's γ and β)
    weight_names: tuple[str, ...] = ()
    #: parameters that forward updates and no optimizer trains (BatchNorm's running averages): saved
    #: with the state, created with requires_grad=False and left so by unfreeze()
    non_trainable_names: tuple[str, ...] = ()

    def __init__(self, name: str | None = None):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_layers", {})
        self.name = name or _snake(type(self).__name__)
        self.training = True

    def __setattr__(self, key, value):
        params, layers = self.__dict__.get("_parameters"), self.__dict__.get("_layers")
        if params is None:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        params.pop(key, None)
        layers.pop(key, None)
        if isinstance(value, Parameter):
            params[key] = value
        elif isinstance(value, Layer):
            layers[key] = value
        object.__setattr__(self, key, value)

    def forward(self, *inputs):
        raise TypeError(f"{type(self).__name__} must define forward()")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def output_shape(self, input_shape: tuple) -> tuple:
        """The output shape for an input of `input_shape` (None = any batch size)."""
        return input_shape

    # ---- parameters --------------------------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for key, p in self._parameters.items():
            yield prefix + key, p
        for key, layer in self._layers.items():
            yield from layer.named_parameters(prefix + key + ".")

    def named_weights(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(name, parameter) of every weight: what each layer lists in `weight_names`."""
        return self._named_listed("weight_names", prefix)

    def _named_listed(self, attr: str, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for key in getattr(self, attr):
            if self._parameters.get(key) is not None:
                yield prefix + key, self._parameters[key]
        for key, layer in self._layers.items():
            yield from layer._named_listed(attr, prefix + key + ".")

    def parameters(self, trainable_only: bool = False) -> list[Parameter]:
        return [p for _, p in self.named_parameters() if p.requires_grad or not trainable_only]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return int(sum(p.size for p in self.parameters(trainable_only)))

    def layers(self) -> Iterator["Layer"]:
        yield from self._layers.values()

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ---- modes ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Layer":
        self.training = mode
        for layer in self._layers.values():
            layer.train(mode)
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def freeze(self) -> "Layer":
        """Stop training this layer's parameters (they get no gradient)."""
        for p in self.parameters():
            p.requires_grad = False
            p.grad = None
        return self

    def unfreeze(self) -> "Layer":
        """Train this layer's parameters again (those listed in `non_trainable_names` stay untrained)."""
        untrained = {id(p) for _, p in self._named_listed("non_trainable_names", "")}
        for p in self.parameters():
            p.requires_grad = id(p) not in untrained
        return self

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: p.numpy().copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters; names and shapes must match (all of them if strict)."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise CheckpointError(f"{self.name}: state does not fit the model: missing {missing or 'nothing'}, "
                                  f"unexpected {unexpected or 'nothing'}")
        values = {name: np.asarray(state[name]) for name in own if name in state}
        mismatched = [f"{name!r} has shape {own[name].shape} in the model but {tuple(v.shape)} in the state"
                      for name, v in values.items() if tuple(v.shape) != own[name].shape]
        if mismatched:
            raise CheckpointError(f"{self.name}: parameter " + "; parameter ".join(mismatched))
        for name, value in values.items():
            own[name].data = own[name].backend.asarray(value, own[name].dtype)

    # ---- description ---------------------------------------------------------------------
    def describe(self) -> str:
        return ""

    def summary(self, input_shape: tuple | None = None, print_fn=print) -> str:
        """A table of sub-layers, output shapes (given the input shape) and parameter counts."""
        rows = [("Layer", "Output shape", "Params")]
        shape = (None,) + tuple(input_shape) if input_shape is not None else None
        children = list(self._layers.items()) or [(self.name, self)]
        for key, layer in children:
            if shape is not None:
                shape = layer.output_shape(shape)
            label = f"{key} ({type(layer).__name__}{(' ' + layer.describe()) if layer.describe() else ''})"
            rows.append((label, str(shape) if shape is not None else "?", f"{layer.num_parameters():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 4)
        text = [line] + [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows[:1]] + [line]
        text += [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows[1:]]
        text += [line, f"Total params: {self.num_parameters():,}",
                 f"Trainable params: {self.num_parameters(trainable_only=True):,}", line]
        out = "\n".join(text)
        if print_fn is not None:
            print_fn(out)
        return out

    def __repr__(self) -> str:
        inner = self.describe()
        return f"{type(self).__name__}({inner})" if inner else f"{type(self).__name__}()"


def check_features(layer: Layer, x: Tensor, expected: int, arg: str = "n_in") -> None:
    """Raise a ShapeError naming `layer` if x's last dimension is not `expected`."""
    if x.ndim < 2 or x.shape[-1] != expected:
        raise ShapeError(f"{type(layer).__name__} layer {layer.name!r}: expected input of shape (m, {expected}) "
                         f"({arg}={expected}), got {x.shape}")
