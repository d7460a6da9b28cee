"""Inverted dropout (§2.4): units switched off at random while training, scaled so that the
expected activation stays the same; the identity at test time."""
from __future__ import annotations

from ..errors import LaminaError
from ..gradcheck import mark_stochastic
from ..ops import call
from ..tensor import Tensor
from .layer import Layer


class Dropout(Layer):
    """a ← a·d/keep_prob with d = [U < keep_prob], U ~ uniform[0, 1) drawn per element from the
    backend's seeded generator (`lamina.manual_seed`), a new mask on every call in training mode;
    the same mask scales the gradient. In eval mode, or with keep_prob = 1, the input passes
    unchanged. A different keep_prob per layer is simply several Dropout layers.

    PyTorch's `nn.Dropout(p)` is the same with p = 1 - keep_prob. An active dropout makes the
    cost random, so `lamina.gradcheck` refuses to run through one (§2.10).
    """

    def __init__(self, keep_prob: float = 0.5, name: str | None = None):
        super().__init__(name)
        if not 0.0 < keep_prob <= 1.0:
            raise LaminaError(f"Dropout layer {self.name!r}: keep_prob (the probability of keeping a unit) must "
                              f"lie in (0, 1], got {keep_prob}")
        self.keep_prob = float(keep_prob)

    def forward(self, x):
        if not self.training or self.keep_prob == 1.0:
            return x
        mark_stochastic(f"Dropout layer {self.name!r} is active (training mode, keep_prob={self.keep_prob}); "
                        f"call model.eval() or use keep_prob=1 while checking gradients")
        backend = x.backend
        uniform = Tensor._wrap(backend.random_uniform(x.shape, x.dtype), backend)
        keep = call("greater", Tensor._wrap(backend.full((), self.keep_prob, x.dtype), backend), uniform)
        return x * (keep * (1.0 / self.keep_prob))

    def describe(self) -> str:
        return f"keep_prob={self.keep_prob}"
