"""Sequence tasks that only a recurrent network can learn (issue 5 acceptance): the marker_memory and
delay_echo datasets (labels recomputed here independently), the long-memory and delay-echo recipes
(a [compare] over models, many-to-one and many-to-many heads), short training runs through the CLI."""
import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

import lamina as lm
from lamina import checkpoint
from lamina.cli import cli
from lamina.datasets import delay_echo, marker_memory
from lamina.errors import ConfigError
from lamina.losses import MultiTaskBinaryCrossEntropy
from lamina.metrics import MultiLabelAccuracy
from lamina.nn.recurrent import GRU, LSTM, SimpleRNN
from lamina.recipes import Recipe, load_recipe
from lamina.registry import resolve


def _all(dataset):
    splits = [s for s in (dataset.train, dataset.dev, dataset.test) if s is not None]
    return np.concatenate([s.X for s in splits]), np.concatenate([s.y for s in splits])


# ---- marker_memory: many-to-one, the answer in the first k steps ------------------------------------------
def test_marker_memory_labels_are_the_value_at_the_one_marker_in_the_first_k_steps():
    data = marker_memory(m=400, T=30, k=4, seed=3)
    X, y = _all(data)
    assert X.shape == (400, 30, 2) and y.shape == (400,) and y.dtype.kind == "i"
    assert data.input_shape == (30, 2) and data.num_classes == 2
    assert [len(data.train), len(data.dev), len(data.test)] == [240, 80, 80]
    for x, label in zip(X, y):
        markers = np.flatnonzero(x[:, 1])
        assert len(markers) == 1 and markers[0] < 4
        assert label == (1 if x[markers[0], 0] == 1.0 else 0)
        assert set(np.unique(x[:, 0])) <= {-1.0, 1.0}
    assert 0.4 < y.mean() < 0.6                          # balanced: chance is 50%
    assert abs(X[:, :, 0].mean()) < 0.05                 # the value channel is fair ±1 noise


