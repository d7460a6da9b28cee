"""The training loop: mini-batches, forward, loss, backward, update; per-epoch evaluation,
a progress bar, history, atomic checkpoints and resumption."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import checkpoint
from .autograd import no_grad
from .data import DataLoader, Split, epoch_seed, minibatches, num_batches
from .early_stopping import EarlyStopping
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .tensor import tensor


@dataclass
class History:
    """Per-epoch training cost and metrics, per-iteration cost, and dev metrics."""

    epoch_cost: list[float] = field(default_factory=list)
    iteration_cost: list[float] = field(default_factory=list)
    train_metrics: list[dict] = field(default_factory=list)
    dev_metrics: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"epoch_cost": self.epoch_cost, "iteration_cost": self.iteration_cost,
                "train_metrics": self.train_metrics, "dev_metrics": self.dev_metrics}

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(**{k: list(data.get(k, [])) for k in ("epoch_cost", "iteration_cost", "train_metrics",
                                                          "dev_metrics")})


@no_grad()
def predict(model, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs for X, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    try:
        outputs = [model(tensor(X[i:i + batch_size])).numpy() for i in range(0, len(X), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.empty((0,))


@no_grad()
def evaluate(model, loss_fn, split: Split, metrics: dict, batch_size: int = 1024) -> dict:
    """{"cost": mean loss, <metric>: value, ...} of the model on a split."""
    outputs = predict(model, split.X, batch_size)
    result = {"cost": float(loss_fn(tensor(outputs), tensor(split.y)).item())}
    for name, metric in metrics.items():
        result[name] = float(metric(outputs, split.y))
    return result


def fit(model, loss_fn, optimizer, train: Split, dev: Split | None = None, *, epochs: int = 10,
        batch_size: int = 64, metrics: dict | None = None, seed: int = 0, schedule: Callable | None = None,
        regularizer: Callable | None = None, clip: Callable | None = None,
        early_stopping: EarlyStopping | None = None, checkpoint_dir=None, resume: bool = False,
        progress: bool = True, metadata: dict | None = None, extra_arrays: dict | None = None,
        on_epoch_end: Callable | None = None, augment: Callable | None = None, workers: int = 2) -> History:
    """Train `model` for `epochs` epochs of shuffled mini-batches (a new order each epoch).

    Each epoch's learning rate is `schedule(epoch, lr0)` (0-based epoch) when given. The cost
    is J = loss + `regularizer(model, m)` (m = the batch's size); `clip(params)` edits the
    gradients before each update. `early_stopping` watches the dev metrics and restores the
    best weights when it stops training. With `checkpoint_dir`, a checkpoint (with
    `extra_arrays`, the RNG state and the early-stopping state) is written atomically after
    every epoch; with `resume`, training continues from it exactly as if never interrupted.
    Raises TrainingDiverged naming the epoch and batch if the cost becomes NaN or infinite.

    `augment(X_batch, rng)` (default: `train.augment`) transforms every training batch (§4.12);
    the batches are then prepared by a `DataLoader` in `workers` background threads, in the same
    order, each augmented from a generator seeded by (seed, epoch, batch), so resuming stays exact.
    """
    metrics = metrics or {}
    augment = augment if augment is not None else train.augment
    loader = None if augment is None else DataLoader(train.X, train.y, batch_size, shuffle=True, augment=augment,
                                                     workers=workers, seed=seed)
    history, start_epoch, lr0 = History(), 0, optimizer.lr
    backend = model.parameters()[0].backend if model.parameters() else None
    if early_stopping is not None and dev is None:
        raise ConfigError("early stopping needs a dev set to watch")
    if resume:
        if checkpoint_dir is None or not checkpoint.exists(checkpoint_dir):
            raise CheckpointError(f"cannot resume: no checkpoint in {checkpoint_dir}")
        saved = checkpoint.load(checkpoint_dir, model, optimizer)
        history, start_epoch = History.from_dict(saved.get("history", {})), int(saved.get("epoch", 0))
        if backend is not None and saved.get("rng_state") is not None:
            backend.set_rng_state(saved["rng_state"])
        if early_stopping is not None and "early_stopping" in saved:
            best = {k[len(BEST_PREFIX):]: v for k, v in checkpoint.extra_arrays(checkpoint_dir).items()
                    if k.startswith(BEST_PREFIX)}
            early_stopping.load_state(saved["early_stopping"], best)
        if saved.get("stopped_early"):
            return history

    bar = _progress_bar(progress, total=(epochs - start_epoch) * num_batches(len(train), batch_size))
    batches = None
    try:
        for epoch in range(start_epoch, epochs):
            if schedule is not None:
                optimizer.lr = float(schedule(epoch, lr0))
            model.train()
            costs = []
            batches = minibatches(train.X, train.y, batch_size, shuffle=True, seed=epoch_seed(seed, epoch)) \
                if loader is None else loader.batches(epoch)
            for b, (X_batch, y_batch) in enumerate(batches):
                cost_tensor = loss_fn(model(tensor(X_batch)), tensor(y_batch))
                if regularizer is not None:
                    cost_tensor = cost_tensor + regularizer(model, len(X_batch))
                cost = float(cost_tensor.item())
                if not math.isfinite(cost):
                    raise TrainingDiverged(f"the loss became {cost} at epoch {epoch + 1}, batch {b + 1}; "
                                           f"try a smaller learning rate or check the inputs for NaN/inf")
                optimizer.zero_grad()
                cost_tensor.backward()
                if clip is not None:
                    clip(optimizer.params)
                optimizer.step()
                costs.append(cost)
                history.iteration_cost.append(cost)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, cost=f"{cost:.4f}", refresh=False)
            history.epoch_cost.append(float(np.mean(costs)))
            history.train_metrics.append(evaluate(model, loss_fn, train, metrics))
            stop = False
            if dev is not None:
                history.dev_metrics.append(evaluate(model, loss_fn, dev, metrics))
                if early_stopping is not None:
                    stop = early_stopping.update(epoch + 1, history.dev_metrics[-1], model)
                    if stop:
                        early_stopping.restore(model)
            if checkpoint_dir is not None:
                _save(checkpoint_dir, model, optimizer, backend, history, epoch + 1, stop, early_stopping,
                      metadata, extra_arrays)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
            if stop:
                break
    finally:
        if batches is not None:
            batches.close()         # stops the loader's threads when training ends inside an epoch
        if bar is not None:
            bar.close()
    return history


BEST_PREFIX = "best/"


def _save(directory, model, optimizer, backend, history, epoch, stopped, early_stopping, metadata, extra_arrays):
    meta = dict(metadata or {}, epoch=epoch, history=history.to_dict(), stopped_early=stopped,
                rng_state=backend.rng_state() if backend is not None else None)
    arrays = dict(extra_arrays or {})
    if early_stopping is not None:
        meta["early_stopping"] = early_stopping.state()
        arrays.update({BEST_PREFIX + k: v for k, v in early_stopping.best_weights.items()})
    checkpoint.save(directory, model, optimizer, meta, arrays)


def _progress_bar(enabled: bool, total: int):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False)
