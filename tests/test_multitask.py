"""Multi-task learning loss (§3.10): the sum over labels of logistic losses with unknown labels
(NaN or −1) left out; by hand, float64 gradient check, PyTorch parity, and training."""
import numpy as np
import pytest

import lamina as lm
from lamina import registry
from lamina.data import Split
from lamina.errors import LaminaError, ShapeError
from lamina.losses import BinaryCrossEntropy, MultiTaskBinaryCrossEntropy
from lamina.metrics import MultiLabelAccuracy
from lamina.training import fit, predict

import torch

PROBS = np.array([[0.9, 0.2, 0.6],
                  [0.3, 0.8, 0.5]])
TARGETS = np.array([[1.0, np.nan, 0.0],
                    [0.0, 1.0, -1.0]])


@pytest.fixture
def float64():
    with lm.set_default_dtype("float64"):
        yield


def _random(seed=0, m=7, c=4, unknown=0.3):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.05, 0.95, (m, c))
    y = (rng.uniform(size=(m, c)) < 0.5).astype(np.float64)
    y[rng.uniform(size=(m, c)) < unknown] = np.nan
    y[rng.uniform(size=(m, c)) < unknown / 2] = -1
    return probs, y


def test_by_hand(float64):
    # known entries: (0,0) y=1 a=.9, (0,2) y=0 a=.6, (1,0) y=0 a=.3, (1,1) y=1 a=.8
    terms = -(np.log(0.9) + np.log(0.4) + np.log(0.7) + np.log(0.8))
    J = MultiTaskBinaryCrossEntropy()(lm.tensor(PROBS), TARGETS)
    assert J.item() == pytest.approx(terms / 2, rel=1e-12)               # 1/m, m = 2 examples
    J_labels = MultiTaskBinaryCrossEntropy(normalize="labels")(lm.tensor(PROBS), lm.tensor(TARGETS))
    assert J_labels.item() == pytest.approx(terms / 4, rel=1e-12)        # 4 known labels


def test_unknown_labels_add_nothing_and_get_no_gradient(float64):
    probs = lm.tensor(PROBS, requires_grad=True)
    MultiTaskBinaryCrossEntropy()(probs, TARGETS).backward()
    grad = probs.grad.numpy()
    assert grad[0, 1] == 0.0 and grad[1, 2] == 0.0
    assert grad[0, 0] == pytest.approx(-1 / 0.9 / 2) and grad[0, 2] == pytest.approx(1 / 0.4 / 2)
    moved = PROBS.copy()
    moved[0, 1], moved[1, 2] = 0.01, 0.99
    assert (MultiTaskBinaryCrossEntropy()(lm.tensor(moved), TARGETS).item()
            == pytest.approx(MultiTaskBinaryCrossEntropy()(lm.tensor(PROBS), TARGETS).item(), rel=1e-14))


def test_without_unknowns_it_is_c_times_the_mean_bce(float64):
    probs, y = _random(unknown=0.0)
    multi = MultiTaskBinaryCrossEntropy()(lm.tensor(probs), y).item()
    assert multi == pytest.approx(y.shape[1] * BinaryCrossEntropy()(lm.tensor(probs), lm.tensor(y)).item(), rel=1e-12)


@pytest.mark.parametrize("normalize", ["examples", "labels"])
@pytest.mark.parametrize("seed", range(3))
def test_gradient_check(float64, normalize, seed):
    probs, y = _random(seed)
    loss = MultiTaskBinaryCrossEntropy(normalize)
    result = lm.gradcheck(lambda p: loss(p, y), [lm.tensor(probs)])
    assert result.passed, str(result)
    logits = lm.tensor(np.random.default_rng(seed).standard_normal(probs.shape))
    through_sigmoid = lm.gradcheck(lambda z: loss(lm.F.sigmoid(z), y), [logits])
    assert through_sigmoid.passed, str(through_sigmoid)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("normalize", ["examples", "labels"])
@pytest.mark.parametrize("seed", range(3))
def test_parity_with_torch_bce_and_a_mask(dtype, rtol, normalize, seed):
    probs, y = _random(seed)
    probs = probs.astype(dtype)
    mask = ~np.isnan(y) & (y != -1)
    with lm.set_default_dtype(dtype):
        ours = lm.tensor(probs, requires_grad=True)
        J = MultiTaskBinaryCrossEntropy(normalize)(ours, y)
        J.backward()
    assert J.dtype == np.dtype(dtype) and ours.grad.dtype == np.dtype(dtype)
    theirs = torch.tensor(probs, requires_grad=True)
    total = torch.nn.functional.binary_cross_entropy(theirs, torch.tensor(np.where(mask, y, 0.0).astype(dtype)),
                                                     weight=torch.tensor(mask.astype(dtype)), reduction="sum")
    T = total / float(len(probs) if normalize == "examples" else mask.sum())
    T.backward()
    assert J.item() == pytest.approx(T.item(), rel=rtol)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=rtol, atol=rtol * 1e-3)


def test_errors():
    loss = MultiTaskBinaryCrossEntropy()
    with pytest.raises(ShapeError, match="must both have shape"):
        loss(lm.tensor(PROBS), TARGETS[:, :2])
    with pytest.raises(LaminaError, match=r"known targets must lie in \[0, 1\]"):
        loss(lm.tensor(PROBS), np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]]))
    with pytest.raises(LaminaError, match="normalize must be"):
        MultiTaskBinaryCrossEntropy("mean")


def test_registered_and_trains_a_multi_task_model_with_missing_labels():
    assert isinstance(registry.get("losses", "multi_task_bce")(), MultiTaskBinaryCrossEntropy)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 4))
    y = (X[:, :3] + 0.3 * X[:, 3:] > 0).astype(np.float64)      # three tasks, each one feature's sign
    hidden = y.copy()
    hidden[rng.uniform(size=y.shape) < 0.3] = np.nan             # 30% of the labels unknown
    train, dev = Split(X[:500], hidden[:500]), Split(X[500:], y[500:])
    lm.manual_seed(0)
    model = lm.nn.Sequential(lm.nn.Dense(4, 16, activation="relu"), lm.nn.Dense(16, 3, activation="sigmoid"))
    history = fit(model, MultiTaskBinaryCrossEntropy(), lm.optim.Adam(model.parameters(), lr=0.02), train, dev,
                  epochs=15, batch_size=50, metrics={"multi_label_accuracy": MultiLabelAccuracy()}, progress=False)
    assert history.epoch_cost[-1] < 0.5 * history.epoch_cost[0]
    assert MultiLabelAccuracy()(predict(model, dev.X), dev.y) > 0.9
    assert history.dev_metrics[-1]["multi_label_accuracy"] > 0.9
