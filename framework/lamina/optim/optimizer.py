"""`Optimizer`: updates parameters in place from their `.grad` (with per-parameter state)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import no_grad
from ..errors import CheckpointError, LaminaError
from ..ops import call
from ..tensor import Tensor


def check_number(where: str, label: str, value, *, low: float, low_open: bool = False, high: float | None = None,
                 high_open: bool = False) -> float:
    """`value` as a finite float within the bounds, else a LaminaError naming `where` and `label`
    (optimizers, schedules and clipping check their hyper-parameters with it)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise LaminaError(f"{where}: {label} must be a number, got {value!r}")
    value = float(value)
    above = value > low if low_open else value >= low
    below = high is None or (value < high if high_open else value <= high)
    if not (above and below and math.isfinite(value)):
        upper = "∞)" if high is None else f"{high:g}{')' if high_open else ']'}"
        raise LaminaError(f"{where}: {label} must lie in {'(' if low_open else '['}{low:g}, {upper}, got {value!r}")
    return value


class Optimizer:
    """Base class. Subclasses set `name` (the registered one), `op` (their update op: a composite op
    `op(param, grad, *state) -> (param, *state)`), `state_names` (the per-parameter state the op
    carries, zeros at the first step) and `hyperparameters()` (the op's attributes)."""

    name = ""
    op = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, params, lr: float):
        self.params = [p for p in params]
        if not self.params:
            raise LaminaError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = self._number("lr", lr, low=0.0, low_open=True)
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
        """The attributes of this optimizer's update op."""
        return {"lr": self.lr}

    # ---- hyper-parameter checks (errors name the optimizer and the argument) -------------------
    def _number(self, label: str, value, **bounds) -> float:
        return check_number(type(self).__name__, label, value, **bounds)

    def _beta(self, label: str, value) -> float:
        """A decay rate of an exponentially weighted average: β in [0, 1)."""
        return self._number(label, value, low=0.0, high=1.0, high_open=True)

    def _flag(self, label: str, value) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise LaminaError(f"{type(self).__name__}: {label} must be true or false, got {value!r}")
        return bool(value)

    # ---- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars): per-parameter state as arrays named "<index>.<name>", and the step count."""
        arrays = {f"{i}.{k}": t.numpy().copy() for i, state in self.state.items() for k, t in state.items()}
        return arrays, {"step_count": self.step_count, "lr": self.lr, "name": self.name}

    def load_state_dict(self, arrays: dict, scalars: dict) -> None:
        """Restore what `state_dict` gave; on a mismatch raise CheckpointError and change nothing."""
        name = type(self).__name__
        saved = scalars.get("name")
        if saved is not None and saved != self.name:
            raise CheckpointError(f"{name}: the checkpoint holds the state of optimizer {saved!r}, not {self.name!r}")
        state: dict[int, dict[str, Tensor]] = {}
        for key, value in arrays.items():
            index, _, state_name = key.partition(".")
            if not index.isdigit() or int(index) >= len(self.params) or state_name not in self.state_names:
                raise CheckpointError(f"{name}: optimizer state {key!r} does not fit this model")
            p = self.params[int(index)]
            if tuple(value.shape) != p.shape:
                raise CheckpointError(f"{name}: optimizer state {key!r} has shape {tuple(value.shape)}, "
                                      f"the parameter has {p.shape}")
            state.setdefault(int(index), {})[state_name] = Tensor._wrap(p.backend.asarray(value, p.dtype), p.backend)
        for i, entries in sorted(state.items()):
            missing = [k for k in self.state_names if k not in entries]
            if missing:
                raise CheckpointError(f"{name}: the optimizer state of parameter {i} lacks {', '.join(missing)}")
        self.step_count = int(scalars.get("step_count", 0))
        self.state = state
