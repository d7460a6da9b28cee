"""Input normalization (§2.6): statistics fitted on the training set by hand and against
scikit-learn's StandardScaler, applied unchanged to dev/test, and stored as plain arrays."""
import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from sklearn.preprocessing import StandardScaler

import lamina as lm
from lamina.preprocessing import Standardizer


def test_by_hand():
    """Features x1 ∈ {1, 3}, x2 ∈ {10, 30}: μ = [2, 20], σ = [1, 10], so both become ±1."""
    scaler = Standardizer().fit(np.array([[1.0, 10.0], [3.0, 30.0]]))
    np.testing.assert_array_equal(scaler.mean, [2.0, 20.0])
    np.testing.assert_array_equal(scaler.std, [1.0, 10.0])
    np.testing.assert_array_equal(scaler.transform(np.array([[1.0, 10.0], [3.0, 30.0]])), [[-1, -1], [1, 1]])
    np.testing.assert_array_equal(scaler.transform(np.array([[4.0, 0.0]])), [[2.0, -2.0]])


def test_matches_sklearn_standard_scaler():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)) * [1, 10, 100, 0.01, 5, 1] + [0, -3, 1000, 2, 0, 0]
    X[:, 5] = 4.0                                           # constant on the training set: σ = 0
    ours, theirs = Standardizer().fit(X), StandardScaler().fit(X)
    np.testing.assert_allclose(ours.mean, theirs.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.std, theirs.scale_, rtol=1e-12)
    dev = rng.standard_normal((30, 6)) * 3
    np.testing.assert_allclose(ours.transform(dev), theirs.transform(dev), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(dev)), dev, rtol=1e-10, atol=1e-12)


def test_training_statistics_are_applied_unchanged_to_dev_and_test():
    rng = np.random.default_rng(1)
    train, dev = rng.normal(5.0, 2.0, (500, 3)), rng.normal(8.0, 4.0, (100, 3))
    scaler = Standardizer()
    z_train = scaler.fit_transform(train)
    np.testing.assert_allclose(z_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_train.std(axis=0), 1.0, rtol=1e-12)
    z_dev = scaler.transform(dev)
    np.testing.assert_allclose(z_dev, (dev - train.mean(axis=0)) / train.std(axis=0), rtol=1e-12)
    assert np.all(z_dev.mean(axis=0) > 1.0)                 # not re-centred on the dev set's own mean


def test_dtypes_and_image_shaped_examples():
    X = np.random.default_rng(2).uniform(0, 255, (10, 4, 4, 3)).astype(np.float32)
    scaler = Standardizer().fit(X)
    assert scaler.mean.shape == (4, 4, 3) and scaler.mean.dtype == np.float64
    out = scaler.transform(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    assert Standardizer().fit(np.arange(6).reshape(3, 2)).transform(np.arange(6).reshape(3, 2)).dtype == np.float32


def test_state_dict_round_trip_through_safetensors():
    rng = np.random.default_rng(3)
    scaler = Standardizer().fit(rng.standard_normal((50, 4)) * 3 + 1)
    state = scaler.state_dict()
    assert set(state) == {"mean", "std"} and all(isinstance(v, np.ndarray) for v in state.values())
    restored = Standardizer.from_state_dict(st_load(st_save(state)))
    X = rng.standard_normal((7, 4))
    np.testing.assert_array_equal(restored.transform(X), scaler.transform(X))
    state["mean"][0] = 99.0                                 # state_dict hands out copies
    assert scaler.mean[0] != 99.0


def test_errors():
    with pytest.raises(lm.LaminaError, match="call fit"):
        Standardizer().transform(np.ones((2, 2)))
    with pytest.raises(lm.ShapeError, match=r"examples in rows"):
        Standardizer().fit(np.ones(5))
    scaler = Standardizer().fit(np.ones((3, 4)))
    with pytest.raises(lm.ShapeError, match=r"fitted on examples of shape \(4,\), got X of shape \(2, 5\)"):
        scaler.transform(np.ones((2, 5)))
    with pytest.raises(lm.CheckpointError, match="expected the arrays 'mean' and 'std'"):
        Standardizer.from_state_dict({"mean": np.zeros(3)})
    with pytest.raises(lm.CheckpointError, match="positive"):
        Standardizer.from_state_dict({"mean": np.zeros(2), "std": np.array([1.0, 0.0])})
