"""The training loop: resumption, divergence, and checkpoints that are atomic and verified."""
import json

import numpy as np
import pytest

import lamina as lm
from lamina import checkpoint
from lamina.data import Split, minibatches
from lamina.errors import CheckpointError, TrainingDiverged
from lamina.training import fit


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((96, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return Split(X[:64], y[:64]), Split(X[64:], y[64:])


def _model_and_optimizer(seed=0):
    lm.manual_seed(seed)
    model = lm.nn.Sequential(lm.nn.Dense(5, 8, activation="relu"), lm.nn.Dense(8, 2))
    return model, lm.optim.Adam(model.parameters(), lr=0.01)


def test_fit_learns_and_records_history():
    train, dev = _problem()
    model, opt = _model_and_optimizer()
    history = fit(model, lm.losses.SoftmaxCrossEntropy(), opt, train, dev, epochs=15, batch_size=16,
                  metrics={"accuracy": lm.metrics.Accuracy()}, progress=False)
    assert len(history.epoch_cost) == 15 and len(history.iteration_cost) == 15 * 4
    assert history.epoch_cost[-1] < 0.5 * history.epoch_cost[0]
    assert history.dev_metrics[-1]["accuracy"] > 0.8


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    train, dev = _problem()
    loss = lm.losses.SoftmaxCrossEntropy()
    model, opt = _model_and_optimizer()
    full = fit(model, loss, opt, train, dev, epochs=4, batch_size=16, progress=False)

    first, opt1 = _model_and_optimizer()
    fit(first, loss, opt1, train, dev, epochs=2, batch_size=16, checkpoint_dir=tmp_path, progress=False)
    resumed, opt2 = _model_and_optimizer(seed=123)      # different init: the checkpoint must win
    history = fit(resumed, loss, opt2, train, dev, epochs=4, batch_size=16, checkpoint_dir=tmp_path,
                  resume=True, progress=False)
    assert history.epoch_cost == pytest.approx(full.epoch_cost, rel=1e-6)
    for (name, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, err_msg=name)


def test_nan_loss_stops_training_naming_the_epoch():
    train, dev = _problem()
    train.X[10:, 0] = np.nan
    model, opt = _model_and_optimizer()
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, batch \d+"):
        fit(model, lm.losses.SoftmaxCrossEntropy(), opt, train, dev, epochs=2, batch_size=16, progress=False)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model, opt = _model_and_optimizer()
    train, _ = _problem()
    fit(model, lm.losses.SoftmaxCrossEntropy(), opt, train, epochs=1, batch_size=32, progress=False)
    checkpoint.save(tmp_path, model, opt, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]

    other, other_opt = _model_and_optimizer(seed=5)
    assert checkpoint.load(tmp_path, other, other_opt) == {"epoch": 1}
    for (name, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    assert other_opt.step_count == opt.step_count

    arrays = tmp_path / "checkpoint.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.load(tmp_path, other)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load(tmp_path, other)


def test_checkpoint_of_a_different_model_is_refused(tmp_path):
    model, opt = _model_and_optimizer()
    checkpoint.save(tmp_path, model, opt)
    bigger = lm.nn.Sequential(lm.nn.Dense(5, 9, activation="relu"), lm.nn.Dense(9, 2))
    with pytest.raises(CheckpointError, match=r"parameter '0.W' has shape \(5, 9\) in the model but \(5, 8\)"):
        checkpoint.load(tmp_path, bigger)


def test_no_temporary_files_are_left_behind(tmp_path):
    model, opt = _model_and_optimizer()
    for _ in range(3):
        checkpoint.save(tmp_path, model, opt)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["format_version"] == 1


def test_minibatches_cover_every_example_once_and_reshuffle():
    X, y = np.arange(10)[:, None], np.arange(10)
    first = [b for _, b in minibatches(X, y, 4, seed=1)]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(np.concatenate(first)) == list(range(10))
    second = np.concatenate([b for _, b in minibatches(X, y, 4, seed=2)])
    assert not np.array_equal(np.concatenate(first), second)
    assert list(np.concatenate([b for _, b in minibatches(X, y, 4, shuffle=False)])) == list(range(10))


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    """0666 less the umask, as open(path, "w") gives (not a temporary file's 0600); a replaced file keeps its own."""
    import os

    from lamina.files import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "curves.txt", "a")
        assert (tmp_path / "curves.txt").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "curves.txt", 0o600)
        atomic_write(tmp_path / "curves.txt", "b")
        assert (tmp_path / "curves.txt").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "curves.txt").read_text() == "b" and os.listdir(tmp_path) == ["curves.txt"]
    finally:
        os.umask(umask)
