"""Batch normalization as a layer (§2.19), for dense (m, n) and NHWC (m, h, w, c) inputs."""
from __future__ import annotations

from ..backend import get_backend
from ..dtypes import get_default_dtype
from ..errors import LaminaError, ShapeError
from ..ops import call
from ..tensor import Parameter
from .layer import Layer


class BatchNorm(Layer):
    """Normalizes each feature (the last axis, or `axis`) over every other axis: the batch, and
    for NHWC images also the positions. In training mode, with μ and σ² of the batch:

        z_norm = (z - μ)/√(σ² + ε),   out = γ·z_norm + β,

    and the running averages used in eval mode follow each batch by exponentially weighted
    averages, running = momentum·running + (1 - momentum)·batch, where `momentum` is the β of
    §2.19's averages (0.9 averages over about 10 batches). PyTorch's `momentum` is the weight of
    the new batch, so Lamina's momentum=β is PyTorch's momentum=1-β: the defaults (0.9 here, 0.1
    there) agree. As PyTorch, the running σ² averages the unbiased batch variance σ²·N/(N-1)
    (N values per feature) while normalization uses the biased one.

    `n_in` is the number of features (PyTorch's num_features; a recipe fills it in from the
    previous layer). Parameters: `gamma` (ones) and `beta` (zeros), trained; `running_mean`
    (zeros) and `running_var` (ones), listed in `non_trainable_names`: saved in the state and
    checkpoints, never trained. The preceding layer needs no bias (β takes its place): build it
    with `use_bias=False`.
    """

    non_trainable_names = ("running_mean", "running_var")
    #: model builders drop the preceding layer's bias (Recipe.build_model gives it use_bias=False)
    absorbs_bias = True

    def __init__(self, n_in: int, axis: int = -1, momentum: float = 0.9, epsilon: float = 1e-5,
                 name: str | None = None):
        super().__init__(name)
        if int(n_in) <= 0:
            raise ShapeError(f"BatchNorm layer {self.name!r}: n_in (the number of features) must be positive, "
                             f"got {n_in}")
        if not 0.0 <= momentum <= 1.0:
            raise LaminaError(f"BatchNorm layer {self.name!r}: momentum (β of the running averages) must lie in "
                              f"[0, 1], got {momentum}")
        if not epsilon > 0:
            raise LaminaError(f"BatchNorm layer {self.name!r}: epsilon must be positive, got {epsilon}")
        self.num_features, self.axis = int(n_in), int(axis)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        backend, dtype, shape = get_backend(), get_default_dtype(), (self.num_features,)
        self.gamma = Parameter._wrap(backend.full(shape, 1.0, dtype), backend, requires_grad=True)
        self.beta = Parameter._wrap(backend.zeros(shape, dtype), backend, requires_grad=True)
        self.running_mean = Parameter._wrap(backend.zeros(shape, dtype), backend, requires_grad=False)
        self.running_var = Parameter._wrap(backend.full(shape, 1.0, dtype), backend, requires_grad=False)

    def forward(self, x):
        if x.ndim < 2 or not -x.ndim <= self.axis < x.ndim or x.shape[self.axis] != self.num_features:
            raise ShapeError(f"BatchNorm layer {self.name!r}: expected an input with {self.num_features} features "
                             f"along axis {self.axis} (n_in={self.num_features}), got shape {x.shape}")
        return call("batch_norm", x, self.gamma, self.beta, self.running_mean, self.running_var,
                    training=self.training, momentum=self.momentum, epsilon=self.epsilon, axis=self.axis)

    def describe(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"
