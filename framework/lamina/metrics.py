"""Metrics (§3.2–3.3): `metric(outputs, targets) -> float`, computed on the host.

Classification metrics take the model's outputs — scores or probabilities (argmax over the
columns, or σ(z) ≥ 0.5 for a single column) or integer class predictions — and labels
(integers (m,), binary (m, 1) or one-hot (m, k)).

Choosing what to report (§3.3): one *optimizing* metric, the single number that ranks
models (say "f1"), plus *satisficing* metrics that only have to be good enough (say
latency_ms ≤ 100). `evaluate_objectives` puts them side by side.
"""
from __future__ import annotations

import abc
import re
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .data import known_labels
from .errors import ConfigError, LaminaError, ShapeError, UnknownNameError


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better: not for "cost", nor for a registered metric whose class
    says `higher_is_better = False` (perplexity); yes for the rest (accuracy, F1, ..., and names not registered)."""
    if metric == "cost":
        return False
    from .registry import get

    try:
        return bool(getattr(get("metrics", metric), "higher_is_better", True))
    except UnknownNameError:
        return True


def _host(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def predicted_classes(outputs) -> np.ndarray:
    """Class predictions: integer (or bool) outputs of shape (m,) or (m, 1) are classes already;
    otherwise the argmax over the last axis, or a = σ(z) ≥ 0.5 for one output column."""
    outputs = _host(outputs)
    if outputs.size == 0:
        return np.zeros(len(outputs) if outputs.ndim else 0, dtype=np.int64)
    if outputs.dtype.kind in "iub" and (outputs.ndim == 1 or outputs.shape[1:] == (1,)):
        return outputs.reshape(len(outputs)).astype(np.int64)
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        return outputs.argmax(axis=1)
    return (outputs.reshape(len(outputs), -1)[:, 0] >= 0.5).astype(np.int64)


def true_classes(targets) -> np.ndarray:
    """Integer labels (m,) from labels given as integers (m,), a binary column (m, 1) or one-hot (m, k)."""
    targets = _host(targets)
    if targets.ndim == 2 and targets.shape[1] > 1:
        return targets.argmax(axis=1)
    return targets.reshape(len(targets)).astype(np.int64) if targets.ndim else targets.astype(np.int64)


def _classes(outputs, targets, metric: str) -> tuple[np.ndarray, np.ndarray]:
    predicted, true = predicted_classes(outputs), true_classes(targets)
    if predicted.shape != true.shape:
        raise ShapeError(f"{metric}: {predicted.shape[0]} predictions but {true.shape[0]} targets")
    return predicted, true


def _width(x) -> int:
    """The number of classes an array's shape implies: its columns, or 2 for one float column (σ)."""
    x = _host(x)
    if x.ndim == 2 and x.shape[1] > 1:
        return x.shape[1]
    return 2 if x.dtype.kind == "f" else 0


def confusion_matrix(outputs, targets, num_classes: int | None = None) -> np.ndarray:
    """The (k, k) confusion matrix C: C[i, j] counts the examples of true class i predicted as
    class j (rows are the truth, columns the predictions, as in scikit-learn).

    k is `num_classes`, or else the larger of what the shapes imply (columns of scores or
    one-hot labels; 2 for a single sigmoid column) and the largest class seen + 1.
    """
    predicted, true = _classes(outputs, targets, "confusion_matrix")
    seen = int(max(predicted.max(initial=-1), true.max(initial=-1))) + 1
    k = int(num_classes) if num_classes is not None else max(seen, _width(outputs), _width(targets), 1)
    low = min(predicted.min(initial=0), true.min(initial=0))
    if low < 0 or seen > k:
        raise ShapeError(f"confusion_matrix: classes must lie in [0, {k}), got values from {low} to {seen - 1}")
    return np.bincount(true * k + predicted, minlength=k * k).reshape(k, k).astype(np.int64)


class Accuracy:
    """Fraction of examples whose predicted class equals the label (labels int or one-hot)."""

    name = "accuracy"

    def __call__(self, outputs, targets) -> float:
        predicted, true = _classes(outputs, targets, "accuracy")
        return float(np.mean(predicted == true)) if len(true) else float("nan")


def accuracy(outputs, targets) -> float:
    return Accuracy()(outputs, targets)


AVERAGES = ("binary", "macro", "micro")


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


