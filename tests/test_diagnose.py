"""Bias/variance diagnosis (§3.5, §3.8): the seed's Figure 23 and Figure 27 scenarios exactly,
the API and `lamina diagnose` (human-readable, --json, exit codes)."""
import json
from fractions import Fraction

import pytest
from click.testing import CliRunner

from lamina.cli import cli
from lamina.diagnose import KNOBS, DiagnoseError, diagnose, parse_error

# Figure 23, classification error (%): human, training, dev
FIGURE_23 = {"A": ("1", "8", "10"), "B": ("7.5", "8", "10")}
FIGURE_23_WANT = {"A": (0.07, 0.02, "avoidable_bias"), "B": (0.005, 0.02, "variance")}

# Figure 27, classification error (%): human, training, training-dev, dev, test ("-" = not given)
FIGURE_27 = {"A": ("0", "1", None, "10", None),
             "B": ("0", "1", "9", "10", None),
             "C": ("0", "1", "1.5", "10", None),
             "D": ("0", "10", "11", "12", None),
             "E": ("0", "10", "11", "20", None),
             "F": ("4", "7", "10", "6", "6")}
# avoidable bias, variance, data mismatch, dev overfitting (fractions), focus
FIGURE_27_WANT = {"A": (0.01, 0.09, None, None, "variance"),        # the 9% jump: variance and mismatch mixed
                  "B": (0.01, 0.08, 0.01, None, "variance"),
                  "C": (0.01, 0.005, 0.085, None, "data_mismatch"),
                  "D": (0.10, 0.01, 0.01, None, "avoidable_bias"),
                  "E": (0.10, 0.01, 0.09, None, "avoidable_bias"),  # two problems; bias is the larger
                  "F": (0.03, 0.03, -0.04, 0.0, "avoidable_bias")}  # a tie: orthogonalization's order decides


def pct(value):
    return None if value is None else value + "%"


def invoke(*args):
    return CliRunner().invoke(cli, ["diagnose", *args])


@pytest.mark.parametrize("scenario", sorted(FIGURE_23))
def test_figure_23(scenario):
    human, train, dev = map(pct, FIGURE_23[scenario])
    d = diagnose(human=human, train=train, dev=dev)
    bias, variance, focus = FIGURE_23_WANT[scenario]
    assert (d.avoidable_bias, d.variance, d.focus) == (bias, variance, focus)
    assert d.data_mismatch is None and d.dev_overfitting is None


@pytest.mark.parametrize("scenario", sorted(FIGURE_27))
def test_figure_27(scenario):
    human, train, train_dev, dev, test = map(pct, FIGURE_27[scenario])
    d = diagnose(human, train, dev, train_dev=train_dev, test=test)
    assert (d.avoidable_bias, d.variance, d.data_mismatch, d.dev_overfitting, d.focus) == FIGURE_27_WANT[scenario]


@pytest.mark.parametrize("scenario", sorted(FIGURE_27))
def test_figure_27_from_the_command_line_as_json(scenario):
    human, train, train_dev, dev, test = map(pct, FIGURE_27[scenario])
    args = ["--human", human, "--train", train, "--dev", dev, "--json"]
    args += ["--train-dev", train_dev] if train_dev else []
    args += ["--test", test] if test else []
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    bias, variance, mismatch, overfitting, focus = FIGURE_27_WANT[scenario]
    assert json.loads(result.output) == {"avoidable_bias": bias, "variance": variance, "data_mismatch": mismatch,
                                         "dev_overfitting": overfitting, "focus": focus}


def test_fractions_and_percents_are_the_same_errors():
    assert parse_error("8%") == parse_error(0.08) == parse_error("0.08") == parse_error("8 %") == Fraction(2, 25)
    assert parse_error(0) == 0 and parse_error("100%") == 1 and parse_error(1) == 1
    as_fractions = diagnose(0.075, 0.08, 0.10)
    as_percents = diagnose("7.5%", "8%", "10%")
    assert as_fractions == as_percents and as_fractions.avoidable_bias == 0.005


