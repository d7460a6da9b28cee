"""Hyper-parameter search (§2.18): sampling scales, random (never grid) configurations,
coarse-to-fine zooming, search-space TOML errors, setting paths, and the search on Dask:
failed and killed trials, resuming, best.toml and the `lamina hparams` command."""
import json
import math
import os
import re
import signal
import sys

import cloudpickle
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from lamina.cli import cli
from lamina.errors import ConfigError
from lamina.hparams import (Choice, IntUniform, LogUniform, OneMinusLogUniform, SearchSpace, Uniform, apply_params,
                            default_space, local_cluster, run_search, setting_path)
from lamina.hparams import search as search_module
from lamina.hparams.results import TrialRecord, ranked
from lamina.hparams.space import check_space
from lamina.recipes import Recipe, load_recipe

# the trial functions below run on Dask workers, which cannot import this test module by name
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TRIAL_LINE = re.compile(r"^\d{4} ")


def draws(dist, n=2000, seed=0):
    space = SearchSpace({"x": dist})
    return np.array([space.sample(seed, 1, i)["x"] for i in range(n)])


# ---- sampling ---------------------------------------------------------------------------------------
def test_log_uniform_is_uniform_in_the_exponent():
    """α = 10^r, r ~ U[-4, -1]: each decade as likely (a linear sampler puts 0.9% below 1e-3)."""
    alpha = draws(LogUniform(1e-4, 1e-1))
    assert alpha.min() >= 1e-4 and alpha.max() <= 1e-1
    r = np.log10(alpha)
    assert stats.kstest(r, "uniform", args=(-4, 3)).pvalue > 0.01
    for decade in (-4, -3, -2):
        assert abs(np.mean((r >= decade) & (r < decade + 1)) - 1 / 3) < 0.04


def test_one_minus_log_uniform_is_uniform_in_the_exponent_of_one_minus_beta():
    """β = 1 − 10^r, r ~ U[-3, -1] for β in [0.9, 0.999]: as many β in [0.99, 0.999] as in [0.9, 0.99]."""
    beta = draws(OneMinusLogUniform(0.9, 0.999))
    assert beta.min() >= 0.9 and beta.max() <= 0.999
    assert stats.kstest(np.log10(1 - beta), "uniform", args=(-3, 2)).pvalue > 0.01
    assert abs(np.mean(beta > 0.99) - 0.5) < 0.04


def test_uniform_int_uniform_and_choice_cover_their_ranges_evenly():
    x = draws(Uniform(2.0, 5.0))
    assert stats.kstest(x, "uniform", args=(2, 3)).pvalue > 0.01
    n = draws(IntUniform(3, 6))
    assert set(n) == {3, 6, 4, 5} and all(isinstance(v, int) for v in n[:5].tolist())
    assert all(abs(np.mean(n == k) - 0.25) < 0.04 for k in range(3, 7))
    c = draws(Choice((32, 64, 128)), n=900)
    assert all(abs(np.mean(c == v) - 1 / 3) < 0.06 for v in (32, 64, 128))


def test_configurations_are_random_never_a_grid_and_reproducible():
    space = SearchSpace({"lr": LogUniform(1e-4, 1e-1), "beta1": OneMinusLogUniform(0.9, 0.999),
                         "keep_prob": Uniform(0.5, 1.0)})
    configs = [space.sample(7, 1, i) for i in range(40)]
    for name in space.dims:    # a grid would repeat each value across the other axes
        assert len({c[name] for c in configs}) == 40
    assert configs == [space.sample(7, 1, i) for i in range(40)]
    assert configs[0] != space.sample(8, 1, 0) and configs[0] != space.sample(7, 2, 0)