def test_marker_memory_is_seeded():
    a, b, c = (_all(marker_memory(m=50, T=8, seed=s)) for s in (0, 0, 1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("options", [dict(k=0), dict(T=5, k=6), dict(m=1)])
def test_marker_memory_bad_sizes_are_named(options):
    with pytest.raises(ConfigError, match="marker_memory.*k ≤ T"):
        marker_memory(**options)


# ---- delay_echo: many-to-many, y<t> = x<t − delay> ---------------------------------------------------------
def test_delay_echo_labels_are_the_input_delay_steps_before():
    data = delay_echo(m=60, T=12, delay=5, seed=2)
    X, y = _all(data)
    assert X.shape == (60, 12, 1) and y.shape == (60, 12) and data.input_shape == (12, 1)
    for x, labels in zip(X, y):
        for t in range(12):
            assert labels[t] == (x[t - 5, 0] if t >= 5 else -1.0)
    assert set(np.unique(X)) == {0.0, 1.0}


def test_delay_echo_zero_delay_and_bad_delay():
    X, y = _all(delay_echo(m=10, T=6, delay=0))
    assert np.array_equal(y, X[:, :, 0])
    with pytest.raises(ConfigError, match="delay_echo.*delay < T"):
        delay_echo(T=6, delay=6)


def test_per_step_loss_and_accuracy_leave_out_the_steps_with_nothing_to_echo():
    """multi_task_bce = 1/m Σ_i Σ_{t ≥ delay} L(ŷ<t>, y<t>) and multi_label_accuracy = the mean over scored steps
    of the per-step accuracy, recomputed here with numpy."""
    data = delay_echo(m=40, T=9, delay=3, seed=1)
    y = data.train.y
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.05, 0.95, y.shape)
    expected = -(y * np.log(probs) + (1 - y) * np.log(1 - probs))[:, 3:].sum() / len(y)
    loss = MultiTaskBinaryCrossEntropy()(lm.tensor(probs, dtype="float64"), y)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    per_step = [np.mean((probs[:, t] >= 0.5) == (y[:, t] == 1)) for t in range(3, 9)]
    assert MultiLabelAccuracy()(probs, y) == pytest.approx(np.mean(per_step))


# ---- the recipes: registered, built from TOML, compared by model --------------------------------------------
def test_sequence_datasets_and_recipes_are_registered():
    assert resolve("datasets", "marker_memory") is marker_memory
    assert resolve("datasets", "delay_echo") is delay_echo
    assert {"long-memory", "delay-echo"} <= set(lm.registry.names("recipes"))


def test_long_memory_compares_the_three_cells_with_a_many_to_one_head():
    recipe = load_recipe("long-memory")
    variants = recipe.variants()
    assert list(variants) == ["SimpleRNN", "GRU", "LSTM"]
    for (label, variant), cell in zip(variants.items(), (SimpleRNN, GRU, LSTM)):
        assert variant.compare is None and variant.optimizer == recipe.optimizer
        model = variant.build_model((50, 2), 2)
        rnn = model[0]
        assert type(rnn) is cell and rnn.input_size == 2 and not rnn.return_sequences
        out = model(lm.tensor(np.zeros((3, 50, 2))))
        assert out.shape == (3, 2)                       # a<T_x> only, then the dense head


def test_delay_echo_builds_a_per_step_head():
    recipe = load_recipe("delay-echo")
    model = recipe.build_model((40, 1), 2)
    assert type(model[0]) is LSTM and model[0].input_size == 1 and model[0].return_sequences
    assert model(lm.tensor(np.zeros((4, 40, 1)))).shape == (4, 40)
    for label, variant in recipe.variants().items():     # the dense baseline sees one step at a time
        assert variant.build_model((40, 1), 2)(lm.tensor(np.zeros((4, 40, 1)))).shape == (4, 40), label


def test_wrapped_layers_are_built_from_nested_tables_for_the_same_input():
    """bidirectional and time_distributed take a layer: a nested table gets input_size / n_in like any layer."""
    from lamina.nn.recurrent import Bidirectional, TimeDistributed

    recipe = Recipe.from_dict({
        "data": {"dataset": "delay_echo"}, "loss": {"name": "multi_task_bce"}, "optimizer": {"name": "adam"},
        "model": {"layers": [
            {"type": "bidirectional", "layer": {"type": "gru", "hidden_size": 5, "return_sequences": True}},
            {"type": "time_distributed", "layer": {"type": "dense", "n_out": 1, "activation": "sigmoid"}},
            {"type": "flatten"}]}})
    model = recipe.build_model((7, 3), 2)
    birnn, head = model[0], model[1]
    assert type(birnn) is Bidirectional and type(head) is TimeDistributed
    assert birnn.forward_layer.input_size == 3 and birnn.forward_layer.return_sequences
    assert head.layer.n_in == 10                        # forward and backward a<t> concatenated
    x = lm.tensor(np.random.default_rng(0).standard_normal((4, 7, 3)))
    y = model(x).numpy()
    expected = head.layer(birnn(x)).numpy()[..., 0]     # Dense applies per step on (m, T, 2·n_a) directly
    assert y.shape == (4, 7) and np.allclose(y, expected)
    with pytest.raises(ConfigError, match=r"layer 0 layer: cannot build layer 'gru'"):
        Recipe.from_dict(dict(recipe.to_dict(), model={"layers": [
            {"type": "bidirectional", "layer": {"type": "gru", "units": 5}}]})).build_model((7, 3))


BASE = {"data": {"dataset": "marker_memory"}, "loss": {"name": "softmax_cross_entropy"},
        "optimizer": {"name": "adam"},
        "model": {"layers": [{"type": "gru", "hidden_size": 4}, {"type": "dense", "n_out": 2}]}}
RNN = [{"type": "simple_rnn", "hidden_size": 4}, {"type": "dense", "n_out": 2}]


def test_model_variants_are_labelled_by_their_first_layer_unless_labelled():
    recipe = Recipe.from_dict(dict(BASE, compare={"model": [{"layers": RNN}, BASE["model"],
                                                            {"label": "wide", "layers": RNN}]}))
    variants = recipe.variants()
    assert list(variants) == ["simple_rnn", "gru", "wide"]
    assert variants["wide"].model == {"layers": RNN}      # the label is not a [model] setting
    assert Recipe.from_dict(variants["gru"].to_dict()).compare is None


@pytest.mark.parametrize("compare,message", [
    ({"model": [{"layers": RNN}]}, r"\[compare\] takes one key"),
    ({"model": [{"layers": RNN}], "optimizer": [{"name": "sgd"}, {"name": "adam"}]}, r"\[compare\] takes one key"),
    ({"model": [{"layers": RNN}, {"units": 3}]}, r"\[compare\] model 1: \[model\] needs either 'layers'"),
    ({"model": [{"layers": RNN}, {"layers": RNN}]}, r"distinct labels.*'simple_rnn', 'simple_rnn'"),
])
def test_model_comparisons_are_validated(compare, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(dict(BASE, compare=compare))


# ---- short runs: every variant trains, curves are written -------------------------------------------------
def _small(name, tmp_path, **data):
    raw = copy.deepcopy(load_recipe(name).to_dict())   # to_dict shares its tables with the registered recipe
    raw["data"].update(data)
    path = tmp_path / f"{name}.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    return path


def test_long_memory_short_run_writes_one_plot_for_the_three_cells(tmp_path):
    out = tmp_path / "run"
    path = _small("long-memory", tmp_path, m=120, T=10)
    result = CliRunner().invoke(cli, ["train", str(path), "--epochs", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["variants"]) == ["SimpleRNN", "GRU", "LSTM"]
    for label in ("SimpleRNN", "GRU", "LSTM"):
        run = json.loads((out / label / "metrics.json").read_text())
        assert run["epochs"] == 1 and 0.0 <= run["dev_accuracy"] <= 1.0
        assert checkpoint.exists(out / label / "checkpoint")
    assert metrics["variants"]["GRU"]["num_parameters"] == 3 * (2 * 32 + 32 * 32 + 2 * 32) + 32 * 2 + 2
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_delay_echo_short_run_trains_on_per_step_labels(tmp_path):
    out = tmp_path / "run"
    path = _small("delay-echo", tmp_path, m=80, T=12, delay=3)
    result = CliRunner().invoke(cli, ["train", str(path), "--epochs", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert list(json.loads((out / "metrics.json").read_text())["variants"]) == ["Dense", "SimpleRNN", "LSTM"]
    for label in ("Dense", "SimpleRNN", "LSTM"):
        run = json.loads((out / label / "metrics.json").read_text())
        assert run["epochs"] == 2 and len(run["history"]["dev_metrics"]) == 2
        assert 0.0 <= run["dev_multi_label_accuracy"] <= 1.0
        assert (out / label / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


# ---- learning: the tasks need memory, and the recipes' models have it ---------------------------------------
def _train(recipe, label, tmp_path, **data):
    from lamina.run import train_recipe

    variant = recipe.variants()[label]
    variant.data.update(data)
    return train_recipe(variant, tmp_path / label, progress=False, echo=lambda line: None, plots=False)


def test_a_short_echo_is_learned_by_a_simple_rnn_and_not_without_recurrence(tmp_path):
    recipe = load_recipe("delay-echo").with_overrides(epochs=8)
    small = dict(m=600, T=10, delay=3)
    assert _train(recipe, "SimpleRNN", tmp_path, **small)["dev_multi_label_accuracy"] > 0.95
    assert _train(recipe, "Dense", tmp_path, **small)["dev_multi_label_accuracy"] < 0.6


@pytest.mark.slow
def test_long_memory_lstm_learns_what_the_simple_rnn_does_not(tmp_path):
    """The acceptance run of `long-memory`, cut to 6 epochs: the LSTM is at 100% by epoch 3 on seeds 0 and 1,
    the SimpleRNN still near chance (its full 30-epoch runs end at 56% and 65%)."""
    recipe = load_recipe("long-memory").with_overrides(epochs=6)
    assert _train(recipe, "LSTM", tmp_path)["dev_accuracy"] > 0.95
    assert _train(recipe, "SimpleRNN", tmp_path)["dev_accuracy"] < 0.7
