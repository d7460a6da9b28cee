"""The `lamina` CLI, driven through click's CliRunner and once as a real subprocess."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import lamina
from lamina.cli import cli


def invoke(*args, cwd=None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"lamina, version {lamina.__version__}"
    for command in ([], ["train"], ["backends"], ["plugins"], ["config"], ["gradcheck"], ["recipes"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Usage: " in result.output


def test_backends_lists_cpu_with_its_provider():
    result = invoke("backends")
    assert result.exit_code == 0
    line = next(row for row in result.output.splitlines() if row.startswith("cpu "))
    assert "yes" in line and "cpu (lamina " in line


def test_plugins_lists_what_the_core_registered():
    result = invoke("plugins")
    assert result.exit_code == 0
    assert result.output.startswith(f"lamina {lamina.__version__}")
    assert "recipes:" in result.output and "digits-mlp" in result.output
    assert "backends:      cpu" in result.output         # the kinds in one column, as wide as "augmentations:"


def test_unknown_backend_is_bad_usage_listing_what_exists(tmp_path):
    result = invoke("train", "digits-mlp", "--backend", "cpuu", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "unknown backend 'cpuu'" in result.output and "Did you mean 'cpu'" in result.output
    assert "Available: cpu" in result.output


def test_unknown_recipe_lists_close_matches():
    result = invoke("train", "digit-mlp")
    assert result.exit_code == 2 and "Did you mean 'digits-mlp'" in result.output


def test_bad_option_values_are_usage_errors():
    assert invoke("train", "digits-mlp", "--epochs", "0").exit_code == 2
    assert invoke("train", "digits-mlp", "--lr", "-1").exit_code == 2
    assert invoke("train", "digits-mlp", "--resume").exit_code == 2


@pytest.mark.slow
def test_train_digits_mlp_reaches_97_percent(tmp_path):
    out = tmp_path / "digits"
    result = invoke("train", "digits-mlp", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.97
    assert metrics["train_accuracy"] >= metrics["test_accuracy"] - 0.05
    assert len(metrics["epoch_cost"]) == 40 and metrics["epoch_cost"][-1] < metrics["epoch_cost"][0]
    assert (out / "config.toml").is_file() and (out / "checkpoint" / "checkpoint.safetensors").is_file()
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_breast_cancer_logreg_reaches_95_percent(tmp_path):
    out = tmp_path / "bc"
    result = invoke("train", "breast-cancer-logreg", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] >= 0.95


def test_overrides_resume_and_refusing_to_overwrite(tmp_path):
    out = tmp_path / "run"
    first = invoke("train", "digits-mlp", "--epochs", "2", "--batch-size", "128", "--lr", "0.002",
                   "--seed", "3", "--out", str(out), "--no-progress")
    assert first.exit_code == 0, first.output
    config = (out / "config.toml").read_text()
    assert "epochs = 2" in config and "batch_size = 128" in config and "lr = 0.002" in config

    again = invoke("train", "digits-mlp", "--epochs", "2", "--out", str(out))
    assert again.exit_code == 2 and "already holds a checkpoint" in again.output

    resumed = invoke("train", "digits-mlp", "--epochs", "4", "--batch-size", "128", "--lr", "0.002",
                     "--seed", "3", "--out", str(out), "--resume", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert "epoch   3/4" in resumed.output and "epoch   1/4" not in resumed.output
    assert len(json.loads((out / "metrics.json").read_text())["epoch_cost"]) == 4


def test_train_from_a_toml_recipe_file(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("""
name = "tiny"
[data]
dataset = "digits"
[model]
layers = [{ type = "dense", n_out = 16, activation = "tanh", init = "xavier" }, { type = "dense", n_out = 10 }]
[loss]
name = "softmax_cross_entropy"
[optimizer]
name = "sgd"
lr = 0.5
[training]
epochs = 3
""")
    out = tmp_path / "out"
    result = invoke("train", str(recipe), "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.5


def test_bad_recipe_file_names_the_problem(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[data]\ndataset = "digits"\n[model]\nlayers = [{ type = "dnse", n_out = 3 }]\n'
                      '[loss]\nname = "mse"\n[optimizer]\nname = "sgd"\n')
    result = invoke("train", str(recipe), "--out", str(tmp_path / "o"), "--no-progress")
    assert result.exit_code == 1 and "unknown layer 'dnse'" in result.output and "'dense'" in result.output


def test_gradcheck_command_passes_on_the_builtin_recipes():
    for recipe in ("digits-mlp", "breast-cancer-logreg"):
        result = invoke("gradcheck", recipe)
        assert result.exit_code == 0, result.output
        assert "gradient check ok" in result.output and "worst component" in result.output


def test_real_subprocess_run(tmp_path):
    env = dict(os.environ, LAMINA_BACKEND="cpu")
    result = subprocess.run([sys.executable, "-m", "lamina", "train", "breast-cancer-logreg", "--epochs", "5",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "on backend 'cpu'" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 5


@pytest.mark.slow
def test_digits_mlp_with_batch_norm_dropout_and_a_schedule_reaches_98_percent(tmp_path):
    out = tmp_path / "bn"
    result = invoke("train", "digits-mlp-bn", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] >= 0.98
    config = (out / "config.toml").read_text()
    assert 'type = "batch_norm"' in config and 'type = "dropout"' in config and "[schedule]" in config


def test_gradcheck_switches_dropout_off_and_skips_running_averages(tmp_path):
    recipe = tmp_path / "small-bn.toml"
    recipe.write_text("""
