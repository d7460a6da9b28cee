"""Metrics (§3.2–3.3): precision, recall, F1, the confusion matrix, the multi-label accuracy, and
optimizing vs satisficing metrics; hand-computed cases, scikit-learn as the independent oracle."""
import numpy as np
import pytest

from lamina import metrics as M
from lamina import registry
from lamina.errors import ConfigError, LaminaError, ShapeError
from lamina.recipes import load_recipe

import sklearn.metrics as sk

# 4 positives, 6 negatives; predicted: tp = 2, fn = 2, fp = 1, tn = 5
BINARY_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
BINARY_PRED = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])

# 3 classes: C = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
MULTI_TRUE = np.array([0, 0, 1, 1, 2, 2])
MULTI_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_binary_scores_by_hand():
    assert M.Precision()(BINARY_PRED, BINARY_TRUE) == pytest.approx(2 / 3)
    assert M.Recall()(BINARY_PRED, BINARY_TRUE) == pytest.approx(1 / 2)
    p, r = 2 / 3, 1 / 2
    assert M.F1()(BINARY_PRED, BINARY_TRUE) == pytest.approx(2 / (1 / p + 1 / r))   # the seed's harmonic mean
    assert M.F1()(BINARY_PRED, BINARY_TRUE) == pytest.approx(4 / 7)
    assert M.confusion_matrix(BINARY_PRED, BINARY_TRUE).tolist() == [[5, 1], [2, 2]]


def test_multiclass_scores_by_hand():
    assert M.confusion_matrix(MULTI_PRED, MULTI_TRUE).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per class (P, R, F1): (1/2, 1/2, 1/2), (2/3, 1, 4/5), (1, 1/2, 2/3)
    assert M.Precision("macro")(MULTI_PRED, MULTI_TRUE) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert M.Recall("macro")(MULTI_PRED, MULTI_TRUE) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert M.F1("macro")(MULTI_PRED, MULTI_TRUE) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    for cls in (M.Precision, M.Recall, M.F1):     # micro: tp 4, fp 2, fn 2, the accuracy
        assert cls("micro")(MULTI_PRED, MULTI_TRUE) == pytest.approx(4 / 6)
    assert M.accuracy(MULTI_PRED, MULTI_TRUE) == pytest.approx(4 / 6)


def test_model_outputs_and_label_encodings_give_the_same_scores():
    probs = np.where(BINARY_PRED == 1, 0.8, 0.3)[:, None]             # one sigmoid column
    targets = BINARY_TRUE.astype(np.float64)[:, None]                   # (m, 1) float labels
    assert M.F1()(probs, targets) == pytest.approx(4 / 7)
    scores = np.eye(3)[MULTI_PRED] * 2.0 - 0.5                          # (m, 3) scores, argmax = MULTI_PRED
    one_hot = np.eye(3)[MULTI_TRUE]
    assert M.F1("macro")(scores, one_hot) == pytest.approx(M.F1("macro")(MULTI_PRED, MULTI_TRUE))
    assert M.confusion_matrix(scores, one_hot).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 7])
def test_matches_scikit_learn(seed, k):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, 60)
    y_pred = np.where(rng.uniform(size=60) < 0.6, y_true, rng.integers(0, k, 60))
    np.testing.assert_array_equal(M.confusion_matrix(y_pred, y_true, num_classes=k),
                                  sk.confusion_matrix(y_true, y_pred, labels=list(range(k))))
    oracle = {"precision": sk.precision_score, "recall": sk.recall_score, "f1": sk.f1_score}
    for average in ("macro", "micro") + (("binary",) if k == 2 else ()):
        for cls in (M.Precision, M.Recall, M.F1):
            want = oracle[cls.metric](y_true, y_pred, average=average, zero_division=0)
            assert cls(average)(y_pred, y_true) == pytest.approx(want, abs=1e-12), (cls.metric, average)


def test_binary_positive_label_and_zero_division_match_scikit_learn():
    for pos_label in (0, 1):
        for cls in (M.Precision, M.Recall, M.F1):
            want = {"precision": sk.precision_score, "recall": sk.recall_score,
                    "f1": sk.f1_score}[cls.metric](BINARY_TRUE, BINARY_PRED, pos_label=pos_label)
            assert cls(pos_label=pos_label)(BINARY_PRED, BINARY_TRUE) == pytest.approx(want)
    nothing_positive = np.zeros(10, dtype=np.int64)
    assert M.Precision()(nothing_positive, BINARY_TRUE) == 0.0
    assert sk.precision_score(BINARY_TRUE, nothing_positive, zero_division=0) == 0.0
    assert M.F1()(nothing_positive, BINARY_TRUE) == 0.0
    assert M.Recall()(nothing_positive, nothing_positive) == 0.0     # integer labels, class 1 never occurs
    assert sk.recall_score(nothing_positive, nothing_positive, zero_division=0) == 0.0


def test_macro_skips_classes_absent_from_targets_and_predictions_as_scikit_learn_does():
    y_true, y_pred = np.array([0, 0, 2, 2]), np.array([0, 2, 2, 2])    # class 1 never occurs
    assert M.F1("macro", num_classes=4)(y_pred, y_true) == pytest.approx(
        sk.f1_score(y_true, y_pred, average="macro"))


