"""The convolutional digits recipes: digits-cnn and digits-lenet5 (a [model] builder from lamina.models on
the digits upsampled to 32×32). They load, build, train a shortened run that writes its learning curve,
and the full digits-cnn run reaches 98.5% test accuracy (marked slow)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import lamina as lm
from lamina.cli import cli
from lamina.datasets import digits
from lamina.errors import ConfigError
from lamina.nn import AvgPool2D, Conv2D, Dense, MaxPool2D
from lamina.recipes import Recipe, load_recipe, model_builders
from lamina.run import TrainedModel, train_recipe


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def recipe_dict(**model):
    return {"data": {"dataset": "digits", "images": True}, "model": model,
            "loss": {"name": "softmax_cross_entropy"}, "optimizer": {"name": "adam", "lr": 0.002}}


# ---- digits at 32×32 -----------------------------------------------------------------------------------------
def test_digits_upsampled_by_whole_pixels():
    small, large = digits(images=True), digits(images=True, size=32)
    assert large.train.X.shape == (len(small.train), 32, 32, 1) and large.input_shape == (32, 32, 1)
    for split in ("train", "dev", "test"):
        a, b = getattr(small, split), getattr(large, split)
        np.testing.assert_array_equal(a.y, b.y)                           # the same split, the same labels
        for di in range(4):                                               # each pixel is a 4×4 block
            for dj in range(4):
                np.testing.assert_array_equal(b.X[:, di::4, dj::4], a.X)
    flat = digits(size=16)
    assert flat.train.X.shape == (len(small.train), 256)
    np.testing.assert_array_equal(flat.train.X.reshape(-1, 16, 16)[:, ::2, ::2], small.train.X[..., 0])
    np.testing.assert_array_equal(digits(size=8).train.X, digits().train.X)


@pytest.mark.parametrize("size", [0, 12, -8])
def test_digits_size_must_be_a_multiple_of_8(size):
    with pytest.raises(ConfigError, match=f"dataset 'digits': size must be a positive multiple of 8 .*got {size}"):
        digits(size=size)


# ---- model builders in recipes -------------------------------------------------------------------------------
def test_builders_are_lamina_models():
    from lamina import models

    assert model_builders() == {name: getattr(models, name) for name in models.__all__}
    assert "lenet5" in model_builders() and "resnet18" in model_builders()


def test_a_recipe_builds_a_named_architecture():
    recipe = Recipe.from_dict(recipe_dict(builder="lenet5", variant="modern", num_classes=7))
    model = recipe.build_model((32, 32, 1))
    assert isinstance(model[1], MaxPool2D) and model[0].activation_name == "relu"
    assert model.output_shape((None, 32, 32, 1)) == (None, 7)
    assert model(lm.tensor(np.zeros((2, 32, 32, 1)))).shape == (2, 7)
    assert recipe.to_dict()["model"] == {"builder": "lenet5", "variant": "modern", "num_classes": 7}


@pytest.mark.parametrize("model,match", [
    ({"builder": ["lenet5"]}, r"builder must be the name of a model builder, got \['lenet5'\]"),
    ({"builder": "lenet5", "layers": [{"type": "flatten"}]}, "needs either 'layers' .* or 'builder' .*got both"),
    ({}, "needs either 'layers' .* or 'builder' .*got neither"),
    ({"layers": []}, "layers must be a non-empty list of tables"),
])
def test_bad_model_sections_say_what_is_wrong(model, match):
    with pytest.raises(ConfigError, match=f"recipe <dict>: .*{match}"):
        Recipe.from_dict(recipe_dict(**model))


def test_an_unknown_builder_is_named_with_the_known_ones_when_the_model_is_built():
    recipe = Recipe.from_dict(recipe_dict(builder="lenet"))
    with pytest.raises(ConfigError,
                       match=r"unknown model builder 'lenet'\. Did you mean 'lenet5'.*\? Known builders: .*lenet5"):
        recipe.build_model((32, 32, 1))


@pytest.mark.parametrize("options,shape,match", [
    ({"variant": "classic"}, (32, 32, 1), r"cannot build model 'lenet5' with \{'variant': 'classic'\}: .*variant"),
    ({"depth": 5}, (32, 32, 1), r"cannot build model 'lenet5' with \{'depth': 5\}: .*depth"),
    ({}, 64, r"model builder 'lenet5' needs images \(n_H, n_W, n_C\), .* got|set images = true"),
])
def test_builder_errors_name_the_model_and_its_settings(options, shape, match):
    recipe = Recipe.from_dict(recipe_dict(builder="lenet5", **options), "r.toml")
    with pytest.raises(ConfigError, match=f"recipe 'r' \\[model\\]: .*({match})"):
        recipe.build_model(shape)


# ---- the recipes ---------------------------------------------------------------------------------------------
def test_recipes_are_listed():
    result = invoke("recipes")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "digits-cnn" in lines and "digits-lenet5" in lines
    assert "LeNet-5" in lines["digits-lenet5"]


def test_digits_cnn_uses_batch_norm_and_dropout():
    recipe = load_recipe("digits-cnn")
    model = recipe.build_model((8, 8, 1))
    kinds = [type(layer).__name__ for layer in model.layers()]
    assert kinds.count("BatchNorm") == 2 and kinds.count("Dropout") == 2
    convs = [layer for layer in model.layers() if isinstance(layer, Conv2D)]
    assert all(c.b is None for c in convs)                        # batch norm's β replaces the bias
    assert model.output_shape((None, 8, 8, 1)) == (None, 10)


def test_digits_lenet5_is_the_original_lenet5_on_32x32_digits():
    recipe = load_recipe("digits-lenet5")
    data = recipe.load_data()
    assert data.input_shape == (32, 32, 1) and len(data.test) == 359
    model = recipe.build_model(data.input_shape)
    assert model.num_parameters() == 61_706
    assert isinstance(model[1], AvgPool2D) and isinstance(model[3], AvgPool2D)
    assert [c.activation_name for c in model.layers() if isinstance(c, (Conv2D, Dense))] == \
        ["tanh", "tanh", "tanh", "tanh", None]


@pytest.mark.parametrize("name", ["digits-cnn", "digits-lenet5"])
def test_one_epoch_trains_and_writes_the_learning_curve(tmp_path, name):
    recipe = load_recipe(name).with_overrides(epochs=1)
    results = train_recipe(recipe, tmp_path, progress=False, echo=lambda *a: None)
    assert results["epochs"] == 1
    assert results["test_accuracy"] > 0.5          # one epoch is far above chance (0.1)
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_accuracy"] == results["test_accuracy"]
    assert len(written["history"]["epoch_cost"]) == 1


def test_lamina_train_digits_lenet5_from_the_cli_and_predict(tmp_path):
    out = tmp_path / "lenet5"
    result = invoke("train", "digits-lenet5", "--epochs", "2", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "learning_curve.png" in result.output
    accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert accuracy > 0.8

    trained = TrainedModel(out)                    # rebuilt from config.toml's [model] builder
    assert trained.input_shape == (32, 32, 1)
    test = digits(images=True, size=32).test
    predicted = trained.predict(test.X).argmax(axis=1)
    assert np.mean(predicted == test.y) == pytest.approx(accuracy)


@pytest.mark.slow
def test_digits_cnn_reaches_98_5_percent(tmp_path):
    """The acceptance run: the full recipe (30 epochs) on seed 0."""
    results = train_recipe(load_recipe("digits-cnn"), tmp_path, progress=False, echo=lambda *a: None, plots=False)
    assert results["test_accuracy"] >= 0.985
