"""Tips for benchmarks (§4.14): multi-crop evaluation (run the classifier on several crops of each
test image and average the predicted probabilities) and ensembling (average the probabilities of
several independently trained networks). Both cost several forward passes per example, which is
why they win benchmarks more often than they ship in production.

    probs = multi_crop_predict(model, X_test, crop_size=24, crops="10-crop")
    probs = ensemble_predict([model_a, model_b, model_c], X_test)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import LaminaError, ShapeError

CROPS = ("center", "5-crop", "10-crop")
OUTPUTS = ("logits", "probabilities")


def _crop_size(crop_size, n_H: int, n_W: int) -> tuple[int, int]:
    h, w = tuple(crop_size) if isinstance(crop_size, (list, tuple)) else (crop_size, crop_size)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise LaminaError(f"multi_crop: crop_size must be a positive integer or a pair (h, w) of them, "
                          f"got {crop_size!r}")
    if h > n_H or w > n_W:
        raise ShapeError(f"multi_crop: crop_size {h}x{w} is larger than the {n_H}x{n_W} images")
    return int(h), int(w)


def crop_views(X, crop_size, crops: str = "10-crop") -> list[np.ndarray]:
    """The crops of every image of X (m, n_H, n_W, n_C) that multi-crop evaluation averages over:
    "center" the centred h×w window; "5-crop" the four corner windows and the centre; "10-crop"
    those five and their horizontal mirrors. Each view has shape (m, h, w, n_C)."""
    X = np.asarray(X)
    if X.ndim != 4:
        raise ShapeError(f"multi_crop: expected NHWC images (m, n_H, n_W, n_C), got shape {X.shape}")
    if crops not in CROPS:
        raise LaminaError(f"multi_crop: crops must be one of {', '.join(map(repr, CROPS))}, got {crops!r}")
    n_H, n_W = X.shape[1:3]
    h, w = _crop_size(crop_size, n_H, n_W)
    top, left = (n_H - h) // 2, (n_W - w) // 2
    corners = [(top, left)] if crops == "center" else \
        [(0, 0), (0, n_W - w), (n_H - h, 0), (n_H - h, n_W - w), (top, left)]
    views = [X[:, r:r + h, c:c + w] for r, c in corners]
    if crops == "10-crop":
        views += [v[:, :, ::-1] for v in views]
    return views


def _probabilities(model, X, outputs: str, batch_size: int) -> np.ndarray:
    from . import functional as F
    from .autograd import no_grad
    from .tensor import tensor
    from .training import predict

    if outputs not in OUTPUTS:
        raise LaminaError(f"ensemble: outputs must be one of {', '.join(map(repr, OUTPUTS))}, got {outputs!r}")
    out = predict(model, X, batch_size)
    if out.ndim != 2:
        raise ShapeError(f"ensemble: model {getattr(model, 'name', model)!r} must output (m, K) class scores, "
                         f"got shape {out.shape}")
    if outputs == "probabilities":
        return out.astype(np.float64)
    with no_grad():
        return F.softmax(tensor(out.astype(np.float64)), axis=-1).numpy()


def multi_crop_predict(model, X, crop_size, crops: str = "10-crop", outputs: str = "logits",
                       batch_size: int = 1024) -> np.ndarray:
    """p(y | x) = (1/V)·Σ_v softmax(model(crop_v(x))) over the V views of `crop_views`
    (V = 1, 5 or 10); shape (m, K). `outputs="probabilities"` for a model that ends in a softmax."""
    views = crop_views(X, crop_size, crops)
    return sum(_probabilities(model, np.ascontiguousarray(v), outputs, batch_size) for v in views) / len(views)


def ensemble_predict(models: Sequence, X, outputs: str = "logits", batch_size: int = 1024, crop_size=None,
                     crops: str = "10-crop") -> np.ndarray:
    """p(y | x) = (1/N)·Σ_n softmax(model_n(x)) over N independently trained models; shape (m, K).
    With `crop_size`, each model's probabilities are multi-crop averages (`multi_crop_predict`)."""
    models = list(models)
    if not models:
        raise LaminaError("ensemble_predict: models must hold at least one model, got none")
    averaged = []
    for model in models:
        p = _probabilities(model, X, outputs, batch_size) if crop_size is None else \
            multi_crop_predict(model, X, crop_size, crops, outputs, batch_size)
        if averaged and p.shape != averaged[0].shape:
            raise ShapeError(f"ensemble_predict: model {getattr(model, 'name', model)!r} gives shape {p.shape}, "
                             f"the first model {averaged[0].shape}; all models must predict the same classes")
        averaged.append(p)
    return sum(averaged) / len(averaged)
