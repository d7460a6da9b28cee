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
from .data import Split, minibatches, num_batches
from .errors import CheckpointError, TrainingDiverged
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
        batch_size: int = 64, metrics: dict | None = None, seed: int = 0, checkpoint_dir=None,
        resume: bool = False, progress: bool = True, metadata: dict | None = None,
        on_epoch_end: Callable | None = None) -> History:
    """Train `model` for `epochs` epochs of shuffled mini-batches (a new order each epoch).

    With `checkpoint_dir`, a checkpoint is written atomically after every epoch; with
    `resume`, training continues from the checkpoint there (model, optimizer, history, epoch).
    Raises TrainingDiverged naming the epoch and batch if the loss becomes NaN or infinite.
    """
    metrics = metrics or {}
    history, start_epoch = History(), 0
    if resume:
        if checkpoint_dir is None or not checkpoint.exists(checkpoint_dir):
            raise CheckpointError(f"cannot resume: no checkpoint in {checkpoint_dir}")
        saved = checkpoint.load(checkpoint_dir, model, optimizer)
        history, start_epoch = History.from_dict(saved.get("history", {})), int(saved.get("epoch", 0))

    bar = _progress_bar(progress, total=(epochs - start_epoch) * num_batches(len(train), batch_size))
    try:
        for epoch in range(start_epoch, epochs):
            model.train()
            costs = []
            batches = minibatches(train.X, train.y, batch_size, shuffle=True, seed=_epoch_seed(seed, epoch))
            for b, (X_batch, y_batch) in enumerate(batches):
                loss = loss_fn(model(tensor(X_batch)), tensor(y_batch))
                cost = float(loss.item())
                if not math.isfinite(cost):
                    raise TrainingDiverged(f"the loss became {cost} at epoch {epoch + 1}, batch {b + 1}; "
                                           f"try a smaller learning rate or check the inputs for NaN/inf")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                costs.append(cost)
                history.iteration_cost.append(cost)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, cost=f"{cost:.4f}", refresh=False)
            history.epoch_cost.append(float(np.mean(costs)))
            history.train_metrics.append(evaluate(model, loss_fn, train, metrics))
            if dev is not None:
                history.dev_metrics.append(evaluate(model, loss_fn, dev, metrics))
            if checkpoint_dir is not None:
                checkpoint.save(checkpoint_dir, model, optimizer,
                                dict(metadata or {}, epoch=epoch + 1, history=history.to_dict()))
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
    finally:
        if bar is not None:
            bar.close()
    return history


def _epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of an epoch: a function of (seed, epoch) alone, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _progress_bar(enabled: bool, total: int):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False)