# ---- zooming ------------------------------------------------------------------------------------------
def test_zoom_narrows_each_range_around_the_best_values_on_its_sampling_scale():
    lr = LogUniform(1e-4, 1e-1).zoom([1e-3, 2e-3])           # r in [-3, -2.7], widened by 0.3 each side
    assert lr.low == pytest.approx(10 ** -3.3) and lr.high == pytest.approx(10 ** (math.log10(2e-3) + 0.3))
    beta = OneMinusLogUniform(0.9, 0.999).zoom([0.99])       # log10(1 − β) = -2, ± 0.2
    assert 1 - beta.high == pytest.approx(10 ** -2.2) and 1 - beta.low == pytest.approx(10 ** -1.8)
    edge = Uniform(0.0, 10.0).zoom([0.5, 2.0])                # kept inside the old range
    assert (edge.low, edge.high) == (0.0, pytest.approx(3.0))
    n = IntUniform(16, 256).zoom([100, 120])                  # ± 24, whole numbers outward
    assert (n.low, n.high) == (76, 144) and isinstance(n.low, int)
    assert Choice((16, 32, 64, 128)).zoom([64, 16, 64]) == Choice((16, 64))
    space = SearchSpace({"lr": LogUniform(1e-4, 1e-1), "batch_size": Choice((32, 64, 128))})
    zoomed = space.zoom([{"lr": 1e-3, "batch_size": 64}, {"lr": 2e-3, "batch_size": 64}])
    assert zoomed.dims == {"lr": lr, "batch_size": Choice((64,))}


def test_ranked_puts_the_best_successful_trials_first():
    records = [TrialRecord("0000", 1, 0, {}, "ok", 0.5), TrialRecord("0001", 1, 1, {}, "failed", error="x"),
               TrialRecord("0002", 1, 2, {}, "ok", 0.9), TrialRecord("0003", 1, 3, {}, "ok", 0.7)]
    assert [r.id for r in ranked(records, "max")] == ["0002", "0003", "0000"]
    assert [r.id for r in ranked(records, "min")] == ["0000", "0003", "0002"]


