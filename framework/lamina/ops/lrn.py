"""Local response normalization (AlexNet, §4.7): each position's channels divided by the energy of their
channel neighbours. Channels are the last axis (NHWC images, or any (…, n_C) tensor):

    b_c = a_c / (k + α/n · Σ_{c' = c − ⌊n/2⌋}^{c + ⌊(n−1)/2⌋} a_c'²)^β,        n = `size`

with channels outside [0, n_C) counting as zero: exactly torch.nn.functional.local_response_norm
(whose α is divided by n; Krizhevsky et al. 2012 write α without the 1/n). The gradient, with
d_c = k + α/n·S_c:

    ∂L/∂a_j = g_j·d_j^(−β) − (2αβ/n)·a_j · Σ_{c : j in the window of c} g_c·a_c·d_c^(−β−1)

The default is written with primitives: the window sum S = (a²)·M with M the n_C × n_C band matrix
M[c', c] = 1 where c' is in c's window (one matmul on the channel axis), then `power` and `div`.
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError, ShapeError
from .registry import COMPOSITE, Op, Sample, call, check_float


def lrn_window(size: int) -> tuple[int, int]:
    """(channels before, channels after) c in the window of channel c: (⌊n/2⌋, ⌊(n−1)/2⌋), torch's centring."""
    return size // 2, (size - 1) // 2


def window_band(n_C: int, size: int, dtype) -> np.ndarray:
    """M (n_C × n_C): M[c', c] = 1 where c − ⌊n/2⌋ ≤ c' ≤ c + ⌊(n−1)/2⌋, so (a²·M)_c is the window sum."""
    before, after = lrn_window(size)
    offset = np.arange(n_C)[:, None] - np.arange(n_C)[None, :]          # c' − c
    return ((offset >= -before) & (offset <= after)).astype(dtype)


def local_response_norm(x, *, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """b_c = a_c / (k + α/n · Σ_{c' in the window of c} a_c'²)^β over the last (channel) axis, the window
    ⌊n/2⌋ channels before c and ⌊(n−1)/2⌋ after, zero outside (torch's local_response_norm)."""
    from ..tensor import Tensor

    band = Tensor(window_band(x.shape[-1], size, x.dtype), dtype=x.dtype, backend=x.backend)
    energy = call("matmul", x * x, band)
    return x / call("power", energy * (alpha / size) + k, exponent=float(beta))


def check_hyperparameters(where: str, size, alpha, beta, k) -> None:
    """Raise OpError (prefixed with `where`: the op or the layer) unless n is a positive int, α ≥ 0, k > 0."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 1:
        raise OpError(f"{where}: 'size' (the window's channels n) must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise OpError(f"{where}: {name!r} must be a number, got {value!r}")
    if alpha < 0:
        raise OpError(f"{where}: 'alpha' must be ≥ 0 (the window energy is added), got {alpha!r}")
    if k <= 0:
        raise OpError(f"{where}: 'k' must be > 0 so the denominator (k + α/n·Σa²)^β never vanishes, got {k!r}")


def _check_lrn(x, *, size=5, alpha=1e-4, beta=0.75, k=2.0):
    check_float("local_response_norm", "x", x)
    if x.ndim < 2:
        raise ShapeError(f"local_response_norm: argument 'x' must have at least 2 dimensions (…, n_C) with "
                         f"channels last, got shape {x.shape}")
    check_hyperparameters("local_response_norm", size, alpha, beta, k)


def _lrn_samples(rng, dtype):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [Sample((r(2, 3, 3, 6),), {"size": 5, "alpha": 0.5, "beta": 0.75, "k": 2.0}),   # AlexNet's n, β, k
            Sample((r(1, 2, 3, 4),), {"size": 2, "alpha": 1.0, "beta": 0.5, "k": 1.0}),    # even n: off centre
            Sample((r(3, 5),), {"size": 7, "alpha": 2.0, "beta": 1.5, "k": 0.5}),          # window > n_C
            Sample((r(2, 2, 2, 3),), {"size": 1, "alpha": 0.3, "beta": 0.75, "k": 1.0})]


LRN_OPS = [
    Op("local_response_norm", COMPOSITE, _lrn_samples, _check_lrn, default=local_response_norm,
       doc=local_response_norm.__doc__),
]
