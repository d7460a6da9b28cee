"""Dense, activation and container layers (§1.2–1.4)."""
from __future__ import annotations

from .. import functional as F
from .. import init as initializers
from ..backend import get_backend
from ..dtypes import get_default_dtype
from ..errors import ShapeError
from ..registry import resolve
from ..tensor import Parameter
from .layer import Layer, _snake, check_features


class Dense(Layer):
    """A fully connected layer: A = g(X·W + b) with W (n_in, n_out) and b (n_out,).

    `activation` is None, a registered name ("relu", "sigmoid", ...) or a callable; `init`
    is a registered initializer name or object ("auto": He for ReLU-family, else Xavier).
    """

    weight_names = ("W",)

    def __init__(self, n_in: int, n_out: int, activation=None, init="auto", use_bias: bool = True,
                 name: str | None = None):
        super().__init__(name)
        if int(n_in) <= 0 or int(n_out) <= 0:
            raise ShapeError(f"Dense layer {self.name!r}: n_in and n_out must be positive, got {n_in} and {n_out}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation_name, self.activation, self.init = activation_and_init(activation, init)
        backend, dtype = get_backend(), get_default_dtype()
        self.W = _parameter(self.init((self.n_in, self.n_out), self.n_in, self.n_out, backend, dtype), backend)
        self.b = _parameter(backend.zeros((self.n_out,), dtype), backend) if use_bias else None

    def forward(self, x):
        check_features(self, x, self.n_in)
        z = F.dense(x, self.W, self.b)
        return self.activation(z) if self.activation is not None else z

    def output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.n_out,)

    def describe(self) -> str:
        act = f", activation={self.activation_name!r}" if self.activation_name else ""
        return f"{self.n_in} -> {self.n_out}{act}"


def activation_and_init(activation, init):
    """(activation name, activation function or None, initializer object) of a weighted layer: `activation`
    is None, a registered name or a callable; `init` a registered initializer name or object ("auto": He
    for the ReLU family, else Xavier)."""
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", None)
    fn = resolve("activations", activation) if activation is not None else None
    initializer = resolve("initializers", initializers.default_for(name) if init == "auto" else init)
    return name, fn, initializer() if isinstance(initializer, type) else initializer


def _parameter(array, backend) -> Parameter:
    return Parameter._wrap(array, backend, requires_grad=True)


class Activation(Layer):
    """A layer applying a registered activation function by name, e.g. Activation("tanh")."""

    def __init__(self, activation: str, name: str | None = None, **kwargs):
        super().__init__(name or activation)
        self.activation_name = activation
        self.fn = resolve("activations", activation)
        self.kwargs = kwargs

    def forward(self, x):
        return self.fn(x, **self.kwargs)

    def describe(self) -> str:
        return repr(self.activation_name)


class ReLU(Activation):
    def __init__(self, name=None):
        super().__init__("relu", name)


class Sigmoid(Activation):
    def __init__(self, name=None):
        super().__init__("sigmoid", name)


class Tanh(Activation):
    def __init__(self, name=None):
        super().__init__("tanh", name)


class LeakyReLU(Activation):
    def __init__(self, alpha: float = 0.01, name=None):
        super().__init__("leaky_relu", name, alpha=alpha)


class Softmax(Activation):
    def __init__(self, axis: int = -1, name=None):
        super().__init__("softmax", name, axis=axis)


class Sequential(Layer):
    """Layers applied one after another; parameters are named "<index>.<param>" ("0.W")."""

    def __init__(self, *layers: Layer, name: str | None = None):
        super().__init__(name)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Layer")
            self.append(layer)

    def __getitem__(self, i) -> Layer:
        return list(self._layers.values())[i]

    def __len__(self) -> int:
        return len(self._layers)

    def append(self, layer: Layer) -> "Sequential":
        index = len(self._layers)
        if layer.name == _snake(type(layer).__name__) or layer.name == getattr(layer, "activation_name", None):
            layer.name = f"{layer.name}_{index}"
        setattr(self, str(index), layer)
        return self

    def forward(self, x):
        for layer in self._layers.values():
            x = layer(x)
        return x

    def output_shape(self, input_shape):
        for layer in self._layers.values():
            input_shape = layer.output_shape(input_shape)
        return input_shape


LAYERS = {"dense": Dense, "activation": Activation, "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh,
          "leaky_relu": LeakyReLU, "softmax": Softmax, "sequential": Sequential}
