"""`lamina hparams RECIPE`: the search as a command, registered by the core plugin."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..cli import load_recipe_argument, select_backend, backend_option
from ..errors import LaminaError


@click.command()
@click.argument("recipe")
@backend_option
@click.option("--trials", type=click.IntRange(min=1), default=16, show_default=True,
              help="Configurations to try, over all rounds.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Coarse-to-fine rounds: after each, the ranges zoom in around the best trials.")
@click.option("--top", type=click.FloatRange(0, 1, min_open=True), default=0.25, show_default=True,
              help="The fraction of the successful trials a round zooms around.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Search space TOML (default: lr, the optimizer's β and the batch size around the recipe's).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sampling seed: the same seed draws the same configurations.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs per trial (default: the recipe's).")
@click.option("--metric", help="Objective: this metric on the dev split (default: the recipe's first metric).")
@click.option("--direction", type=click.Choice(["max", "min"]),
              help="Whether a higher or lower objective is better (default: max, min for cost).")
@click.option("--scheduler", metavar="ADDRESS",
              help="A running Dask scheduler, e.g. tcp://host:8786 (overrides LAMINA_DASK_SCHEDULER and "
                   "dask_scheduler in lamina.toml); default: a local cluster.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes of the local cluster (default: one per CPU).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Search folder (default: runs/<recipe>-hparams); one holding this search is resumed.")
@click.option("--retry-failed", is_flag=True, help="When resuming, run the failed trials again.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def hparams(recipe, backend, trials, rounds, top, space_file, seed, epochs, metric, direction, scheduler, workers,
            out, retry_failed, progress):
    """Random search (§2.18) for RECIPE's best hyper-parameters, trials in parallel on Dask.

    Each trial trains RECIPE with sampled settings into OUT/trials/<id>/ and is scored on the
    dev split. OUT gets trials.json and trials.csv (after every trial: an interrupted search
    resumes where it stopped when run again), best.toml (a recipe for `lamina train`) and
    trials.png. Space keys are settings: lr, beta1, batch_size, ... or paths such as
    model.layers.0.n_out.
    """
    from ..config import resolve
    from .search import run_search
    from .space import load_space

    select_backend(backend)
    scheduler = scheduler or resolve().dask_scheduler.value or None
    spec = load_recipe_argument(recipe).with_overrides(epochs=epochs)
    out = out or Path("runs") / f"{spec.name}-hparams"
    try:
        space = load_space(space_file) if space_file else None
        result = run_search(spec, space, out, trials=trials, rounds=rounds, seed=seed, top=top, metric=metric,
                            direction=direction, scheduler=scheduler, workers=workers, retry_failed=retry_failed,
                            progress=progress and sys.stderr.isatty(), echo=click.echo)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: the finished trials are saved in {out}/; run the same command again to "
                   f"resume the search", err=True)
        sys.exit(130)

    if result.failed:
        click.echo(f"{len(result.failed)} of {len(result.records)} trials failed: "
                   + "; ".join(f"{r.id} ({r.error})" for r in result.failed))
    if result.best is None:
        raise click.ClickException(f"all {len(result.records)} trials failed, so there is no best configuration")
    best = result.best
    shown = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best.params.items())
    click.echo(f"best: trial {best.id}, {result.objective} {best.score:.4f}: {shown}")
    written = ["trials.json", "trials.csv", "best.toml"] + (["trials.png"] if result.plot else []) + ["trials/"]
    click.echo(f"wrote {result.out_dir}/: {', '.join(written)}")
    if result.plot is None:
        click.echo("matplotlib is not installed, so no trials.png was drawn (pip install 'lamina[plots]')")
    click.echo(f"train it: lamina train {result.out_dir / 'best.toml'}")
