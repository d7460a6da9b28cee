"""Weight initializers (§1.4, §2.8): each draws an array of `shape` for a layer with
`fan_in` inputs (n^[l-1]) and `fan_out` outputs (n^[l])."""
from __future__ import annotations

import math

from .dtypes import get_default_dtype


class Initializer:
    name = ""

    def __call__(self, shape, fan_in: int, fan_out: int, backend, dtype=None):
        raise TypeError(f"{type(self).__name__} must define __call__")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Zeros(Initializer):
    """All zeros. Fine for biases; for weights it is the *symmetry trap* (§1.4): every unit of a
    layer computes the same function and receives the same gradient, so they never differ."""

    name = "zeros"

    def __call__(self, shape, fan_in, fan_out, backend, dtype=None):
        return backend.zeros(shape, dtype or get_default_dtype())


class _Gaussian(Initializer):
    def scale(self, fan_in: int, fan_out: int) -> float:
        raise TypeError

    def __call__(self, shape, fan_in, fan_out, backend, dtype=None):
        return backend.random_normal(shape, dtype or get_default_dtype(), scale=self.scale(fan_in, fan_out))


class SmallRandom(_Gaussian):
    """W = randn·0.01: small values keep sigmoid/tanh out of their flat tails at the start."""

    name = "small_random"

    def scale(self, fan_in, fan_out):
        return 0.01


class Xavier(_Gaussian):
    """W = randn·√(1/n^[l-1]) (for tanh)."""

    name = "xavier"

    def scale(self, fan_in, fan_out):
        return math.sqrt(1.0 / fan_in)


class Glorot(_Gaussian):
    """W = randn·√(2/(n^[l-1] + n^[l])) (Xavier's averaged-fan variant)."""

    name = "glorot"

    def scale(self, fan_in, fan_out):
        return math.sqrt(2.0 / (fan_in + fan_out))


class He(_Gaussian):
    """W = randn·√(2/n^[l-1]) (for ReLU)."""

    name = "he"

    def scale(self, fan_in, fan_out):
        return math.sqrt(2.0 / fan_in)


INITIALIZERS = [Zeros, SmallRandom, Xavier, Glorot, He]


def default_for(activation) -> str:
    """He for the ReLU family, Xavier otherwise (§2.8)."""
    return "he" if activation in ("relu", "leaky_relu") else "xavier"
