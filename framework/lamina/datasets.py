"""Built-in datasets: real data that scikit-learn ships (no download)."""
from __future__ import annotations

import numpy as np

from .data import Dataset, Split, split_indices
from .errors import LaminaError

RATIOS = (0.6, 0.2, 0.2)


def _sklearn():
    try:
        import sklearn.datasets
    except ImportError as err:
        raise LaminaError("the built-in datasets need scikit-learn: pip install scikit-learn") from err
    return sklearn.datasets


def _split(name, X, y, num_classes, seed) -> Dataset:
    train, dev, test = split_indices(len(X), RATIOS, seed)
    return Dataset(name, Split(X[train], y[train]), Split(X[dev], y[dev]), Split(X[test], y[test]), num_classes)


def digits(seed: int = 0) -> Dataset:
    """1,797 8×8 handwritten digits (UCI), the 64 pixel intensities 0..16 scaled to 0..1 (pixels/16);
    10 classes; 60/20/20. (Standardizing each pixel instead does worse here: pixels that are
    almost always blank get tiny deviations and blow up at test time.)"""
    data = _sklearn().load_digits()
    return _split("digits", data.data.astype(np.float64) / 16.0, data.target.astype(np.int64), 10, seed)


def breast_cancer(seed: int = 0) -> Dataset:
    """569 Wisconsin breast-cancer cases, 30 raw features (their scales differ by 10⁴: recipes
    normalize them); binary labels (1 = benign) as (m, 1); 60/20/20."""
    data = _sklearn().load_breast_cancer()
    return _split("breast_cancer", data.data.astype(np.float64), data.target.astype(np.float64)[:, None], 2, seed)


DATASETS = {"digits": digits, "breast_cancer": breast_cancer}