def test_registered_names_and_variants_build_from_a_recipe():
    assert {"accuracy", "precision", "recall", "f1", "precision_macro", "precision_micro", "recall_macro",
            "recall_micro", "f1_macro", "f1_micro", "multi_label_accuracy"} <= set(registry.names("metrics"))
    f1_macro = registry.get("metrics", "f1_macro")()
    assert f1_macro.name == "f1_macro" and f1_macro.average == "macro"
    assert registry.get("metrics", "recall_micro")().average == "micro"
    assert M.F1(average="macro").name == "f1_macro" and M.F1().name == "f1"
    built = load_recipe("digits-mlp").with_overrides(metrics=["accuracy", "f1_macro", "precision_micro"])
    metrics = built.build_metrics()
    assert metrics["f1_macro"](MULTI_PRED, MULTI_TRUE) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert metrics["precision_micro"].average == "micro"


def test_errors_say_what_went_wrong():
    with pytest.raises(ConfigError, match="pos_label must be class 0 or 1"):
        M.Precision(pos_label=2)
    with pytest.raises(LaminaError, match="needs 2 classes, but the data has 3; use f1_macro or f1_micro"):
        M.F1()(MULTI_PRED, MULTI_TRUE)
    with pytest.raises(ConfigError, match="average must be one of binary, macro, micro"):
        M.Recall("weighted")
    with pytest.raises(ShapeError, match="6 predictions but 5 targets"):
        M.Precision("macro")(MULTI_PRED, MULTI_TRUE[:5])
    with pytest.raises(ShapeError, match=r"classes must lie in \[0, 2\)"):
        M.confusion_matrix(MULTI_PRED, MULTI_TRUE, num_classes=2)


def test_multi_label_accuracy_ignores_unknown_labels():
    outputs = np.array([[0.9, 0.2, 0.7, 0.1],
                        [0.4, 0.6, 0.2, 0.3],
                        [0.8, 0.9, 0.6, 0.2]])
    targets = np.array([[1, 0, np.nan, np.nan],
                        [1, 1, 0, np.nan],
                        [-1, 0, 1, np.nan]])
    # label 0: known on rows 0, 1 -> right, wrong; label 1: rows 0-2 -> right, right, wrong;
    # label 2: rows 1, 2 -> right, right; label 3: never known, skipped
    per_label = M.per_label_accuracy(outputs, targets)
    np.testing.assert_allclose(per_label[:3], [1 / 2, 2 / 3, 1.0])
    assert np.isnan(per_label[3])
    assert M.MultiLabelAccuracy()(outputs, targets) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    # at threshold 0.95 everything is predicted 0: label 0 -> 0/2, label 1 -> 2/3, label 2 -> 1/2
    assert M.MultiLabelAccuracy(threshold=0.95)(outputs, targets) == pytest.approx((0 + 2 / 3 + 1 / 2) / 3)
    with pytest.raises(LaminaError, match="must be 0 or 1"):
        M.MultiLabelAccuracy()(outputs, np.where(np.isnan(targets), 2, targets))
    with pytest.raises(ShapeError):
        M.MultiLabelAccuracy()(outputs[:, :3], targets)


def test_satisficing_bounds_parse_and_check():
    latency = M.Satisficing.parse("latency_ms <= 100")
    assert latency == M.Satisficing("latency_ms", 100.0, "<=")
    assert latency.ok(100.0) and latency.ok(3.2) and not latency.ok(100.5)
    recall = M.Satisficing.parse({"name": "recall", "threshold": 0.9, "direction": ">="})
    assert recall.ok(0.9) and not recall.ok(0.89)
    assert str(recall) == "recall >= 0.9"
    with pytest.raises(ConfigError, match="direction must be"):
        M.Satisficing("latency_ms", 100, "<")
    with pytest.raises(ConfigError, match="NAME <= NUMBER"):
        M.Satisficing.parse("latency_ms below 100")
    with pytest.raises(ConfigError, match="needs 'name' and 'threshold'"):
        M.Satisficing.parse({"name": "latency_ms", "limit": 3})


def test_evaluate_objectives_reports_the_optimizing_metric_beside_the_satisficing_ones():
    values = {"accuracy": 0.97, "f1": 0.91, "latency_ms": 120.0, "model_mb": 4.0}
    report = M.evaluate_objectives(values, "f1", ["latency_ms <= 100", M.Satisficing("model_mb", 10)])
    assert report == {
        "optimizing": {"name": "f1", "value": 0.91},
        "satisficing": {"latency_ms": {"value": 120.0, "threshold": 100.0, "direction": "<=", "ok": False},
                        "model_mb": {"value": 4.0, "threshold": 10.0, "direction": "<=", "ok": True}},
        "satisfied": False}
    assert M.evaluate_objectives(values, "accuracy")["satisfied"] is True
    with pytest.raises(LaminaError, match="no value for metric 'recall'"):
        M.evaluate_objectives(values, "recall")


def test_latency_is_the_median_time_of_one_example_per_call():
    now = [0.0]
    durations = iter([5e-3, 0.002, 0.009, 0.003])           # the first call is the untimed warm-up
    seen = []

    def predict(x):
        seen.append(x.shape)
        now[0] += next(durations)

    X = np.zeros((3, 4))
    assert M.measure_latency_ms(predict, X, warmup=1, clock=lambda: now[0]) == pytest.approx(3.0)
    assert seen == [(1, 4)] * 4
    with pytest.raises(LaminaError, match="at least one example"):
        M.measure_latency_ms(predict, X[:0])
