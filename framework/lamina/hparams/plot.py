"""trials.png: each trial's score against each sampled hyper-parameter, one panel per
hyper-parameter, on the scale it was sampled on (log for log_uniform; 1 − β on a log axis for
one_minus_log_uniform), coloured by round, the best trial starred. Matplotlib is optional."""
from __future__ import annotations

import math
from pathlib import Path

from ..plotting import have_matplotlib
from .results import ranked
from .space import SearchSpace


def plot_trials(records, space: SearchSpace, objective: str, direction: str, path) -> Path | None:
    """Draw the successful `records` into `path`; None without matplotlib."""
    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = ranked(records, direction)
    names = list(space.dims)
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.5 * rows), squeeze=False)
    rounds = sorted({r.round for r in ok})
    for ax, name in zip(axes.flat, names):
        dist, label = space.dims[name], name
        if dist.scale == "categorical":
            position = {value: i for i, value in enumerate(dist.values)}
            ax.set_xticks(range(len(dist.values)), [str(v) for v in dist.values])
            ax.set_xlim(-0.5, len(dist.values) - 0.5)
            x_of = position.__getitem__
        elif dist.scale == "one_minus_log":
            label, x_of = f"1 − {name}", lambda value: 1.0 - value
            _range_axis(ax, 1.0 - dist.high, 1.0 - dist.low, log=True)
        else:
            x_of = float
            _range_axis(ax, dist.low, dist.high, log=dist.scale == "log")
        for round_ in rounds:
            trials = [r for r in ok if r.round == round_]
            ax.scatter([x_of(r.params[name]) for r in trials], [r.score for r in trials], s=22, alpha=0.8,
                       label=f"round {round_}")
        if ok:
            ax.scatter([x_of(ok[0].params[name])], [ok[0].score], marker="*", s=160, color="gold",
                       edgecolors="black", zorder=3, label="best")
        ax.set(xlabel=label, ylabel=objective)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    if len(rounds) > 1 or ok:
        axes.flat[0].legend(fontsize="small")
    failed = len(records) - len(ok)
    fig.suptitle(f"{objective} of {len(ok)} trials" + (f" ({failed} failed, not shown)" if failed else ""))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _range_axis(ax, low: float, high: float, log: bool) -> None:
    """An x axis over the whole sampled range (a little wider), so a plot shows where the
    search did not look as well as where it did."""
    if log:
        ax.set_xscale("log")
        pad = (high / low) ** 0.04
        ax.set_xlim(low / pad, high * pad)
    else:
        pad = 0.04 * (high - low)
        ax.set_xlim(low - pad, high + pad)
