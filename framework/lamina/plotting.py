"""Plots a person would rather look at than read. Matplotlib is optional (`pip install lamina[plots]`)."""
from __future__ import annotations

from pathlib import Path


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def learning_curve(history, path, title: str = "") -> Path | None:
    """Cost per iteration and per epoch (and dev cost per epoch) as a PNG; None without matplotlib."""
    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_iter, ax_epoch) = plt.subplots(1, 2, figsize=(10, 4))
    ax_iter.plot(history.iteration_cost, linewidth=0.8)
    ax_iter.set(xlabel="iteration (mini-batch)", ylabel="cost J", title="cost per iteration")
    epochs = range(1, len(history.epoch_cost) + 1)
    ax_epoch.plot(epochs, history.epoch_cost, marker=".", label="train (mean over the epoch)")
    if history.dev_metrics:
        ax_epoch.plot(epochs[-len(history.dev_metrics):], [m["cost"] for m in history.dev_metrics],
                      marker=".", label="dev")
    ax_epoch.set(xlabel="epoch", ylabel="cost J", title="cost per epoch")
    ax_epoch.legend()
    for ax in (ax_iter, ax_epoch):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare_curves(histories: dict, path, title: str = "") -> Path | None:
    """The epoch cost of several runs (e.g. one per optimizer) on one plot; None without matplotlib."""
    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, history in histories.items():
        ax.plot(range(1, len(history.epoch_cost) + 1), history.epoch_cost, marker=".", label=label)
    ax.set(xlabel="epoch", ylabel="training cost J (mean over the epoch)", yscale="log",
           title=title or "learning curves")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