[data]
dataset = "digits"
[model]
layers = [{ type = "dense", n_out = 8 }, { type = "batch_norm" }, { type = "relu" },
          { type = "dropout", keep_prob = 0.5 }, { type = "dense", n_out = 10 }]
[loss]
name = "softmax_cross_entropy"
[optimizer]
name = "adam"
[regularization]
name = "l2"
lambd = 0.5
""")
    result = invoke("gradcheck", str(recipe))
    assert result.exit_code == 0, result.output
    assert "dropout switched off for the check" in result.output and "gradient check ok" in result.output


def test_dense_before_batch_norm_gets_no_bias():
    from lamina.recipes import load_recipe

    model = load_recipe("digits-mlp-bn").build_model(64)
    assert model[0].b is None and model[4].b is None and model[8].b is not None


def test_digits_cnn_recipe_builds_from_image_shapes_and_trains(tmp_path):
    from lamina.recipes import load_recipe

    model = load_recipe("digits-cnn").build_model((8, 8, 1))
    summary = model.summary((8, 8, 1), print_fn=None)
    assert "(None, 8, 8, 16)" in summary and "(None, 2, 2, 32)" in summary and "(None, 128)" in summary
    out = tmp_path / "cnn"
    result = invoke("train", "digits-cnn", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] >= 0.97

    from sklearn.datasets import load_digits

    images = load_digits().data[:10].reshape(-1, 8, 8, 1) / 16.0
    np_path = tmp_path / "images.npy"
    import numpy as np

    np.save(np_path, images)
    predicted = invoke("predict", str(out), str(np_path))
    assert predicted.exit_code == 0, predicted.output
    classes = [int(line.split(",")[0]) for line in predicted.output.strip().splitlines()[1:]]
    assert np.mean(np.array(classes) == load_digits().target[:10]) >= 0.9


def test_gradcheck_of_a_convolutional_recipe(tmp_path):
    recipe = tmp_path / "tiny-cnn.toml"
    recipe.write_text("""
[data]
dataset = "digits"
images = true
[model]
layers = [{ type = "conv2d", n_C = 2, f = 3, stride = 2, activation = "tanh" }, { type = "max_pool2d", f = 2 },
          { type = "flatten" }, { type = "dense", n_out = 10 }]
[loss]
name = "softmax_cross_entropy"
[optimizer]
name = "sgd"
""")
    result = invoke("gradcheck", str(recipe), "--examples", "3")
    assert result.exit_code == 0, result.output
    assert "gradient check ok" in result.output
