"""`Optimizer`: updates parameters in place from their `.grad` (with per-parameter state)."""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..errors import CheckpointError, LaminaError
from ..ops import call
from ..tensor import Tensor


class Optimizer:
    """Base class. Subclasses set `state_names` and implement `update(param, grad, state)`."""

    name = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, params, lr: float):
        self.params = [p for p in params]
        if not self.params:
            raise LaminaError(f"{type(self).__name__}: got an empty parameter list")
        if lr <= 0:
            raise LaminaError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[int, dict[str, Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @no_grad()
    def step(self) -> None:
        """One update of every trainable parameter that has a gradient."""
        self.step_count += 1
        for i, p in enumerate(self.params):
            if p.grad is None or not p.requires_grad:
                continue
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {k: Tensor._wrap(p.backend.zeros(p.shape, p.dtype), p.backend)
                                         for k in self.state_names}
            new_param, *new_state = call(self.op, p, p.grad, *(state[k] for k in self.state_names),
                                         **self.hyperparameters())
            p.data = new_param.data
            for k, t in zip(self.state_names, new_state):
                state[k] = t

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    # ---- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars): per-parameter state as arrays named "<index>.<name>", and the step count."""
        arrays = {f"{i}.{k}": t.numpy().copy() for i, state in self.state.items() for k, t in state.items()}
        return arrays, {"step_count": self.step_count, "lr": self.lr, "name": self.name}

    def load_state_dict(self, arrays: dict, scalars: dict) -> None:
        self.step_count = int(scalars.get("step_count", 0))
        self.state = {}
        for key, value in arrays.items():
            index, _, state_name = key.partition(".")
            i = int(index)
            if i >= len(self.params) or state_name not in self.state_names:
                raise CheckpointError(f"{type(self).__name__}: optimizer state {key!r} does not fit this model")
            p = self.params[i]
            if tuple(value.shape) != p.shape:
                raise CheckpointError(f"{type(self).__name__}: optimizer state {key!r} has shape "
                                      f"{tuple(value.shape)}, the parameter has {p.shape}")
            self.state.setdefault(i, {})[state_name] = Tensor._wrap(p.backend.asarray(value, p.dtype), p.backend)
