"""Mini-batch iteration (§2.11) and a background-thread loader that augments batches while the
network trains (§4.12), train/dev/test splits by ratio (§3.4), the training-dev set for
mismatched distributions (§3.8), and unknown labels of multi-task targets (§3.10)."""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import LaminaError, ShapeError


@dataclass
class Split:
    """Examples in rows: X (m, n_x) and labels y (m,) or (m, k).

    `augment`, when set, is a random transform `augment(X_batch, rng)` (see `lamina.augment`)
    that training applies to every mini-batch drawn from this split; evaluation uses X as is.
    """

    X: np.ndarray
    y: np.ndarray
    augment: Callable | None = None

    def __post_init__(self):
        if len(self.X) != len(self.y):
            raise ShapeError(f"Split: X has {len(self.X)} examples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class Dataset:
    """A named dataset split into train, dev and test; `num_classes` for classification.

    `train_dev` (§3.8), when present, comes from the training distribution but is never
    trained on: its error against the training error measures variance, against the dev
    error data mismatch (see `lamina.diagnose`).
    """

    name: str
    train: Split
    dev: Split | None
    test: Split | None
    num_classes: int | None = None
    train_dev: Split | None = None

    @property
    def num_features(self) -> int:
        return int(np.prod(self.train.X.shape[1:]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (n_x,) for features, (n_H, n_W, n_C) for images."""
        return tuple(int(n) for n in self.train.X.shape[1:])


def minibatches(X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (X_batch, y_batch) of `batch_size` rows (the last may be smaller), in a fresh
    random order per call when `shuffle` (seeded for reproducibility)."""
    m = len(X)
    if batch_size <= 0:
        raise ValueError(f"minibatches: batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(seed).permutation(m) if shuffle else np.arange(m)
    for start in range(0, m, batch_size):
        idx = order[start:start + batch_size]
        yield X[idx], y[idx]


def num_batches(m: int, batch_size: int) -> int:
    return -(-m // batch_size)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of an epoch: a function of (seed, epoch) alone, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def batch_generator(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The random generator of one batch's augmentation, a function of (seed, epoch, batch) alone,
    so the augmented batches do not depend on which thread prepares them, nor on resuming."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, batch]))


class BatchError(LaminaError, RuntimeError):
    """Preparing a batch failed in a loader thread; `epoch` and `batch` say which (0-based)."""

    def __init__(self, message: str, epoch: int, batch: int):
        super().__init__(message)
        self.epoch, self.batch = epoch, batch


class DataLoader:
    """Mini-batches (X_batch, y_batch) of `batch_size` rows prepared by `workers` background
    threads while the caller trains on earlier ones (§4.12); at most `prefetch` batches are
    being prepared or waiting at any time. Batches come in order.

    Epoch e visits the examples in the order `permutation(m)` of the generator seeded with
    `epoch_seed(seed, e)` (the order `minibatches` gives; no shuffling if `shuffle` is False), and
    batch b of it is `augment(X[idx], batch_generator(seed, e, b))`, so batches are the same for
    any number of workers (workers=0 prepares them in the caller's thread). NumPy releases the GIL
    in its array work, which is what lets the threads overlap with training. An augmentation that
    learns from data and is not fitted yet (`PCAColor`) is fitted on X here.

    `iter(loader)` runs the next epoch (0, 1, 2, ... for successive loops); `loader.batches(e)`
    runs epoch e. A failure in a thread is raised in the caller as `BatchError` naming the batch,
    from the original exception; leaving a loop early cancels the batches not yet started and
    waits for the threads to finish.
    """

    def __init__(self, X, y, batch_size: int, shuffle: bool = True, augment: Callable | None = None,
                 workers: int = 2, prefetch: int = 4, seed: int = 0):
        if len(X) != len(y):
            raise ShapeError(f"DataLoader: X has {len(X)} examples but y has {len(y)}")
        for arg, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("prefetch", prefetch, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"DataLoader: {arg} must be an integer >= {low}, got {value!r}")
        if augment is not None and not callable(augment):
            raise ValueError(f"DataLoader: augment must be callable as augment(X_batch, rng), got {augment!r}")
        self.X, self.y = X, y
        self.batch_size, self.shuffle, self.augment = int(batch_size), bool(shuffle), augment
        self.workers, self.prefetch, self.seed = int(workers), int(prefetch), int(seed)
        self.epoch = 0
        if augment is not None and not getattr(augment, "fitted", True):
            augment.fit(X)

    def __len__(self) -> int:
        return num_batches(len(self.X), self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the examples."""
        m = len(self.X)
        return np.random.default_rng(epoch_seed(self.seed, epoch)).permutation(m) if self.shuffle else np.arange(m)

    def _prepare(self, epoch: int, b: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X_batch = self.X[idx]
        if self.augment is not None:
            X_batch = self.augment(X_batch, batch_generator(self.seed, epoch, b))
        return X_batch, self.y[idx]

    def _failed(self, err: BaseException, epoch: int, b: int) -> BatchError:
        return BatchError(f"DataLoader: preparing batch {b} of epoch {epoch} failed: {type(err).__name__}: {err}",
                          epoch, b)

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of epoch `epoch`, in order."""
        order, size = self.order(epoch), self.batch_size
        jobs = ((b, order[start:start + size]) for b, start in enumerate(range(0, len(order), size)))
        if self.workers == 0:
            for b, idx in jobs:
                try:
                    batch = self._prepare(epoch, b, idx)
                except Exception as err:
                    raise self._failed(err, epoch, b) from err
                yield batch
            return
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lamina-loader")
        pending = collections.deque()
        try:
            for b, idx in jobs:
                pending.append((b, pool.submit(self._prepare, epoch, b, idx)))
                if len(pending) >= self.prefetch:
                    yield self._result(epoch, *pending.popleft())
            while pending:
                yield self._result(epoch, *pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _result(self, epoch: int, b: int, future) -> tuple[np.ndarray, np.ndarray]:
        try:
            return future.result()
        except Exception as err:
            raise self._failed(err, epoch, b) from err

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)


def parse_ratios(ratios: str | Sequence[float]) -> tuple[float, ...]:
    """Split ratios as fractions that sum to 1, from fractions (0.98, 0.01, 0.01), percents
    (98, 1, 1) or a string "98/1/1" ("70/30", "60/20/20", "0.6/0.2/0.2").

    Ratios must be non-negative and sum to 1 (fractions) or to 100 (percents); anything else
    is an error, so a typo such as "60/20/10" is never silently rescaled.
    """
    text = ratios
    if isinstance(ratios, str):
        try:
            ratios = tuple(float(part) for part in ratios.split("/"))
        except ValueError:
            raise ValueError(f"split ratios: expected numbers separated by '/' such as '60/20/20', "
                             f"got {text!r}") from None
    ratios = tuple(float(r) for r in ratios)
    if not ratios or any(not np.isfinite(r) or r < 0 for r in ratios):
        raise ValueError(f"split ratios must be non-negative numbers, got {text!r}")
    total = sum(ratios)
    if abs(total - 1.0) <= 1e-9:
        return ratios
    if abs(total - 100.0) <= 1e-7:
        return tuple(r / 100.0 for r in ratios)
    raise ValueError(f"split ratios must sum to 1 (fractions) or 100 (percents), got {text!r} (sum {total:g})")


def split_sizes(m: int, ratios: str | Sequence[float]) -> list[int]:
    """How many of `m` examples each part of a split by `ratios` gets; the sizes sum to m.

    Each cut is the rounded cumulative ratio (60/20/20 of 569 gives 341/114/114). A part with
    a positive ratio never comes out empty: on small m it takes one example from the largest
    part, so 98/1/1 of 10 examples gives 8/1/1 (98/1/1 is meant for m in the millions, §3.4).
    Fewer examples than positive parts is an error.
    """
    ratios = parse_ratios(ratios)
    positive = sum(r > 0 for r in ratios)
    if m < positive:
        raise ValueError(f"cannot split {m} examples into {positive} non-empty parts by ratios {ratios}")
    cuts = np.round(np.cumsum(ratios)[:-1] * m).astype(int)
    sizes = np.diff(np.concatenate([[0], np.clip(cuts, 0, m), [m]]))
    for i, r in enumerate(ratios):
        if r > 0 and sizes[i] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] = 1
    return [int(n) for n in sizes]


def split_indices(m: int, ratios: str | Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Shuffle range(m) and cut it into parts sized by `split_sizes`, e.g. (0.6, 0.2, 0.2)."""
    order = np.random.default_rng(seed).permutation(m)
    return np.split(order, np.cumsum(split_sizes(m, ratios))[:-1])


def _count(size: int | float, m: int, what: str) -> int:
    """`size` as a number of examples: a fraction in (0, 1) of m, or a count in [1, m)."""
    if isinstance(size, (float, np.floating)) and 0.0 < size < 1.0:
        n = int(round(size * m))
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        n = int(size)
    else:
        raise ValueError(f"{what}: size must be a fraction in (0, 1) or a whole number of examples, got {size!r}")
    if not 1 <= n < m:
        raise ValueError(f"{what}: a size of {size!r} gives {n} of {m} examples; it must leave at least one "
                         f"example on each side")
    return n


def training_dev_split(train: Split, size: int | float, seed: int = 0) -> tuple[Split, Split]:
    """(train, train_dev): carve a training-dev set of `size` examples (a count, or a fraction
    of the training set) out of `train`, chosen at random (seeded) so it has the training
    set's distribution (§3.8); the returned training set no longer holds those examples."""
    n = _count(size, len(train), "training_dev_split")
    order = np.random.default_rng(seed).permutation(len(train))
    held, kept = np.sort(order[:n]), np.sort(order[n:])
    return Split(train.X[kept], train.y[kept]), Split(train.X[held], train.y[held])


def with_train_dev(dataset: Dataset, size: int | float | None = None, seed: int = 0) -> Dataset:
    """A copy of `dataset` whose `train_dev` is carved out of its training set by
    `training_dev_split`; `size` defaults to the size of the dev set."""
    if dataset.train_dev is not None:
        raise ValueError(f"dataset {dataset.name!r} already has a training-dev set")
    if size is None:
        if dataset.dev is None:
            raise ValueError(f"dataset {dataset.name!r} has no dev set to size the training-dev set by; pass size")
        size = len(dataset.dev)
    train, train_dev = training_dev_split(dataset.train, size, seed)
    return replace(dataset, train=train, train_dev=train_dev)


def mismatched(name: str, source: Split, target: Split, *, train_dev: int | float | None = None,
               dev_test: str | Sequence[float] = (0.5, 0.5), num_classes: int | None = None,
               seed: int = 0) -> Dataset:
    """Train on one distribution, aim at another (§3.8, option 2).

    `source` (distribution A, plentiful) becomes the training set, less a training-dev set of
    `train_dev` examples (a count or fraction; default: as many as the dev set gets);
    `target` (distribution B, the one that matters) is split by `dev_test` into dev and test,
    so dev and test share a distribution (§3.4). Nothing from B is trained on.
    """
    dev_idx, test_idx = split_indices(len(target), dev_test, seed)
    dev, test = Split(target.X[dev_idx], target.y[dev_idx]), Split(target.X[test_idx], target.y[test_idx])
    train, held = training_dev_split(source, train_dev if train_dev is not None else len(dev), seed)
    return Dataset(name, train, dev, test, num_classes, train_dev=held)


#: the value that marks a label as unknown in multi-task targets (NaN marks it too)
UNKNOWN_LABEL = -1


def known_labels(y) -> np.ndarray:
    """Boolean mask of the entries of multi-task targets `y` that are known: neither NaN nor
    `UNKNOWN_LABEL` (−1). Losses and metrics leave the other entries out (§3.10)."""
    y = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    known = y != UNKNOWN_LABEL
    if y.dtype.kind == "f":
        known &= ~np.isnan(y)
    return known
