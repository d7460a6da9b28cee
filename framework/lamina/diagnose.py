"""Bias/variance diagnosis (§3.5, §3.8): from human-level, training, training-dev, dev and test
errors, the four gaps between them, which one to work on first, and the knobs that move it.

    import lamina.diagnose as dg
    d = dg.diagnose(human="1%", train="8%", dev="10%")
    d.focus                      # "avoidable_bias"
    d.avoidable_bias             # 0.07
    print(d.report())

or `lamina diagnose --human 1% --train 8% --dev 10% [--json]`.

Errors are fractions in [0, 1] (0.08) or percents written with a percent sign ("8%"); a bare
number above 1 is refused rather than guessed to be a percent. Every gap is returned as a
fraction (0.07 for 7 percentage points), in the API and in `--json` alike. The arithmetic is
exact (on the decimal numbers as written), so 8% − 7.5% is exactly 0.005 and ties are ties.

The gaps, each the step from one error to the next (the seed writes them the other way
round; these are the signs under which a positive gap is a problem):

    avoidable bias   = training error − human-level error (human level as a proxy for Bayes error)
    variance         = training-dev error − training error
                       (dev error − training error when no training-dev error is given: then it
                       also holds any data mismatch, and data mismatch is unknown)
    data mismatch    = dev error − training-dev error
    dev overfitting  = test error − dev error

The focus is the largest gap; a tie goes to the one earlier in that list, the order in which
orthogonalization (§3.1) tunes: fit the training set, then the dev set, then the test set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

import click

from .errors import LaminaError

GAPS = ("avoidable_bias", "variance", "data_mismatch", "dev_overfitting")

LABELS = {"avoidable_bias": "avoidable bias", "variance": "variance", "data_mismatch": "data mismatch",
          "dev_overfitting": "overfitting to dev"}

#: the knobs that move each gap, and only that gap (§3.1, §3.5, §3.8)
KNOBS = {
    "avoidable_bias": ("train a bigger model",
                       "train longer",
                       "use a better optimization algorithm (momentum, RMSprop, Adam)",
                       "search for a better architecture or hyper-parameters (RNN, CNN, ...)"),
    "variance": ("get more training data",
                 "add regularization (L2, dropout, data augmentation)",
                 "search for a better architecture or hyper-parameters (RNN, CNN, ...)"),
    "data_mismatch": ("carry out manual error analysis to see how the training and dev/test sets differ",
                      "make the training data more like the dev set (artificial data synthesis, varied enough "
                      "not to overfit one synthesized subset)",
                      "collect more training data like the dev/test sets"),
    "dev_overfitting": ("get a bigger dev set",),
}


class DiagnoseError(LaminaError, ValueError):
    """An error rate that is not a number in [0, 1] (or 0%–100%)."""


def parse_error(value, what: str = "error") -> Fraction:
    """An error rate as an exact fraction in [0, 1]: "8%" or "8 %" -> 2/25, 0.08 or "0.08" -> 2/25.

    Floats are read by their shortest decimal form (0.07 is exactly 7/100). Negative errors,
    errors above 100% and bare numbers above 1 (is "8" 8% or 800%?) are refused.
    """
    text = repr(value) if isinstance(value, float) else str(value).strip()
    is_percent = text.endswith("%")
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal, Fraction)):
            raise TypeError
        number = value if isinstance(value, Fraction) else Fraction(Decimal(text.rstrip("%").strip()))
    except (ArithmeticError, TypeError, ValueError):
        raise DiagnoseError(f"{what} error: expected a fraction such as 0.08 or a percent such as 8%, "
                            f"got {value!r}") from None
    fraction = number / 100 if is_percent else number
    if fraction < 0:
        raise DiagnoseError(f"{what} error: an error cannot be negative, got {value!r}")
    if fraction > 1:
        hint = f"; did you mean {text}%?" if not is_percent and number <= 100 else ""
        raise DiagnoseError(f"{what} error: an error cannot exceed 100%, got {value!r} (bare numbers are "
                            f"fractions in [0, 1], percents need a '%'{hint})")
    return fraction


def percent(fraction: float | Fraction | None) -> str:
    """0.075 -> '7.5%'; None -> '-'."""
    if fraction is None:
        return "-"
    return f"{float(Fraction(fraction) * 100):g}%"


@dataclass(frozen=True)
class Diagnosis:
    """The errors (fractions), the four gaps (fractions, None where an error is missing), the
    focus (the largest gap's name) and notes on how to read them."""

    human: float
    train: float
    dev: float
    train_dev: float | None
    test: float | None
    avoidable_bias: float
    variance: float
    data_mismatch: float | None
    dev_overfitting: float | None
    focus: str
    notes: tuple[str, ...] = field(default=())

    def gaps(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in GAPS}

    @property
    def knobs(self) -> tuple[str, ...]:
        """What to try for the focus (§3.5, §3.8)."""
        return KNOBS[self.focus]

    def to_dict(self) -> dict:
        """{avoidable_bias, variance, data_mismatch, dev_overfitting, focus}: what `--json` prints."""
        return dict(self.gaps(), focus=self.focus)

    def report(self) -> str:
        """A human-readable table of the errors and gaps in percent, the focus and its knobs."""
        errors = [("human-level", self.human), ("training", self.train), ("training-dev", self.train_dev),
                  ("dev", self.dev), ("test", self.test)]
        lines = ["errors:  " + ", ".join(f"{name} {percent(e)}" for name, e in errors if e is not None)]
        formulas = {"avoidable_bias": "training - human-level",
                    "variance": "training-dev - training" if self.train_dev is not None else "dev - training",
                    "data_mismatch": "dev - training-dev", "dev_overfitting": "test - dev"}
        missing = {"data_mismatch": "needs --train-dev", "dev_overfitting": "needs --test"}
        for name, gap in self.gaps().items():
            marker = "  <- focus" if name == self.focus else ""
            detail = formulas[name] if gap is not None else missing[name]
            lines.append(f"  {LABELS[name]:<19}{percent(gap):>8}   ({detail}){marker}")
        lines.append(f"work on {LABELS[self.focus]} first:")
        lines += [f"  - {knob}" for knob in self.knobs]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def diagnose(human, train, dev, train_dev=None, test=None) -> Diagnosis:
    """Diagnose from error rates (each a fraction 0.08, or a string "0.08" or "8%").

    `human` is the human-level error, the proxy for Bayes error (§3.5); `train_dev` the error
    on a training-dev set (same distribution as training, not trained on, §3.8, see
    `lamina.data.training_dev_split`); `test` the test error. Raises DiagnoseError for an
    error that is negative, above 100% or not a number.
    """
    given = {"human-level": human, "training": train, "training-dev": train_dev, "dev": dev, "test": test}
    errors = {what: parse_error(value, what) for what, value in given.items()
              if value is not None or what not in ("training-dev", "test")}
    h, tr, d = errors["human-level"], errors["training"], errors["dev"]
    td, te = errors.get("training-dev"), errors.get("test")
    gaps = {"avoidable_bias": tr - h,
            "variance": (td if td is not None else d) - tr,
            "data_mismatch": d - td if td is not None else None,
            "dev_overfitting": te - d if te is not None else None}
    known = [name for name in GAPS if gaps[name] is not None]
    focus = max(known, key=lambda name: (gaps[name], -GAPS.index(name)))
    notes = []
    if td is None:
        notes.append("without a training-dev error, variance is dev - training and also holds any data "
                     "mismatch; if training and dev data come from different distributions, hold out a "
                     "training-dev set (lamina.data.training_dev_split) to tell them apart")
    tied = [name for name in known if name != focus and gaps[name] == gaps[focus]]
    if tied:
        notes.append(f"{LABELS[focus]} ties with {', '.join(LABELS[n] for n in tied)}; orthogonalization (§3.1) "
                     f"fits the training set before the dev set and the dev set before the test set, so "
                     f"{LABELS[focus]} comes first")
    if gaps["data_mismatch"] is not None and gaps["data_mismatch"] < 0:
        notes.append("data mismatch is negative: the dev data is easier for the model than the training data")
    for what, error in errors.items():
        if error == 1 and not str(given[what]).strip().endswith("%"):
            notes.append(f"the {what} error {given[what]} is read as 100%; write 1% for one percent")
    if tr < h:
        notes.append("the training error is below human level: human-level error is no longer a good proxy "
                     "for Bayes error, so the avoidable bias is not known (§3.5)")
    as_float = lambda x: float(x) if x is not None else None  # noqa: E731
    return Diagnosis(human=float(h), train=float(tr), dev=float(d), train_dev=as_float(td), test=as_float(te),
                     focus=focus, notes=tuple(notes), **{name: as_float(gap) for name, gap in gaps.items()})


# ---- `lamina diagnose` ------------------------------------------------------------------------
class ErrorRate(click.ParamType):
    """A click option value: a fraction (0.08) or a percent (8%), checked by `parse_error` and
    passed on as written (so `diagnose` can tell a bare 1, i.e. 100%, from 1%)."""

    name = "ERROR"

    def convert(self, value, param, ctx):
        try:
            parse_error(value, param.name.replace("_", "-") if param is not None else "error")
        except DiagnoseError as err:
            self.fail(str(err), param, ctx)
        return value


@click.command("diagnose")
@click.option("--human", required=True, type=ErrorRate(), help="Human-level error (proxy for Bayes error).")
@click.option("--train", required=True, type=ErrorRate(), help="Training-set error.")
@click.option("--train-dev", type=ErrorRate(), help="Training-dev error (training distribution, not trained on).")
@click.option("--dev", required=True, type=ErrorRate(), help="Dev-set error.")
@click.option("--test", type=ErrorRate(), help="Test-set error.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {avoidable_bias, variance, data_mismatch, dev_overfitting, focus} as JSON.")
def diagnose_command(human, train, train_dev, dev, test, as_json):
    """Which to reduce first: avoidable bias, variance, data mismatch or overfitting to dev (§3.5, §3.8).

    Errors are fractions (0.08) or percents (8%); a bare number above 1 is refused. Gaps are
    reported in percent, and as fractions in --json (null where an error was not given).
    """
    result = diagnose(human, train, dev, train_dev=train_dev, test=test)
    click.echo(json.dumps(result.to_dict()) if as_json else result.report())
