"""Local response normalization as a layer (AlexNet, §4.7): normalizes each position across channels."""
from __future__ import annotations

from .. import functional as F
from ..errors import ShapeError
from ..ops.lrn import check_hyperparameters
from .layer import Layer


class LocalResponseNorm(Layer):
    """b_c = a_c / (k + α/n · Σ_{c' in the window of c} a_c'²)^β over the channels (last axis) of each
    position, the window n = `size` channels centred on c (⌊n/2⌋ before, ⌊(n−1)/2⌋ after, zero outside).

    torch.nn.LocalResponseNorm's definition (α is divided by n). The defaults are AlexNet's (n = 5,
    α = 1e-4, β = 0.75, k = 2; Krizhevsky et al. write α = 1e-4 without the 1/n, so their layer is
    this one with alpha=5e-4); torch's default k is 1. No parameters.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 name: str | None = None):
        super().__init__(name)
        check_hyperparameters(f"LocalResponseNorm layer {self.name!r}", size, alpha, beta, k)
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def forward(self, x):
        if x.ndim < 2:
            raise ShapeError(f"LocalResponseNorm layer {self.name!r}: expected an input (…, n_C) with channels "
                             f"last, such as NHWC images, got shape {x.shape}")
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def describe(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g}, beta={self.beta:g}, k={self.k:g}"
