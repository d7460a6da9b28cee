"""Learning-rate schedules (§2.16) against hand-computed rates, built the way a recipe builds them:
by registered name with keyword options from TOML, called as schedule(epoch, lr0), epoch 0-based."""
from __future__ import annotations

import math
import tomllib

import pytest

from lamina.errors import LaminaError
from lamina.registry import get, names


def build(name, **options):
    return get("schedules", name)(**options)


def rates(schedule, epochs, lr0=0.2):
    return [schedule(epoch, lr0) for epoch in epochs]


def test_every_schedule_is_registered():
    assert names("schedules") == ["exponential", "inverse_sqrt", "inverse_time", "manual", "staircase"]


@pytest.mark.parametrize("name,options,epochs,want", [
    # α = α0/(1 + decay_rate·epoch): 0.2/1, 0.2/2, 0.2/3, 0.2/11
    ("inverse_time", {"decay_rate": 1.0}, [0, 1, 2, 10], [0.2, 0.1, 0.2 / 3, 0.2 / 11]),
    ("inverse_time", {"decay_rate": 0.5}, [0, 2, 6], [0.2, 0.1, 0.05]),
    ("inverse_time", {}, [1], [0.1]),                                         # decay_rate 1 by default
    # α = base^epoch·α0: 0.95^0 = 1, 0.95², 0.5³
    ("exponential", {}, [0, 1, 2], [0.2, 0.19, 0.2 * 0.9025]),
    ("exponential", {"base": 0.5}, [0, 3], [0.2, 0.025]),
    # α = k/√(epoch + 1)·α0 (epoch_num = epoch + 1): k·α0, k·α0/2 at epoch 3, k·α0/3 at epoch 8
    ("inverse_sqrt", {}, [0, 3, 8], [0.2, 0.1, 0.2 / 3]),
    ("inverse_sqrt", {"k": 2.0}, [0, 1], [0.4, 0.4 / math.sqrt(2)]),
    # α = α0·factor^⌊epoch/step⌋
    ("staircase", {"factor": 0.1, "step": 3}, [0, 2, 3, 5, 6, 9], [0.2, 0.2, 0.02, 0.02, 0.002, 0.0002]),
    ("staircase", {}, [9, 10, 20], [0.2, 0.1, 0.05]),                        # halves every 10 epochs by default
    # the rate listed for the latest epoch ≤ this one; α0 before the first
    ("manual", {"rates": {0: 0.1, 10: 0.01}}, [0, 9, 10, 50], [0.1, 0.1, 0.01, 0.01]),
    ("manual", {"rates": {"5": 0.05, "2": 0.5}}, [0, 1, 2, 4, 5], [0.2, 0.2, 0.5, 0.5, 0.05]),
    ("manual", {"rates": [[0, 0.3], [4, 0.03]]}, [3, 4], [0.3, 0.03]),
])
def test_rates_match_hand_computed_values(name, options, epochs, want):
    assert rates(build(name, **options), epochs) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", ["inverse_time", "exponential", "inverse_sqrt", "staircase"])
def test_the_first_epoch_trains_at_the_initial_rate(name):
    assert build(name)(0, 0.3) == 0.3


def test_options_from_a_toml_table():
    table = tomllib.loads('[schedule]\nname = "manual"\nrates = { "0" = 0.1, "10" = 0.01 }\n'
                          '[other]\nname = "staircase"\nfactor = 0.5\nstep = 2\n')
    for section, epochs, want in (("schedule", [0, 10], [0.1, 0.01]), ("other", [0, 2, 4], [1.0, 0.5, 0.25])):
        options = {k: v for k, v in table[section].items() if k != "name"}
        assert rates(build(table[section]["name"], **options), epochs, lr0=1.0) == pytest.approx(want)


@pytest.mark.parametrize("name,options,message", [
    ("inverse_time", {"decay_rate": -1.0}, r"InverseTime schedule: decay_rate must lie in \[0, ∞\), got -1.0"),
    ("exponential", {"base": 1.5}, r"Exponential schedule: base must lie in \(0, 1\], got 1.5"),
    ("exponential", {"base": "0.9"}, "Exponential schedule: base must be a number, got '0.9'"),
    ("inverse_sqrt", {"k": 0}, r"InverseSqrt schedule: k must lie in \(0, ∞\)"),
    ("staircase", {"step": 0}, "Staircase schedule: step must be an integer ≥ 1"),
    ("staircase", {"step": 2.5}, "Staircase schedule: step must be an integer ≥ 1"),
    ("staircase", {"factor": 0}, r"Staircase schedule: factor must lie in \(0, 1\]"),
    ("manual", {"rates": {}}, "Manual schedule: rates is empty"),
    ("manual", {"rates": {"ten": 0.1}}, "Manual schedule: each epoch in rates must be an integer ≥ 0, got 'ten'"),
    ("manual", {"rates": {-1: 0.1}}, "Manual schedule: each epoch in rates must be an integer ≥ 0, got -1"),
    ("manual", {"rates": {"1": 0.1, 1: 0.2}}, "Manual schedule: epoch 1 is listed twice"),
    ("manual", {"rates": {0: -0.1}}, r"Manual schedule: the rate of epoch 0 must lie in \(0, ∞\)"),
    ("manual", {"rates": 0.1}, "Manual schedule: rates must be a dict"),
    ("manual", {"rates": [0.1, 0.01]}, "Manual schedule: rates must be a dict"),
])
def test_bad_options_name_the_schedule_and_option(name, options, message):
    with pytest.raises(LaminaError, match=message):
        build(name, **options)


@pytest.mark.parametrize("epoch", [-1, 1.5, True])
def test_bad_epochs_are_refused(epoch):
    with pytest.raises(LaminaError, match="InverseTime schedule: epoch must be an integer ≥ 0"):
        build("inverse_time")(epoch, 0.1)


def test_bad_initial_rate_is_refused():
    with pytest.raises(LaminaError, match=r"Exponential schedule: lr0 must lie in \(0, ∞\), got 0.0"):
        build("exponential")(3, 0.0)
