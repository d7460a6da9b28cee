"""`lamina sample` on a tiny language model trained through `lamina train` (a recipe file): samples, seeds,
temperature 0, options, bad usage (exit code 2) and a run that is not a language model's; the run folder's
vocabulary.json, metrics (perplexity beside the unigram baseline) and the built-in LM recipes."""
import importlib
import json

import pytest
import tomli_w
from click.testing import CliRunner

from lamina.cli import cli
from lamina.language_model import LanguageModel, load_vocabulary, perplexity
from lamina.recipes import builtin_recipes
from lamina.run import TrainedModel
from lamina.text import UNK

TINY_RECIPE = {
    "name": "tiny-names-lm",
    "data": {"dataset": "first_names", "locales": ["en_US"], "split": "80/10/10"},
    "model": {"layers": [{"type": "language_model", "d": 4, "n_a": 8, "cell": "gru"}]},
    "loss": {"name": "sequence_softmax_cross_entropy"},
    "optimizer": {"name": "adam", "lr": 0.02},
    "training": {"epochs": 2, "batch_size": 64, "metrics": ["perplexity"]},
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    recipe = root / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY_RECIPE))
    result = invoke("train", recipe, "--out", root / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return root / "run"


def test_the_run_saves_its_vocabulary_and_reports_perplexities(run_dir):
    vocabulary = load_vocabulary(run_dir / "checkpoint")
    assert vocabulary.level == "char" and vocabulary.lowercase
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("train", "dev", "test"):
        assert metrics[f"{split}_perplexity"] > 1.0
        assert metrics[f"{split}_unigram_perplexity"] > 1.0
    trained = TrainedModel(run_dir)
    assert isinstance(trained.model[0], LanguageModel) and trained.model[0].V == len(vocabulary)
    assert perplexity(trained.model, vocabulary, ["anna", "bob"]) > 1.0


def test_sample_prints_n_lines_reproducibly(run_dir):
    first = invoke("sample", run_dir, "--n", 5, "--seed", 3, "--max-length", 12)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert len(lines) == 5 and all(len(line) <= 12 and UNK not in line for line in lines)
    assert invoke("sample", run_dir / "checkpoint", "--n", 5, "--seed", 3, "--max-length", 12).output == first.output
    assert invoke("sample", run_dir, "--n", 5, "--seed", 4, "--max-length", 12).output != first.output


def test_temperature_zero_gives_one_name_n_times(run_dir):
    result = invoke("sample", run_dir, "--n", 3, "--temperature", 0, "--seed", 1)
    assert result.exit_code == 0
    assert len(set(result.output.splitlines())) == 1 and len(result.output.splitlines()) == 3
    top1 = invoke("sample", run_dir, "--n", 3, "--top-k", 1, "--seed", 9)
    assert top1.output == result.output


def test_help():
    result = invoke("sample", "--help")
    assert result.exit_code == 0
    for option in ("--n", "--temperature", "--top-k", "--max-length", "--seed"):
        assert option in result.output


@pytest.mark.parametrize("args,message", [(["--top-k", "0"], "--top-k"), (["--temperature", "-1"], "--temperature"),
                                          (["--n", "0"], "--n"), (["--max-length", "x"], "--max-length"),
                                          (["--bogus"], "No such option")])
def test_bad_options_exit_2(run_dir, args, message):
    result = invoke("sample", run_dir, *args)
    assert result.exit_code == 2 and message in result.output


def test_missing_folder_exits_2(tmp_path):
    result = invoke("sample", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_run_that_is_not_a_language_model_exits_2(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "config.toml").write_text('name = "digits-mlp"\n')
    result = invoke("sample", tmp_path)
    assert result.exit_code == 2
    assert "is not a language model's run" in result.output and "vocabulary.json does not exist" in result.output


def test_builtin_language_model_recipes():
    recipes = builtin_recipes()
    names, lee = recipes["names-char-lm"], recipes["lee-word-lm"]
    assert names.data["dataset"] == "first_names" and lee.data["dataset"] == "lee_corpus"
    for recipe in (names, lee):
        assert recipe.loss["name"] == "sequence_softmax_cross_entropy"
        assert recipe.training["metrics"] == ["perplexity"]
        model = recipe.build_model((10,), num_classes=30)
        assert model[0].V == 30 and model.output_shape((None, 10)) == (None, 10, 30)


@pytest.mark.slow
def test_names_char_lm_beats_the_unigram_baseline_and_samples_new_names(tmp_path):
    result = invoke("train", "names-char-lm", "--out", tmp_path / "names", "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "names" / "metrics.json").read_text())
    for split in ("dev", "test"):          # held out: a per-character perplexity well under the unigram model's
        assert metrics[f"{split}_perplexity"] < metrics[f"{split}_unigram_perplexity"] / 1.7, metrics
    samples = invoke("sample", tmp_path / "names", "--n", 30, "--seed", 0, "--temperature", 0.8).output.split("\n")[:-1]
    known = {name.lower() for locale in builtin_recipes()["names-char-lm"].data["locales"]
             for name in importlib.import_module(f"faker.providers.person.{locale}").Provider.first_names}
    assert len(samples) == 30 and sum(1 for s in samples if s and s not in known) >= 5
