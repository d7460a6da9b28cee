"""Schedules, regularization, clipping, early stopping and batch modes in the training loop and recipes."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import lamina as lm
from lamina import checkpoint
from lamina.cli import cli
from lamina.data import Split
from lamina.early_stopping import EarlyStopping
from lamina.errors import ConfigError
from lamina.recipes import Recipe
from lamina.training import fit


def _problem(seed=0, m=96):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 5))
    y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
    cut = 2 * m // 3
    return Split(X[:cut], y[:cut]), Split(X[cut:], y[cut:])


def _model(seed=0):
    lm.manual_seed(seed)
    return lm.nn.Sequential(lm.nn.Dense(5, 16, activation="relu"), lm.nn.Dense(16, 2))


LOSS = lm.losses.SoftmaxCrossEntropy()


def test_schedule_sets_the_rate_of_every_epoch():
    train, dev = _problem()
    model = _model()
    opt = lm.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    fit(model, LOSS, opt, train, dev, epochs=4, batch_size=32, progress=False,
        schedule=lambda epoch, lr0: lr0 / (1 + epoch),
        on_epoch_end=lambda epoch, history: seen.append(opt.lr))
    assert seen == pytest.approx([0.5, 0.25, 0.5 / 3, 0.125])


def test_regularizer_term_is_part_of_the_cost_and_the_gradient():
    train, _ = _problem()
    lambd = 0.7
    l2 = lambda model, m: sum((p * p).sum() for p in model.parameters() if p.ndim == 2) * (lambd / (2 * m))  # noqa: E731
    plain, regularized = _model(), _model()
    h_plain = fit(plain, LOSS, lm.optim.SGD(plain.parameters(), lr=0.1), train, epochs=1,
                  batch_size=len(train), progress=False)
    h_reg = fit(regularized, LOSS, lm.optim.SGD(regularized.parameters(), lr=0.1), train, epochs=1,
                batch_size=len(train), regularizer=l2, progress=False)
    fresh = _model()
    term = float(l2(fresh, len(train)).item())
    assert h_reg.iteration_cost[0] == pytest.approx(h_plain.iteration_cost[0] + term, rel=1e-5)
    # weight decay: W_reg = W_plain - lr·(λ/m)·W0 after one full-batch step
    W0 = fresh[0].W.numpy()
    np.testing.assert_allclose(regularized[0].W.numpy(), plain[0].W.numpy() - 0.1 * lambd / len(train) * W0,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(regularized[0].b.numpy(), plain[0].b.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_sees_the_gradients_before_each_step():
    train, _ = _problem()
    model = _model()
    norms = []

    def clip(params):
        norms.append(max(float(np.abs(p.grad.numpy()).max()) for p in params))
        for p in params:
            p.grad = p.grad * 0.0

    before = [p.numpy().copy() for p in model.parameters()]
    fit(model, LOSS, lm.optim.SGD(model.parameters(), lr=0.1), train, epochs=1, batch_size=16, clip=clip,
        progress=False)
    assert len(norms) == 4 and all(n > 0 for n in norms)
    for a, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, p.numpy())        # zeroed gradients: no update


def test_early_stopping_restores_the_best_weights_and_survives_resume(tmp_path):
    train, dev = _problem()
    scores = iter([0.5, 0.8, 0.7, 0.6, 0.9, 0.9])
    stopper = EarlyStopping(metric="accuracy", patience=2)
    real_update = stopper.update
    snapshots = {}

    def scripted(epoch, dev_metrics, model):
        snapshots[epoch] = model.state_dict()
        return real_update(epoch, dict(dev_metrics, accuracy=next(scores)), model)

    stopper.update = scripted
    model = _model()
    history = fit(model, LOSS, lm.optim.Adam(model.parameters(), lr=0.01), train, dev, epochs=6,
                  batch_size=16, early_stopping=stopper, checkpoint_dir=tmp_path, progress=False)
    assert len(history.epoch_cost) == 4 and stopper.best_epoch == 2
    for name, value in snapshots[2].items():
        np.testing.assert_array_equal(dict(model.named_parameters())[name].numpy(), value)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["metadata"]
    assert saved["stopped_early"] and saved["early_stopping"]["best_epoch"] == 2
    resumed = _model(seed=9)
    again = fit(resumed, LOSS, lm.optim.Adam(resumed.parameters(), lr=0.01), train, dev, epochs=6,
                batch_size=16, early_stopping=EarlyStopping(metric="accuracy", patience=2),
                checkpoint_dir=tmp_path, resume=True, progress=False)
    assert len(again.epoch_cost) == 4          # already stopped: nothing more to train


def test_early_stopping_on_cost_prefers_lower_values():
    stopper = EarlyStopping(metric="cost", patience=1)
    model = _model()
    assert not stopper.update(1, {"cost": 1.0}, model)
    assert not stopper.update(2, {"cost": 0.5}, model) and stopper.best_epoch == 2
    assert stopper.update(3, {"cost": 0.6}, model)
    with pytest.raises(ConfigError, match="watches 'f1'"):
        EarlyStopping(metric="f1").update(1, {"cost": 1.0}, model)


def test_early_stopping_on_perplexity_prefers_lower_values_as_its_metric_says():
    stopper = EarlyStopping(metric="perplexity", patience=1)
    model = _model()
    assert not stopper.update(1, {"perplexity": 20.0}, model)
    assert not stopper.update(2, {"perplexity": 12.0}, model) and stopper.best_epoch == 2
    assert stopper.update(3, {"perplexity": 13.0}, model) and stopper.best_epoch == 2
    assert EarlyStopping(metric="accuracy").sign == 1.0 and EarlyStopping(metric="not-registered").sign == 1.0


def test_checkpoint_keeps_the_rng_state_for_exact_resumption(tmp_path):
    model = _model()
    backend = lm.get_backend()
    backend.manual_seed(4)
    state = backend.rng_state()
    expected = backend.random_uniform((3,), np.float64)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.random_uniform((3,), np.float64), expected)
    train, _ = _problem()
    fit(model, LOSS, lm.optim.SGD(model.parameters(), lr=0.1), train, epochs=1, batch_size=32,
        checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["metadata"]["rng_state"] is not None


BASE = {"data": {"dataset": "digits"}, "model": {"layers": [{"type": "dense", "n_out": 10}]},
        "loss": {"name": "softmax_cross_entropy"}, "optimizer": {"name": "sgd", "lr": 0.1}}


@pytest.mark.parametrize("size, m, expected", [("full", 300, 300), ("stochastic", 300, 1), (32, 300, 32)])
def test_batch_modes(size, m, expected):
    recipe = Recipe.from_dict(dict(BASE, training={"batch_size": size}))
    assert recipe.batch_size(m) == expected


@pytest.mark.parametrize("training, message", [
    ({"batch_size": "half"}, "batch_size must be a positive integer or one of 'full', 'stochastic'"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"clip_nrom": 1.0}, "Did you mean 'clip_norm'"),
])
def test_bad_training_settings_are_named(training, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(dict(BASE, training=training))


def test_optional_sections_need_a_name_and_round_trip():
    with pytest.raises(ConfigError, match=r"\[schedule\] needs 'name'"):
        Recipe.from_dict(dict(BASE, schedule={"decay_rate": 1.0}))
    recipe = Recipe.from_dict(dict(BASE, schedule={"name": "x", "k": 1}, regularization={"name": "l2", "lambd": 0.1}))
    again = Recipe.from_dict(recipe.to_dict())
    assert again.schedule == {"name": "x", "k": 1} and again.regularization == {"name": "l2", "lambd": 0.1}
    assert "clip_norm" not in recipe.to_dict()["training"]


def test_cli_batch_size_modes_and_predict(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", "breast-cancer-logreg", "--epochs", "3", "--batch-size", "stochastic",
                                 "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "batches of 1" in result.output
    assert runner.invoke(cli, ["train", "digits-mlp", "--batch-size", "half"]).exit_code == 2

    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    np.save(tmp_path / "x.npy", data.data[:20])
    result = runner.invoke(cli, ["predict", str(out), str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "class,p" and len(lines) == 21
    predicted = np.array([int(line.split(",")[0]) for line in lines[1:]])
    assert np.mean(predicted == data.target[:20]) >= 0.9          # raw inputs, normalized from the checkpoint
    assert {"normalizer/mean", "normalizer/std"} <= set(checkpoint.extra_arrays(out / "checkpoint"))


def test_compare_recipe_trains_each_optimizer_and_plots_them_together(tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["train", "digits-optimizers", "--epochs", "2", "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["variants"]) == ["adam", "momentum", "rmsprop"]
    for label in ("momentum", "rmsprop", "adam"):
        assert checkpoint.exists(out / label / "checkpoint")
        assert json.loads((out / label / "metrics.json").read_text())["epochs"] == 2
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_section_is_validated():
    with pytest.raises(ConfigError, match=r"\[compare\] takes one key"):
        Recipe.from_dict(dict(BASE, compare={"optimizer": [{"name": "sgd"}]}))


def test_optimizing_and_satisficing_metrics_are_reported(tmp_path):
    recipe = tmp_path / "objectives.toml"
    recipe.write_text("""