class ClassificationScore(abc.ABC):
    """Base of precision, recall and F1, computed from the confusion matrix's true positives
    (tp), false positives (fp) and false negatives (fn) per class.

    `average`:
      - "binary": the score of class `pos_label` (default 1) against the rest; needs ≤ 2 classes.
      - "macro": the unweighted mean of the per-class scores, over the classes that occur in
        the targets or the predictions.
      - "micro": the score of tp, fp and fn summed over the classes (for single-label data all
        three micro scores equal the accuracy).
    A score whose denominator is 0 (e.g. precision with nothing predicted positive) is 0.
    Registered as "<metric>" (binary), "<metric>_macro" and "<metric>_micro" so a recipe can
    name any of them; `num_classes` fixes k when the data alone cannot tell.
    """

    metric = ""
    name = ""
    default_average = "binary"

    def __init__(self, average: str | None = None, pos_label: int = 1, num_classes: int | None = None):
        average = average or self.default_average
        if average not in AVERAGES:
            raise ConfigError(f"{self.metric}: average must be one of {', '.join(AVERAGES)}, got {average!r}")
        if pos_label not in (0, 1):
            raise ConfigError(f"{self.metric}: pos_label must be class 0 or 1, got {pos_label!r}")
        self.average, self.pos_label, self.num_classes = average, int(pos_label), num_classes
        self.name = self.metric if average == "binary" else f"{self.metric}_{average}"

    @staticmethod
    @abc.abstractmethod
    def score(tp, fp, fn):
        """The score from true positives, false positives and false negatives."""

    def __call__(self, outputs, targets) -> float:
        C = confusion_matrix(outputs, targets, self.num_classes)
        tp = np.diag(C)
        fp, fn = C.sum(axis=0) - tp, C.sum(axis=1) - tp
        if self.average == "micro":
            return float(self.score(tp.sum(), fp.sum(), fn.sum()))
        if self.average == "macro":
            present = (C.sum(axis=0) + C.sum(axis=1)) > 0
            return float(np.mean(self.score(tp, fp, fn)[present])) if present.any() else float("nan")
        if len(C) > 2:
            raise LaminaError(f"{self.name}: average='binary' needs 2 classes, but the data has {len(C)}; use "
                              f"{self.metric}_macro or {self.metric}_micro (average='macro' or 'micro')")
        if self.pos_label >= len(C):      # only class 0 occurs: the positive class has no tp, fp or fn
            return 0.0
        p = self.pos_label
        return float(self.score(tp[p], fp[p], fn[p]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(average={self.average!r})"


class Precision(ClassificationScore):
    """P = tp / (tp + fp): of the examples predicted positive, the fraction that are (§3.2)."""

    metric = name = "precision"

    @staticmethod
    def score(tp, fp, fn):
        return _ratio(tp, tp + fp)


class Recall(ClassificationScore):
    """R = tp / (tp + fn): of the positive examples, the fraction predicted positive (§3.2)."""

    metric = name = "recall"

    @staticmethod
    def score(tp, fp, fn):
        return _ratio(tp, tp + fn)


class F1(ClassificationScore):
    """F1 = 2 / (1/P + 1/R), the harmonic mean of precision and recall (§3.2), computed as
    2·tp / (2·tp + fp + fn), which is the same wherever P and R are positive and 0 otherwise."""

    metric = name = "f1"

    @staticmethod
    def score(tp, fp, fn):
        return _ratio(2 * tp, 2 * tp + fp + fn)


def _averaged(base: type, average: str) -> type:
    """`base` with `average` as its default, registered as "<metric>_<average>" (e.g. "f1_macro")."""
    name = f"{base.__name__}{average.title()}"
    return type(name, (base,), {"name": f"{base.metric}_{average}", "default_average": average,
                                "__module__": __name__, "__qualname__": name,
                                "__doc__": f"{base.__name__} with average={average!r} by default."})


PrecisionMacro, PrecisionMicro = _averaged(Precision, "macro"), _averaged(Precision, "micro")
RecallMacro, RecallMicro = _averaged(Recall, "macro"), _averaged(Recall, "micro")
F1Macro, F1Micro = _averaged(F1, "macro"), _averaged(F1, "micro")


def per_label_accuracy(outputs, targets, threshold: float = 0.5) -> np.ndarray:
    """Multi-task outputs (§3.10): for each label j, the fraction of the examples whose label j
    is known (not NaN or −1) on which (ŷ_j ≥ threshold) equals y_j; NaN for a label never known.

    `outputs` are probabilities (m, c); `targets` (m, c) hold 0, 1 or an unknown marker.
    """
    outputs, targets = _host(outputs), _host(targets)
    if outputs.shape != targets.shape or outputs.ndim != 2:
        raise ShapeError(f"multi_label_accuracy: outputs {outputs.shape} and targets {targets.shape} must both "
                         f"have shape (m, labels)")
    known = known_labels(targets)
    if not np.isin(targets[known], (0, 1)).all():
        raise LaminaError("multi_label_accuracy: known labels must be 0 or 1 (unknown ones NaN or -1), got "
                          f"{sorted(set(np.unique(targets[known]).tolist()) - {0, 1})[:5]}")
    correct = ((outputs >= threshold) == (targets == 1)) & known
    counts = known.sum(axis=0)
    return np.divide(correct.sum(axis=0), counts, out=np.full(counts.shape, np.nan), where=counts > 0)


class MultiLabelAccuracy:
    """The mean over labels of `per_label_accuracy`, skipping labels that are never known:
    each task counts equally, however many of its labels are missing."""

    name = "multi_label_accuracy"

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def __call__(self, outputs, targets) -> float:
        per_label = per_label_accuracy(outputs, targets, self.threshold)
        known = per_label[~np.isnan(per_label)]
        return float(known.mean()) if known.size else float("nan")


# ---- optimizing and satisficing metrics (§3.3) -------------------------------------------------
DIRECTIONS = ("<=", ">=")


@dataclass(frozen=True)
class Satisficing:
    """A metric that only has to be good enough: `value <= threshold` (direction "<=", e.g.
    latency_ms ≤ 100) or `value >= threshold` (direction ">=", e.g. recall ≥ 0.9)."""

    name: str
    threshold: float
    direction: str = "<="

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"satisficing metric {self.name!r}: direction must be '<=' or '>=', "
                              f"got {self.direction!r}")
        object.__setattr__(self, "threshold", float(self.threshold))

    def ok(self, value: float) -> bool:
        return bool(value <= self.threshold if self.direction == "<=" else value >= self.threshold)

    def __str__(self) -> str:
        return f"{self.name} {self.direction} {self.threshold:g}"

    @classmethod
    def parse(cls, spec: "Satisficing | str | Mapping") -> "Satisficing":
        """From a `Satisficing`, a string "latency_ms <= 100", or a table {name, threshold, direction}
        (as a recipe's TOML would give it)."""
        if isinstance(spec, Satisficing):
            return spec
        if isinstance(spec, str):
            match = re.fullmatch(r"\s*([\w.-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", spec)
            if match is None:
                raise ConfigError(f"satisficing metric: expected 'NAME <= NUMBER' or 'NAME >= NUMBER', got {spec!r}")
            try:
                return cls(match[1], float(match[3]), match[2])
            except ValueError:
                raise ConfigError(f"satisficing metric: {match[3]!r} in {spec!r} is not a number") from None
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"name", "threshold", "direction"}
            if unknown or not {"name", "threshold"} <= set(spec):
                raise ConfigError(f"satisficing metric: a table needs 'name' and 'threshold' (and may give "
                                  f"'direction'), got {dict(spec)!r}")
            return cls(**spec)
        raise ConfigError(f"satisficing metric: expected a string or a table, got {spec!r}")


