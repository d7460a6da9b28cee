"""Built-in datasets: real data that scikit-learn ships (no download)."""
from __future__ import annotations

import numpy as np

from .data import Dataset, Split, split_indices
from .errors import ConfigError, LaminaError

RATIOS = "60/20/20"


def _sklearn():
    try:
        import sklearn.datasets
    except ImportError as err:
        raise LaminaError("the built-in datasets need scikit-learn: pip install scikit-learn") from err
    return sklearn.datasets


def _split(name, X, y, num_classes, seed, split) -> Dataset:
    """Shuffle and cut into train/dev/test by `split` ratios, e.g. "60/20/20" or "98/1/1" (§2.1);
    two ratios ("70/30") give train/dev and no test set, as does a zero third ratio."""
    parts = split_indices(len(X), split, seed)
    if len(parts) not in (2, 3):
        raise ConfigError(f"dataset {name!r}: split {split!r} must have two (train/dev) or three "
                          f"(train/dev/test) ratios, got {len(parts)}")
    train, dev, test = (list(parts) + [None])[:3]
    if len(train) == 0 or len(dev) == 0:
        raise ConfigError(f"dataset {name!r}: split {split!r} leaves the train or dev set empty")

    def subset(idx):
        return Split(X[idx], y[idx]) if idx is not None and len(idx) else None

    return Dataset(name, subset(train), subset(dev), subset(test), num_classes)


DIGITS_SIZE = 8


def digits(seed: int = 0, split: str = RATIOS, images: bool = False, size: int = DIGITS_SIZE) -> Dataset:
    """1,797 8×8 handwritten digits (UCI), the 64 pixel intensities 0..16 scaled to 0..1 (pixels/16);
    10 classes; train/dev/test by `split` (60/20/20). With `images`, each example is an 8×8×1
    NHWC image instead of 64 features (for convolutional networks). (Standardizing each pixel instead does worse here: pixels that are
    almost always blank get tiny deviations and blow up at test time.)

    `size` (a multiple of 8) enlarges each image to size × size by exact nearest-neighbour
    upsampling, x[i, j] = x8[⌊i·8/size⌋, ⌊j·8/size⌋]: every pixel becomes a (size/8) × (size/8)
    block of the same value, no interpolation (size=32 gives LeNet-5's 32×32 input)."""
    size = int(size)
    if size <= 0 or size % DIGITS_SIZE:
        raise ConfigError(f"dataset 'digits': size must be a positive multiple of {DIGITS_SIZE} (the images are "
                          f"upsampled by whole pixels), got {size}")
    data = _sklearn().load_digits()
    X = data.data.astype(np.float64).reshape(-1, DIGITS_SIZE, DIGITS_SIZE) / 16.0
    scale = size // DIGITS_SIZE
    X = X.repeat(scale, axis=1).repeat(scale, axis=2)
    X = X[..., None] if images else X.reshape(len(X), -1)
    return _split("digits", X, data.target.astype(np.int64), 10, seed, split)


def breast_cancer(seed: int = 0, split: str = RATIOS) -> Dataset:
    """569 Wisconsin breast-cancer cases, 30 raw features (their scales differ by 10⁴: recipes
    normalize them); binary labels (1 = benign) as (m, 1); train/dev/test by `split` (60/20/20)."""
    data = _sklearn().load_breast_cancer()
    return _split("breast_cancer", data.data.astype(np.float64), data.target.astype(np.float64)[:, None], 2, seed,
                  split)


DATASETS = {"digits": digits, "breast_cancer": breast_cancer}
