"""Early stopping (§2.5): stop when a dev metric has not improved for `patience` epochs and
restore the weights of the best epoch."""
from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError
from .metrics import higher_is_better


class EarlyStopping:
    """Watch `metric` on the dev set ("cost" or a recipe metric such as "accuracy").

    An epoch improves on the best when it beats it by more than `min_delta` (downwards for "cost"
    and the metrics where lower is better, such as perplexity; upwards for the rest); after `patience`
    epochs without improvement training stops, and `restore` puts the best epoch's weights back into
    the model.
    """

    def __init__(self, metric: str = "cost", patience: int = 5, min_delta: float = 0.0):
        if patience < 1:
            raise ConfigError(f"early stopping: patience must be at least 1, got {patience}")
        self.metric, self.patience, self.min_delta = metric, int(patience), float(min_delta)
        self.sign = 1.0 if higher_is_better(metric) else -1.0
        self.best = -math.inf
        self.best_epoch = 0
        self.wait = 0
        self.best_weights: dict[str, np.ndarray] = {}

    def update(self, epoch: int, dev_metrics: dict, model) -> bool:
        """Record epoch `epoch`'s dev metrics; True when training should stop."""
        if self.metric not in dev_metrics:
            raise ConfigError(f"early stopping watches {self.metric!r} but the dev evaluation has only "
                              f"{', '.join(sorted(dev_metrics))}")
        score = self.sign * dev_metrics[self.metric]
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            self.best_weights = model.state_dict()
        else:
            self.wait += 1
        return self.wait >= self.patience

    def restore(self, model) -> None:
        if self.best_weights:
            model.load_state_dict(self.best_weights)

    # ---- checkpointing -------------------------------------------------------------------
    def state(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None, "best_epoch": self.best_epoch,
                "wait": self.wait}

    def load_state(self, state: dict, best_weights: dict[str, np.ndarray]) -> None:
        self.best = -math.inf if state.get("best") is None else float(state["best"])
        self.best_epoch, self.wait = int(state.get("best_epoch", 0)), int(state.get("wait", 0))
        self.best_weights = dict(best_weights)
