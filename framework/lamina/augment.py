"""Data augmentation (§4.12): random transforms of NumPy NHWC float batches, applied on the host
while the network trains (see `lamina.data.DataLoader`, which runs them in background threads).

Each transform is called as `transform(X, rng)` with a batch X (m, n_H, n_W, n_C) and a
`numpy.random.Generator`; it returns a new batch (the input is never changed) and draws its
randomness only from `rng`, so the same seed gives the same batch. Every example of a batch gets
its own random draw. Transforms compose with `Compose([...])` and are registered by name (kind
"augmentations"), so a recipe can say

    [data]
    augment = [{type = "random_mirror"}, {type = "random_crop", size = 8, padding = 1}]

The geometric transforms (rotation, shear, local warping) share one bilinear resampler,
`bilinear_sample`; pixels that come from outside the image take the value `fill` (0 by default).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Sequence

import numpy as np

from .errors import ConfigError, LaminaError, ShapeError


class AugmentationError(LaminaError, ValueError):
    """An augmentation was given an argument it cannot accept."""


def _images(name: str, X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 4 or X.dtype.kind != "f":
        raise ShapeError(f"{name}: expected a float NHWC batch of shape (m, n_H, n_W, n_C), got an array of "
                         f"shape {X.shape} and dtype {X.dtype}")
    return X


def _generator(name: str, rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise AugmentationError(f"{name}: rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                                f"got {type(rng).__name__}")
    return rng


def _number(name: str, arg: str, value, low: float = 0.0, high: float = math.inf, *, low_open: bool = False,
            high_open: bool = False) -> float:
    """`value` as a float in the interval from low to high (closed unless told open), else an error."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
        math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise AugmentationError(f"{name}: {arg} must be a number in {interval}, got {value!r}")
    return float(value)