@pytest.mark.parametrize("bad, message", [(-0.01, "cannot be negative"), ("-1%", "cannot be negative"),
                                          ("101%", "cannot exceed 100%"), (8, "did you mean 8%"),
                                          ("eight", "expected a fraction"), ("nan", "expected a fraction"),
                                          (True, "expected a fraction"), (None, "expected a fraction")])
def test_bad_errors_are_refused(bad, message):
    with pytest.raises(DiagnoseError, match=message):
        parse_error(bad, "training")
    with pytest.raises(DiagnoseError, match="training error"):
        diagnose(0, bad, 0.1)


def test_the_knobs_follow_the_focus():
    assert diagnose("1%", "8%", "10%").knobs == KNOBS["avoidable_bias"]
    assert any("bigger model" in k for k in KNOBS["avoidable_bias"])
    assert any("optimization algorithm" in k for k in KNOBS["avoidable_bias"])
    variance = diagnose("7.5%", "8%", "10%")
    assert variance.knobs == KNOBS["variance"] and any("regularization" in k for k in variance.knobs)
    mismatch = diagnose("0%", "1%", "10%", train_dev="1.5%")
    assert mismatch.knobs == KNOBS["data_mismatch"] and any("synthesis" in k for k in mismatch.knobs)
    overfit = diagnose("0%", "1%", "2%", train_dev="1%", test="10%")
    assert overfit.focus == "dev_overfitting" and overfit.dev_overfitting == 0.08
    assert overfit.knobs == ("get a bigger dev set",)


def test_notes_explain_what_the_numbers_cannot_tell():
    no_train_dev = diagnose("0%", "1%", "10%")
    assert any("training-dev" in note for note in no_train_dev.notes)
    assert not any("training-dev" in note for note in diagnose("0%", "1%", "10%", train_dev="9%").notes)
    assert any("ties" in note for note in diagnose("4%", "7%", "6%", train_dev="10%", test="6%").notes)
    assert any("below human level" in note for note in diagnose("5%", "3%", "6%").notes)
    bare_one = diagnose(1, "8%", "10%")
    assert bare_one.human == 1.0 and any("read as 100%; write 1%" in note for note in bare_one.notes)
    assert not any("read as 100%" in note for note in diagnose("1%", "8%", "10%").notes)
    result = invoke("--human", "1", "--train", "0.5", "--dev", "0.6")
    assert result.exit_code == 0 and "human-level error 1 is read as 100%" in result.output


def test_human_readable_report():
    result = invoke("--human", "1%", "--train", "8%", "--dev", "10%")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "human-level 1%, training 8%, dev 10%" in out
    assert "avoidable bias" in out and "7%" in out and "<- focus" in out.splitlines()[1]
    assert "work on avoidable bias first" in out
    for knob in KNOBS["avoidable_bias"]:
        assert knob in out
    assert "needs --train-dev" in out and "needs --test" in out


@pytest.mark.parametrize("args, message", [
    (["--human", "1%", "--train", "8%"], "Missing option '--dev'"),
    (["--train", "8%", "--dev", "10%"], "Missing option '--human'"),
    (["--human", "1%", "--train", "-8%", "--dev", "10%"], "cannot be negative"),
    (["--human", "1%", "--train", "8%", "--dev", "120%"], "cannot exceed 100%"),
    (["--human", "1", "--train", "8", "--dev", "10"], "did you mean 8%"),
    (["--human", "1%", "--train", "8%", "--dev", "ten"], "expected a fraction"),
])
def test_bad_usage_exits_with_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_diagnose_is_added_by_the_core_plugin():
    listing = CliRunner().invoke(cli, ["--help"])
    assert "diagnose" in listing.output
    plugins = CliRunner().invoke(cli, ["plugins"])
    assert "diagnose" in plugins.output