def evaluate_objectives(values: Mapping[str, float], optimizing: str,
                        satisficing: Sequence[Satisficing | str | Mapping] = ()) -> dict:
    """Report the optimizing metric and the satisficing ones side by side (§3.3).

    `values` maps metric names to their values on one split (e.g. what
    `lamina.training.evaluate` returns, plus "latency_ms" from `measure_latency_ms`).
    Returns a JSON-able dict:

        {"optimizing": {"name": "f1", "value": 0.91},
         "satisficing": {"latency_ms": {"value": 12.5, "threshold": 100.0, "direction": "<=", "ok": True}},
         "satisfied": True}

    Models are ranked by the optimizing value among those whose "satisfied" is True; a model
    that misses a satisficing bound is out however good its optimizing metric.
    """
    def value_of(name: str) -> float:
        if name not in values:
            raise LaminaError(f"evaluate_objectives: no value for metric {name!r}; "
                              f"got {', '.join(sorted(values)) or 'none'}")
        return float(values[name])

    report = {"optimizing": {"name": optimizing, "value": value_of(optimizing)}, "satisficing": {}}
    for spec in map(Satisficing.parse, satisficing):
        value = value_of(spec.name)
        report["satisficing"][spec.name] = {"value": value, "threshold": spec.threshold,
                                            "direction": spec.direction, "ok": spec.ok(value)}
    report["satisfied"] = all(entry["ok"] for entry in report["satisficing"].values())
    return report


def measure_latency_ms(predict: Callable, X, examples: int = 100, warmup: int = 1,
                       clock: Callable[[], float] = time.perf_counter) -> float:
    """Latency of `predict` per example in milliseconds: the median wall time of calling it on
    one example at a time (X[i:i+1]) for the first `examples` rows, after `warmup` untimed calls.
    One example per call is what a deployed model answering single requests sees; the median
    ignores the odd slow call. For a Lamina model, `predict = lambda x: training.predict(model, x)`."""
    n = min(int(examples), len(X))
    if n < 1:
        raise LaminaError("measure_latency_ms: needs at least one example")
    for i in range(int(warmup)):
        predict(X[i % n:i % n + 1])
    times = []
    for i in range(n):
        start = clock()
        predict(X[i:i + 1])
        times.append((clock() - start) * 1e3)
    return float(np.median(times))


METRICS = [Accuracy, Precision, Recall, F1, PrecisionMacro, PrecisionMicro, RecallMacro, RecallMicro, F1Macro,
           F1Micro, MultiLabelAccuracy]
