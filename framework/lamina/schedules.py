"""Learning-rate schedules (§2.16): the rate of each epoch from the initial rate α0.

Every schedule is built from keyword options (as a TOML table gives them, e.g.
`get("schedules", "inverse_time")(decay_rate=1.0)`) and called as `schedule(epoch, lr0)`, where
`epoch` is the 0-based index of the epoch about to run. So the first epoch (epoch 0) trains at
α0 under every schedule except `manual`, whose table decides, and `inverse_sqrt` with k ≠ 1.
"""
from __future__ import annotations

import abc
import math
import numbers

from .errors import LaminaError
from .optim.optimizer import check_number


class Schedule(abc.ABC):
    """Base class: subclasses set `name` and implement `rate(epoch, lr0)`."""

    name = ""

    def __call__(self, epoch: int, lr0: float) -> float:
        epoch = _integer(self, "epoch", epoch, low=0)
        return float(self.rate(epoch, _number(self, "lr0", lr0, low=0.0, low_open=True)))

    @abc.abstractmethod
    def rate(self, epoch: int, lr0: float) -> float:
        """The learning rate of 0-based epoch `epoch` for an initial rate `lr0`."""

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


def _number(schedule, label: str, value, **bounds) -> float:
    return check_number(f"{type(schedule).__name__} schedule", label, value, **bounds)


def _integer(schedule, label: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise LaminaError(f"{type(schedule).__name__} schedule: {label} must be an integer ≥ {low}, got {value!r}")
    return int(value)


class InverseTime(Schedule):
    """α = α0 / (1 + decay_rate·epoch)."""

    name = "inverse_time"

    def __init__(self, decay_rate: float = 1.0):
        self.decay_rate = _number(self, "decay_rate", decay_rate, low=0.0)

    def rate(self, epoch, lr0):
        return lr0 / (1.0 + self.decay_rate * epoch)


class Exponential(Schedule):
    """α = base^epoch · α0 (base 0.95 by default)."""

    name = "exponential"

    def __init__(self, base: float = 0.95):
        self.base = _number(self, "base", base, low=0.0, low_open=True, high=1.0)

    def rate(self, epoch, lr0):
        return self.base ** epoch * lr0


class InverseSqrt(Schedule):
    """α = k/√(epoch + 1) · α0. The seed's k/√epoch_num counts epochs from 1 (epoch_num = epoch + 1),
    so the first epoch (epoch 0) trains at k·α0 rather than dividing by √0."""

    name = "inverse_sqrt"

    def __init__(self, k: float = 1.0):
        self.k = _number(self, "k", k, low=0.0, low_open=True)

    def rate(self, epoch, lr0):
        return self.k / math.sqrt(epoch + 1) * lr0


class Staircase(Schedule):
    """α = α0 · factor^⌊epoch/step⌋: the rate drops by `factor` every `step` epochs."""

    name = "staircase"

    def __init__(self, factor: float = 0.5, step: int = 10):
        self.factor = _number(self, "factor", factor, low=0.0, low_open=True, high=1.0)
        self.step = _integer(self, "step", step, low=1)

    def rate(self, epoch, lr0):
        return lr0 * self.factor ** (epoch // self.step)


class Manual(Schedule):
    """α = the rate listed for the latest epoch ≤ this one: `rates` maps epochs to rates, as a dict
    ({0: 0.1, 10: 0.01}; TOML's string keys "0", "10" too) or a list of [epoch, rate] pairs.
    The rates are absolute (not multiples of α0); epochs before the first listed one train at α0."""

    name = "manual"

    def __init__(self, rates):
        pairs = rates.items() if isinstance(rates, dict) else rates
        try:
            pairs = [(epoch, rate) for epoch, rate in pairs]
        except (TypeError, ValueError):
            raise LaminaError(f"Manual schedule: rates must be a dict {{epoch: rate}} or a list of [epoch, rate] "
                              f"pairs, got {rates!r}") from None
        if not pairs:
            raise LaminaError("Manual schedule: rates is empty; give at least one {epoch: rate}")
        table = {}
        for epoch, rate in pairs:
            first = _integer(self, "each epoch in rates", _from_toml_key(epoch), low=0)
            if first in table:
                raise LaminaError(f"Manual schedule: epoch {first} is listed twice in rates")
            table[first] = _number(self, f"the rate of epoch {first}", rate, low=0.0, low_open=True)
        self.rates = dict(sorted(table.items()))

    def rate(self, epoch, lr0):
        current = lr0
        for first, rate in self.rates.items():
            if first > epoch:
                break
            current = rate
        return current


def _from_toml_key(key):
    """TOML table keys are strings: "10" means epoch 10."""
    return int(key) if isinstance(key, str) and key.strip().isdigit() else key


SCHEDULES = [InverseTime, Exponential, InverseSqrt, Staircase, Manual]