name = "objectives"
[data]
dataset = "breast_cancer"
normalize = true
[model]
layers = [{ type = "dense", n_out = 1, activation = "sigmoid" }]
[loss]
name = "binary_cross_entropy"
[optimizer]
name = "sgd"
lr = 0.1
[training]
epochs = 3
metrics = ["accuracy", "f1"]
optimizing = "f1"
satisficing = ["latency_ms <= 10000", "accuracy >= 0.999"]
""")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(recipe), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    objectives = json.loads((out / "metrics.json").read_text())["objectives"]
    assert objectives["optimizing"]["name"] == "f1"
    assert objectives["satisficing"]["latency_ms"]["ok"] is True
    assert objectives["satisficing"]["accuracy"]["ok"] is False and objectives["satisfied"] is False
    assert "dev f1" in result.output and "(optimizing)" in result.output and "NOT MET" in result.output


def test_split_ratios_and_a_training_dev_set_from_the_recipe(tmp_path):
    recipe = Recipe.from_dict(dict(BASE, data={"dataset": "digits", "split": "98/1/1", "train_dev": 0.1}))
    data = recipe.load_data()
    assert (len(data.dev), len(data.test)) == (18, 18)
    assert len(data.train) + len(data.train_dev) == 1797 - 36 and len(data.train_dev) == round(0.1 * 1761)
    path = tmp_path / "r.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(dict(BASE, data={"dataset": "digits", "train_dev": 100},
                                       training={"epochs": 1})))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train_dev_accuracy", "train_dev_cost"} <= set(metrics)


@pytest.mark.parametrize("split, sizes", [("70/30", (1258, 539, None)), ("70/30/0", (1258, 539, None)),
                                          ("60/20/20", (1078, 360, 359))])
def test_two_part_splits_have_no_test_set(split, sizes, tmp_path):
    recipe = Recipe.from_dict(dict(BASE, data={"dataset": "digits", "split": split}, training={"epochs": 1}))
    data = recipe.load_data()
    assert (len(data.train), len(data.dev), data.test and len(data.test)) == sizes
    from lamina.run import train_recipe

    results = train_recipe(recipe, tmp_path / "run", progress=False, echo=lambda line: None)
    assert ("test_accuracy" in results) == (sizes[2] is not None)


def test_bad_split_is_a_config_error():
    with pytest.raises(ConfigError, match="two .* or three"):
        Recipe.from_dict(dict(BASE, data={"dataset": "digits", "split": "50/20/20/10"})).load_data()