def _range(name: str, arg: str, value, limit: float = math.inf) -> tuple[float, float]:
    """A sampling range: d gives (-d, d); a pair (low, high) is taken as is; |bounds| < limit."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise AugmentationError(f"{name}: {arg} must be a number d (for the range -d..d) or a pair "
                                    f"(low, high), got {value!r}")
        low, high = (_number(name, arg, v, -limit, limit, low_open=True, high_open=True) for v in value)
        if low > high:
            raise AugmentationError(f"{name}: {arg} must be a pair (low, high) with low <= high, got {value!r}")
        return low, high
    d = _number(name, arg, value, 0.0, limit, high_open=True)
    return -d, d


def _size(name: str, arg: str, value) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                 for v in pair):
        raise AugmentationError(f"{name}: {arg} must be a positive integer or a pair (h, w) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


# ---- the shared resampler ------------------------------------------------------------------
def bilinear_sample(X: np.ndarray, rows, cols, fill: float = 0.0) -> np.ndarray:
    """out[k, i, j, c] = Σ_{r, s} max(0, 1 − |rows[k,i,j] − r|)·max(0, 1 − |cols[k,i,j] − s|)·X[k, r, s, c]:
    bilinear interpolation of each image X[k] (m, n_H, n_W, n_C) at the fractional pixel
    coordinates (rows, cols), each of shape (m, H_out, W_out) or broadcastable to it, with
    X = `fill` outside the image (scipy's map_coordinates(order=1, mode="grid-constant"))."""
    X = _images("bilinear_sample", X)
    m, n_H, n_W, _ = X.shape
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    try:
        rows, cols = np.broadcast_arrays(rows, cols)
        rows, cols = (np.broadcast_to(a, (m,) + a.shape[-2:]) for a in (rows, cols))
    except ValueError:
        raise ShapeError(f"bilinear_sample: rows and cols must have shape (m, H_out, W_out) = ({m}, ...) or "
                         f"broadcast to it, got {np.shape(rows)} and {np.shape(cols)}") from None
    # One ring of `fill` around each image makes every neighbour of a point within a pixel of the
    # image a real read; points farther out are clamped onto the ring, where all four neighbours are fill.
    padded = np.pad(X, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
    r0, wr = _cell(rows + 1.0, n_H + 1)
    c0, wc = _cell(cols + 1.0, n_W + 1)
    stride = n_W + 2
    index = (np.arange(m)[:, None, None] * (n_H + 2) + r0) * stride + c0
    flat = padded.reshape(-1, X.shape[-1])
    wr, wc = wr.astype(X.dtype)[..., None], wc.astype(X.dtype)[..., None]
    top = np.take(flat, index, axis=0) * (1 - wc) + np.take(flat, index + 1, axis=0) * wc
    bottom = np.take(flat, index + stride, axis=0) * (1 - wc) + np.take(flat, index + stride + 1, axis=0) * wc
    return top * (1 - wr) + bottom * wr


def _cell(coordinate: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
    """(i0, w): the interpolation cell [i0, i0 + 1] of each coordinate clamped to [0, last] (i0 <= last − 1)
    and the weight w of i0 + 1."""
    clamped = np.clip(coordinate, 0.0, float(last))
    i0 = np.minimum(np.floor(clamped), last - 1).astype(np.intp)
    return i0, clamped - i0


def _centre_grid(n_H: int, n_W: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(dy, dx, c_r, c_c): each output pixel's offset (rows down, columns right) from the image centre."""
    c_r, c_c = (n_H - 1) / 2.0, (n_W - 1) / 2.0
    dy, dx = np.meshgrid(np.arange(n_H) - c_r, np.arange(n_W) - c_c, indexing="ij")
    return dy, dx, c_r, c_c


def _affine(X: np.ndarray, A: np.ndarray, fill: float) -> np.ndarray:
    """Resample each image k at source offsets A[k]·(dy, dx) from the centre, for every output offset (dy, dx)."""
    dy, dx, c_r, c_c = _centre_grid(*X.shape[1:3])
    A = A[:, :, :, None, None]
    rows = c_r + A[:, 0, 0] * dy + A[:, 0, 1] * dx
    cols = c_c + A[:, 1, 0] * dy + A[:, 1, 1] * dx
    return bilinear_sample(X, rows, cols, fill)


def gaussian_smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """G_σ * field over the last two axes: a separable normalized Gaussian of standard deviation σ
    (pixels), truncated at 4σ, with the borders mirrored (scipy's gaussian_filter, mode="reflect"),
    applied as G_H · field · G_Wᵀ with each G the filter along one axis as a matrix."""
    field = np.asarray(field, dtype=np.float64)
    n_H, n_W = field.shape[-2:]
    return _gaussian_matrix(n_H, sigma) @ field @ _gaussian_matrix(n_W, sigma).T


def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """G (n, n) with (G·v)_i = Σ_t w_t v_reflect(i + t), w_t ∝ exp(−t²/2σ²) for |t| <= round(4σ);
    reflect mirrors about the half-pixel borders (… v1 v0 | v0 v1 … v_{n−1} | v_{n−1} v_{n−2} …)."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    source = (np.arange(n)[:, None] + taps) % (2 * n)
    source = np.where(source >= n, 2 * n - 1 - source, source)
    G = np.zeros((n, n))
    np.add.at(G, (np.repeat(np.arange(n), len(taps)), source.ravel()), np.tile(weights, n))
    return G


# ---- transforms ------------------------------------------------------------------------------
class Augmentation(ABC):
    """A random transform of NHWC float batches: `transform(X, rng)` returns a new batch."""

    #: the registered name
    name: ClassVar[str]

    @property
    def fitted(self) -> bool:
        """Whether the transform is ready; those that learn from data (PCAColor) need `fit(X_train)`."""
        return True

    def fit(self, X) -> "Augmentation":
        return self

    def __call__(self, X, rng: np.random.Generator) -> np.ndarray:
        return self.apply(_images(self.name, X), _generator(self.name, rng))

    @abstractmethod
    def apply(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The transform of a checked batch."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class RandomMirror(Augmentation):
    """Horizontal flip with probability p: out[k, i, j] = X[k, i, n_W − 1 − j] for the flipped examples."""

    name = "random_mirror"

    def __init__(self, p: float = 0.5):
        self.p = _number(self.name, "p", p, 0.0, 1.0)

    def apply(self, X, rng):
        flip = rng.random(len(X)) < self.p
        return np.where(flip[:, None, None, None], X[:, :, ::-1], X)


class RandomCrop(Augmentation):
    """A random size = (h, w) window of each image zero-padded by `padding` on every side:
    out[k, i, j] = X_pad[k, top_k + i, left_k + j] with top_k ~ U{0..n_H + 2p − h}, left_k ~ U{0..n_W + 2p − w}."""

    name = "random_crop"

    def __init__(self, size, padding: int = 0, fill: float = 0.0):
        self.size = _size(self.name, "size", size)
        if not isinstance(padding, (int, np.integer)) or isinstance(padding, bool) or padding < 0:
            raise AugmentationError(f"{self.name}: padding must be a non-negative integer, got {padding!r}")
        self.padding = int(padding)
        self.fill = _number(self.name, "fill", fill, -math.inf)

    def apply(self, X, rng):
        m, n_H, n_W, _ = X.shape
        (h, w), p = self.size, self.padding
        if h > n_H + 2 * p or w > n_W + 2 * p:
            raise ShapeError(f"{self.name}: size {h}x{w} is larger than the {n_H}x{n_W} images padded by {p}")
        padded = np.pad(X, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=self.fill)
        top = rng.integers(0, n_H + 2 * p - h, size=m, endpoint=True)
        left = rng.integers(0, n_W + 2 * p - w, size=m, endpoint=True)
        rows = np.arange(m)[:, None, None] * (n_H + 2 * p) + top[:, None, None] + np.arange(h)[None, :, None]
        index = rows * (n_W + 2 * p) + left[:, None, None] + np.arange(w)[None, None, :]
        return np.take(padded.reshape(-1, X.shape[-1]), index, axis=0)


class RandomRotation(Augmentation):
    """Rotation about the image centre by θ ~ U(−degrees, degrees) (or U(low, high) for a pair),
    counter-clockwise as displayed: out(dy, dx) = X(cos θ·dy + sin θ·dx, −sin θ·dy + cos θ·dx)
    for offsets (rows down, columns right) from the centre, interpolated bilinearly."""

    name = "random_rotation"

    def __init__(self, degrees, fill: float = 0.0):
        self.degrees = _range(self.name, "degrees", degrees, limit=360.0 + 1e-9)
        self.fill = _number(self.name, "fill", fill, -math.inf)

    def apply(self, X, rng):
        theta = np.deg2rad(rng.uniform(*self.degrees, size=len(X)))
        cos, sin = np.cos(theta), np.sin(theta)
        return _affine(X, np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1), self.fill)


class RandomShear(Augmentation):
    """Horizontal shear by an angle φ ~ U(−shear, shear) degrees (or U(low, high)): the point at
    offset (dy, dx) from the centre moves to (dy, dx + tan φ·dy), so out(dy, dx) = X(dy, dx − tan φ·dy)."""

    name = "random_shear"

    def __init__(self, shear, fill: float = 0.0):
        self.shear = _range(self.name, "shear", shear, limit=90.0)
        self.fill = _number(self.name, "fill", fill, -math.inf)

    def apply(self, X, rng):
        t = np.tan(np.deg2rad(rng.uniform(*self.shear, size=len(X))))
        one, zero = np.ones_like(t), np.zeros_like(t)
        return _affine(X, np.stack([np.stack([one, zero], -1), np.stack([-t, one], -1)], 1), self.fill)


class LocalWarp(Augmentation):
    """Elastic local warping (Simard et al. 2003): a smooth random displacement field
    Δ = α·(G_σ * U(−1, 1)) per pixel and axis, out(i, j) = X(i + Δ_r(i, j), j + Δ_c(i, j)), bilinearly."""

    name = "local_warp"

    def __init__(self, alpha: float, sigma: float, fill: float = 0.0):
        self.alpha = _number(self.name, "alpha", alpha)
        self.sigma = _number(self.name, "sigma", sigma, low_open=True)
        self.fill = _number(self.name, "fill", fill, -math.inf)

    def displacement(self, m: int, n_H: int, n_W: int, rng: np.random.Generator) -> np.ndarray:
        """Δ of shape (m, 2, n_H, n_W): row then column displacements, in pixels."""
        return self.alpha * gaussian_smooth(rng.uniform(-1.0, 1.0, size=(m, 2, n_H, n_W)), self.sigma)

    def apply(self, X, rng):
        m, n_H, n_W, _ = X.shape
        delta = self.displacement(m, n_H, n_W, rng)
        i, j = np.meshgrid(np.arange(n_H), np.arange(n_W), indexing="ij")
        return bilinear_sample(X, i + delta[:, 0], j + delta[:, 1], self.fill)


class ColorShift(Augmentation):
    """Colour shifting (§4.12): out[k, :, :, c] = X[k, :, :, c] + δ_kc with δ_kc ~ U(−max_shift_c, max_shift_c),
    one offset per example and channel (max_shift a number, or one per channel)."""

    name = "color_shift"

    def __init__(self, max_shift):
        values = max_shift if isinstance(max_shift, (list, tuple)) else [max_shift]
        if not values:
            raise AugmentationError(f"{self.name}: max_shift must be a number or one number per channel, got []")
        self.max_shift = [_number(self.name, "max_shift", v) for v in values]

    def apply(self, X, rng):
        m, n_C = len(X), X.shape[-1]
        if len(self.max_shift) not in (1, n_C):
            raise ShapeError(f"{self.name}: max_shift has {len(self.max_shift)} values but the images have "
                             f"{n_C} channels")
        bound = np.asarray(self.max_shift, dtype=np.float64)
        delta = rng.uniform(-1.0, 1.0, size=(m, n_C)) * bound
        return (X + delta[:, None, None, :]).astype(X.dtype, copy=False)


class PCAColor(Augmentation):
    """AlexNet's PCA colour augmentation: with λ_i, p_i the eigenvalues and eigenvectors of the
    training set's RGB (channel) covariance, each image gets δ = Σ_i α_i λ_i p_i added to every
    pixel, α_i ~ N(0, std) drawn per image. Fit it on the training images first (`fit(X_train)`),
    or give `eigenvalues` and `eigenvectors` (columns) directly."""

    name = "pca_color"

    def __init__(self, std: float = 0.1, eigenvalues=None, eigenvectors=None):
        self.std = _number(self.name, "std", std)
        self.eigenvalues = self.eigenvectors = None
        if (eigenvalues is None) != (eigenvectors is None):
            raise AugmentationError(f"{self.name}: give both eigenvalues and eigenvectors, or neither (and fit)")
        if eigenvalues is not None:
            lam, P = np.asarray(eigenvalues, dtype=np.float64), np.asarray(eigenvectors, dtype=np.float64)
            if lam.ndim != 1 or P.shape != (len(lam), len(lam)):
                raise AugmentationError(f"{self.name}: expected eigenvalues (n_C,) and eigenvectors (n_C, n_C), "
                                        f"got shapes {lam.shape} and {P.shape}")
            self.eigenvalues, self.eigenvectors = lam, P

    @property
    def fitted(self) -> bool:
        return self.eigenvalues is not None

    def fit(self, X) -> "PCAColor":
        """λ, p from the covariance of all pixels of the training images X (m, n_H, n_W, n_C), largest λ first."""
        X = _images(self.name, X)
        pixels = X.reshape(-1, X.shape[-1]).astype(np.float64)
        if len(pixels) < 2:
            raise ShapeError(f"{self.name}: fit needs at least 2 pixels, got {len(pixels)}")
        centred = pixels - pixels.mean(axis=0)
        cov = centred.T @ centred / (len(pixels) - 1)
        lam, P = np.linalg.eigh(cov)
        order = np.argsort(lam)[::-1]
        self.eigenvalues, self.eigenvectors = np.clip(lam[order], 0.0, None), P[:, order]
        return self

    def apply(self, X, rng):
        if not self.fitted:
            raise LaminaError(f"{self.name}: not fitted; call fit(X_train) on the training images first")
        n_C = X.shape[-1]
        if n_C != len(self.eigenvalues):
            raise ShapeError(f"{self.name}: fitted on {len(self.eigenvalues)} channels but the images have {n_C}")
        alpha = rng.normal(0.0, self.std, size=(len(X), n_C))
        delta = (alpha * self.eigenvalues) @ self.eigenvectors.T
        return (X + delta[:, None, None, :]).astype(X.dtype, copy=False)


class Compose(Augmentation):
    """Transforms applied in order, all drawing from the same generator: out = t_n(… t_1(X))."""

    name = "compose"

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise AugmentationError(f"compose: transform {i} must be callable as t(X, rng), got {t!r}")

    @property
    def fitted(self) -> bool:
        return all(getattr(t, "fitted", True) for t in self.transforms)

    def fit(self, X) -> "Compose":
        """Fit each transform that needs it on X (as it stands before that transform)."""
        for t in self.transforms:
            if not getattr(t, "fitted", True):
                t.fit(X)
        return self

    def apply(self, X, rng):
        for t in self.transforms:
            X = t(X, rng)
        return X

    def __len__(self) -> int:
        return len(self.transforms)


AUGMENTATIONS = (RandomMirror, RandomCrop, RandomRotation, RandomShear, LocalWarp, ColorShift, PCAColor)


def from_config(specs, where: str = "[data] augment") -> Compose:
    """A `Compose` from config tables such as [{type = "random_mirror"}, {type = "random_crop", size = 8}],
    each naming a registered augmentation and its options."""
    from .registry import get, names

    if not isinstance(specs, list):
        raise ConfigError(f"{where}: expected a list of tables each with a 'type', got {specs!r}")
    transforms = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ConfigError(f"{where}: entry {i} must be a table with a 'type' (one of "
                              f"{', '.join(names('augmentations'))}), got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "type"}
        factory = get("augmentations", spec["type"])
        try:
            transforms.append(factory(**options))
        except (TypeError, AugmentationError) as err:
            raise ConfigError(f"{where}: entry {i}: cannot build augmentation {spec['type']!r} with {options}: "
                              f"{err}") from err
    return Compose(transforms)