# ---- search-space TOML ----------------------------------------------------------------------------------
def test_space_toml_with_nested_paths_and_inline_tables(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('lr = { distribution = "log_uniform", low = 1e-4, high = 1e-1 }\n'
                    '[beta1]\ndistribution = "one_minus_log_uniform"\nlow = 0.9\nhigh = 0.999\n'
                    '[model.layers.0.n_out]\ndistribution = "int_uniform"\nlow = 32\nhigh = 512\n'
                    '[batch_size]\ndistribution = "choice"\nvalues = [32, 64]\n')
    from lamina.hparams import load_space

    space = load_space(path)
    assert space.dims == {"lr": LogUniform(1e-4, 1e-1), "beta1": OneMinusLogUniform(0.9, 0.999),
                          "model.layers.0.n_out": IntUniform(32, 512), "batch_size": Choice((32, 64))}
    assert SearchSpace.from_dict(space.to_dict()) == space


@pytest.mark.parametrize("text, message", [
    ('[lr]\ndistribution = "log_unifrom"\nlow = 1e-4\nhigh = 1e-1', "Did you mean 'log_uniform'"),
    ('[lr]\ndistribution = "log_uniform"\nlow = 1e-1\nhigh = 1e-4', "low must be less than high"),
    ('[lr]\ndistribution = "log_uniform"\nlow = 0\nhigh = 1', "low must be positive"),
    ('[b]\ndistribution = "one_minus_log_uniform"\nlow = 0.9\nhigh = 1.0', "0 ≤ low < high < 1"),
    ('[lr]\ndistribution = "uniform"\nlow = 1', "'high' is missing"),
    ('[lr]\ndistribution = "uniform"\nlow = 1\nhigh = 2\nhgih = 3', "not 'hgih'"),
    ('[lr]\ndistribution = "uniform"\nlow = "a"\nhigh = 2', "low must be a number"),
    ('[n]\ndistribution = "int_uniform"\nlow = 1.5\nhigh = 4', "low must be an integer"),
    ('[bs]\ndistribution = "choice"\nvalues = []', "non-empty list"),
    ('[bs]\ndistribution = "choice"\nvalues = [1, 1]', "must be distinct"),
    ("lr = 0.1", "[lr]: expected a table with a 'distribution'"),
    ("[lr\n", "invalid TOML"),
    ("", "no hyper-parameters"),
])
def test_space_toml_errors_say_where_and_what(tmp_path, text, message):
    from lamina.hparams import load_space

    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert message in str(err.value) and str(path) in str(err.value)


# ---- naming recipe settings -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_recipe("digits-mlp")


def test_setting_paths(digits):
    config = digits.to_dict()
    assert setting_path(config, "lr") == ("optimizer", "lr")
    assert setting_path(config, "beta1") == ("optimizer", "beta1")       # an Adam keyword the recipe leaves out
    assert setting_path(config, "batch_size") == ("training", "batch_size")
    assert setting_path(config, "model.layers.0.n_out") == ("model", "layers", 0, "n_out")
    recipe = apply_params(digits, {"lr": 0.02, "beta1": 0.95, "batch_size": 32, "model.layers.1.n_out": 17})
    assert recipe.optimizer == {"name": "adam", "lr": 0.02, "beta1": 0.95}
    assert recipe.training["batch_size"] == 32 and recipe.model["layers"][1]["n_out"] == 17
    assert digits.optimizer == {"name": "adam", "lr": 0.001}            # the original is untouched
    assert recipe.build_model(64).num_parameters() == 64 * 256 + 256 + 256 * 17 + 17 + 17 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("key, message", [
    ("model.layers.9.n_out", "is a list of 4; '9' is not one of its indices 0..3"),
    ("optimzer.lr", "Did you mean 'optimizer'"),
    ("model.layers", "names a whole list"),
    ("model.blocks.0.n_out", "model has no 'blocks'"),
    ("learning_rate", "is not a setting of this recipe"),
])
def test_setting_path_errors(digits, key, message):
    with pytest.raises(ConfigError) as err:
        setting_path(digits.to_dict(), key)
    assert message in str(err.value)


def test_check_space_refuses_fractional_values_for_integer_settings(digits):
    with pytest.raises(ConfigError, match="'batch_size' is an integer setting .* not uniform"):
        check_space(SearchSpace({"batch_size": Uniform(16, 256)}), digits)
    check_space(SearchSpace({"batch_size": IntUniform(16, 256)}), digits)


def test_default_space_centres_on_the_recipe(digits):
    space = default_space(digits)
    assert space.dims["lr"] == LogUniform(pytest.approx(1e-4), pytest.approx(1e-2))
    assert space.dims["beta1"] == OneMinusLogUniform(0.9, 0.999)
    assert space.dims["batch_size"] == Choice((16, 32, 64, 128, 256))


# ---- the search on Dask ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    cluster = local_cluster(2)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster) as client:
        yield client


SPACE = SearchSpace({"lr": LogUniform(1e-4, 1e-1), "batch_size": Choice((32, 64, 128))})


def fake_score(spec):
    """A quick objective in place of training: best at lr = 10^-2.5."""
    return {"score": -(math.log10(spec.params["lr"]) + 2.5) ** 2, "metrics": {"pid": os.getpid()}}


def failing_and_dying(spec):
    if spec.id == "0001":
        raise ValueError("this trial is broken")
    if spec.id == "0002":
        os.kill(os.getpid(), signal.SIGKILL)          # its worker process dies mid-search
    return fake_score(spec)


def marking(spec):
    os.makedirs(spec.out_dir, exist_ok=True)
    open(os.path.join(spec.out_dir, "ran-on-resume"), "w").close()
    return fake_score(spec)


def test_a_trial_that_raises_or_kills_its_worker_is_recorded_failed_and_the_search_goes_on(
        client, digits, tmp_path):
    lines = []
    result = run_search(digits, SPACE, tmp_path, trials=6, client=client, objective=failing_and_dying,
                        echo=lines.append)
    by_id = {r.id: r for r in result.records}
    assert sorted(by_id) == [f"{i:04d}" for i in range(6)]
    assert by_id["0001"].status == "failed" and by_id["0001"].error == "ValueError: this trial is broken"
    assert by_id["0002"].status == "failed" and by_id["0002"].error.startswith("KilledWorker: the worker")
    assert all(by_id[i].ok for i in ("0000", "0003", "0004", "0005"))
    assert [r.id for r in result.failed] == ["0001", "0002"]
    failed_lines = [line for line in lines if TRIAL_LINE.match(line) and "FAILED" in line]
    assert len(failed_lines) == 2 and any("KilledWorker" in line for line in failed_lines)
    saved = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert [t["status"] for t in saved] == ["ok", "failed", "failed", "ok", "ok", "ok"]
    assert result.best.id == max((by_id[i] for i in ("0000", "0003", "0004", "0005")), key=lambda r: r.score).id


def test_an_interrupted_search_resumes_without_rerunning_finished_trials(cluster, digits, tmp_path):
    finished = []

    def interrupt_after_three(line):
        if TRIAL_LINE.match(line):
            finished.append(line.split()[0])
            if len(finished) == 3:
                raise KeyboardInterrupt     # as Ctrl-C would, in the driver

    settings = dict(trials=8, rounds=2, seed=3, scheduler=cluster.scheduler_address, plot=False)
    with pytest.raises(KeyboardInterrupt):
        run_search(digits, SPACE, tmp_path, objective=fake_score, echo=interrupt_after_three, **settings)
    saved = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert sorted(t["id"] for t in saved) == sorted(finished)
    assert (tmp_path / "trials.csv").read_text().count("\n") == 4

    lines = []
    result = run_search(digits, SPACE, tmp_path, objective=marking, echo=lines.append, **settings)
    everything = [f"{i:04d}" for i in range(8)]
    rest = sorted(set(everything) - set(finished))
    assert sorted(result.ran) == rest
    assert sorted(p.parent.name for p in tmp_path.glob("trials/*/ran-on-resume")) == rest
    assert [r.id for r in result.records] == everything
    assert any("3 trials already finished" in line for line in lines)
    for old in saved:
        assert next(r for r in result.records if r.id == old["id"]).score == old["score"]

    # round 2 sampled the space zoomed around the best quarter of round 1
    spaces = json.loads((tmp_path / "trials.json").read_text())["spaces"]
    zoomed = SearchSpace.from_dict(spaces[1]).dims["lr"]
    best_first = ranked([r for r in result.records if r.round == 1], "max")[0]
    assert zoomed.low <= best_first.params["lr"] <= zoomed.high
    assert zoomed.high / zoomed.low < 1e3
    assert all(zoomed.low <= r.params["lr"] <= zoomed.high for r in result.records if r.round == 2)

    with pytest.raises(ConfigError, match="other settings \\(seed differ"):
        run_search(digits, SPACE, tmp_path, objective=marking, **dict(settings, seed=4))


def test_unreachable_scheduler_is_a_clear_error(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(search_module, "CONNECT_TIMEOUT", "0.5s")
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_search(digits, SPACE, tmp_path, trials=2, scheduler="tcp://127.0.0.1:9")


# ---- the command -------------------------------------------------------------------------------------------
def test_lamina_hparams_on_the_default_local_cluster_writes_a_trainable_best_recipe(tmp_path):
    out = tmp_path / "search"
    result = CliRunner().invoke(cli, ["hparams", "digits-mlp", "--trials", "16", "--epochs", "2", "--workers", "2",
                                      "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "on a local Dask cluster of 2 single-threaded worker processes" in result.output
    assert len([line for line in result.output.splitlines() if TRIAL_LINE.match(line)]) == 16
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["ok"] * 16
    assert all(0 < t["score"] <= 1 and t["metrics"]["dev_accuracy"] == t["score"] for t in trials)
    assert (out / "trials.csv").read_text().splitlines()[0] == \
        "id,round,status,score,lr,beta1,batch_size,seconds,worker,error"
    assert (out / "trials.png").stat().st_size > 0
    assert all((out / "trials" / t["id"] / "metrics.json").is_file() for t in trials)

    best = min(trials, key=lambda t: (-t["score"], t["id"]))
    recipe = Recipe.from_file(out / "best.toml")
    assert recipe.optimizer["lr"] == best["params"]["lr"] and recipe.optimizer["beta1"] == best["params"]["beta1"]
    assert recipe.training["batch_size"] == best["params"]["batch_size"] and recipe.training["epochs"] == 2
    assert f"best: trial {best['id']}" in result.output

    trained = CliRunner().invoke(cli, ["train", str(out / "best.toml"), "--out", str(tmp_path / "train"),
                                       "--no-progress"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    dev_accuracy = json.loads((tmp_path / "train" / "metrics.json").read_text())["dev_accuracy"]
    assert dev_accuracy == pytest.approx(best["score"], abs=0.02)     # BLAS threads may round differently


def test_lamina_hparams_reports_bad_spaces_and_options(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[learning_rate]\ndistribution = "log_uniform"\nlow = 1e-4\nhigh = 1e-1\n')
    result = CliRunner().invoke(cli, ["hparams", "digits-mlp", "--space", str(space), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "'learning_rate' is not a setting of this recipe" in result.output
    result = CliRunner().invoke(cli, ["hparams", "digits-mlp", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--workers sizes the local cluster" in result.output
    result = CliRunner().invoke(cli, ["hparams", "digits-mlp", "--trials", "2", "--rounds", "3",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 1 and "need 1 ≤ rounds ≤ trials" in result.output
