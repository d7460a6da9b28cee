"""The search driver: random configurations (§2.18) trained as trials in parallel on Dask
distributed, in coarse-to-fine rounds, each finished trial recorded at once.

Dask runs the trials on a `LocalCluster` of one single-threaded worker process per CPU (nothing
to set up), or on any running scheduler (`--scheduler tcp://host:8786`), so the same search
runs on a cluster of machines. There every worker needs lamina and the recipe's plugins
installed, and one thread each (`dask worker tcp://host:8786 --nthreads 1`); trial folders
are written at the same path on the worker's machine (a shared file system gathers them),
while trials.json, trials.csv, best.toml and trials.png are written by the driver. A trial
whose worker dies fails at once on the local cluster; a running scheduler first retries it on
other workers, as often as its `distributed.scheduler.allowed-failures` says (default 3).
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import uuid
from concurrent.futures import CancelledError
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, LaminaError
from .plot import plot_trials
from .results import BEST_FILE, FAILED, OK, TrialRecord, TrialStore, ranked, write_best
from .space import SearchSpace, apply_params, check_space, default_space

TRIALS_DIR, PLOT_FILE = "trials", "trials.png"
CONNECT_TIMEOUT = "10s"         # how long to wait for the scheduler of --scheduler


@dataclass
class TrialSpec:
    """What a worker needs to run one trial (plain data, so it travels to any machine)."""

    id: str
    round: int                  # from 1
    index: int                  # within the round, from 0
    params: dict                # the sampled hyper-parameters, by their names in the space
    recipe: dict                # the complete recipe of this trial (`Recipe.to_dict()`)
    source: str
    out_dir: str                # this trial's folder
    backend: str
    metric: str                 # the objective is this metric on the dev split


def train_trial(spec: TrialSpec) -> dict:
    """Train the trial's recipe into its folder (no plots; the log in train.log) and score it:
    {"score": dev <metric>, "metrics": the train/dev cost and metrics}."""
    from ..backend import use_backend
    from ..recipes import Recipe
    from ..run import train_recipe

    recipe = Recipe.from_dict(spec.recipe, spec.source)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log, use_backend(spec.backend):
        results = train_recipe(recipe, out, progress=False, echo=lambda line: print(line, file=log, flush=True),
                               plots=False)
    key = f"dev_{spec.metric}"
    if key not in results:
        raise ConfigError(f"recipe {recipe.name!r} gave no {key}: hyper-parameters are chosen on the dev split, "
                          f"and its dataset has none")
    metrics = {k: v for k, v in results.items()
               if k.startswith(("train_", "dev_")) and isinstance(v, (int, float))}
    return {"score": float(results[key]), "metrics": dict(metrics, epochs=results.get("epochs"))}


def _execute(objective: Callable, spec: TrialSpec) -> dict:
    """Runs on the worker: the objective's result, timed, with where it ran."""
    start = time.perf_counter()
    result = objective(spec)
    return {"result": result, "seconds": time.perf_counter() - start,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _lamina_version() -> str:
    from .. import __version__

    return __version__


# ---- clusters -------------------------------------------------------------------------------------
def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def local_cluster(workers: int | None = None):
    """A Dask LocalCluster for trials: `workers` processes (default: one per available CPU) of
    one thread each, quiet logs, the dashboard (with bokeh installed) on a free port. A trial
    whose worker dies fails at once (allowed-failures 0) instead of being retried on the next
    worker, since a trial that killed one worker (e.g. by running out of memory) would most
    likely kill the next."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return LocalCluster(n_workers=workers or available_cpus(), threads_per_worker=1, processes=True,
                            dashboard_address=":0", silence_logs=logging.CRITICAL)


@contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, client=None, echo=print):
    """A Dask client: `client` itself, or one of the scheduler at `scheduler`, or of a new
    local cluster (closed afterwards). Yields (client, a description for the log)."""
    if client is not None:
        yield client, f"the Dask scheduler at {client.scheduler.address}"
        return
    from distributed import Client

    if scheduler:
        if workers:
            raise ConfigError("--workers sizes the local cluster; with --scheduler the cluster's own workers "
                              "run the trials")
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}. Start one with "
                              f"`dask scheduler` and workers with `dask worker {scheduler} --nthreads 1`, "
                              f"or leave --scheduler out to run on a local cluster") from err
        try:
            try:
                versions = client.run(_lamina_version)
            except Exception as err:
                raise ConfigError(f"the Dask workers of {scheduler} cannot run lamina trials "
                                  f"({type(err).__name__}: {err}); install lamina and the plugins the recipe "
                                  f"uses on every worker") from err
            if not versions:
                echo(f"the Dask scheduler at {scheduler} has no workers yet; the trials wait for some")
            yield client, f"the Dask scheduler at {scheduler} ({len(versions)} workers now)"
        finally:
            client.close()
        return
    cluster = local_cluster(workers)
    client = Client(cluster)
    try:
        yield client, f"a local Dask cluster of {len(cluster.workers)} single-threaded worker processes"
    finally:
        client.close()
        cluster.close()


# ---- the search -------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    out_dir: Path
    records: list[TrialRecord]          # every trial of the search, by id
    best: TrialRecord | None
    objective: str                      # e.g. "dev_accuracy"
    direction: str                      # "max" or "min"
    ran: list[str] = field(default_factory=list)    # the ids this call ran (not resumed)
    plot: Path | None = None            # trials.png, unless matplotlib is missing

    @property
    def failed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == FAILED]


def objective_direction(metric: str, direction: str | None) -> str:
    """"max" or "min": `direction` if given, else "min" for the cost and for a metric whose class
    says `higher_is_better = False`, "max" otherwise (accuracy, F1, ...)."""
    if direction is not None:
        if direction not in ("max", "min"):
            raise ConfigError(f"direction must be 'max' or 'min', got {direction!r}")
        return direction
    from ..metrics import higher_is_better

    return "max" if higher_is_better(metric) else "min"


def round_sizes(trials: int, rounds: int) -> list[int]:
    """`trials` split over `rounds` as evenly as possible, the earlier rounds taking the remainder."""
    if not 1 <= rounds <= trials:
        raise ConfigError(f"need 1 ≤ rounds ≤ trials, got {rounds} rounds for {trials} trials")
    return [trials // rounds + (r < trials % rounds) for r in range(rounds)]


def run_search(recipe, space: SearchSpace | None = None, out_dir="hparams", *, trials: int, rounds: int = 1,
               seed: int = 0, top: float = 0.25, metric: str | None = None, direction: str | None = None,
               client=None, scheduler: str | None = None, workers: int | None = None,
               backend: str | None = None, objective: Callable = train_trial, retry_failed: bool = False,
               plot: bool = True, progress: bool = False, echo: Callable = print) -> SearchResult:
    """Random search for the hyper-parameters of `recipe` that score best on dev.

    `trials` configurations are drawn from `space` (default: `default_space(recipe)`) over
    `rounds` coarse-to-fine rounds: after each round every range is zoomed around the best
    `top` fraction of the successful trials so far. The trials of a round run in parallel on
    Dask (`client`, else the scheduler at `scheduler`, else a new local cluster of `workers`).
    Each finished trial is recorded in `out_dir` (trials.json, trials.csv, best.toml) at once;
    a folder that already holds this search is resumed, its finished trials kept (failed ones
    run again with `retry_failed`); trials.png is drawn at the end (`plot`).
    `objective(TrialSpec) -> {"score": float, "metrics": {...}}` runs one trial (default:
    `train_trial`); a trial that raises, or whose worker dies, is recorded as failed and the
    search goes on.
    """
    from ..backend import get_backend

    if not 0 < top <= 1:
        raise ConfigError(f"top must be a fraction in (0, 1], got {top!r}")
    sizes = round_sizes(trials, rounds)
    metric = metric or recipe.training["metrics"][0]
    if metric != "cost" and metric not in recipe.training["metrics"]:
        recipe = recipe.with_overrides(metrics=[*recipe.training["metrics"], metric])
    direction = objective_direction(metric, direction)
    objective_name = f"dev_{metric}"
    space = space or default_space(recipe)
    check_space(space, recipe)
    backend = backend or get_backend().name
    out_dir = Path(out_dir).resolve()
    settings = {"recipe": recipe.to_dict(), "space": space.to_dict(), "trials": trials, "rounds": rounds,
                "seed": seed, "top": top, "objective": objective_name, "direction": direction}
    store = TrialStore.open(out_dir, settings)
    table = _Table(objective_name, list(space.dims))
    ran: list[str] = []

    with connect(scheduler, workers, client, echo) as (dask_client, where), \
            _progress(progress, trials) as bar:
        def say(line: str) -> None:
            if bar is None:
                echo(line)
            else:
                with bar.external_write_mode():
                    echo(line)

        say(f"searching {trials} configurations of {recipe.name!r} in {rounds} round{'s' * (rounds > 1)} "
            f"for the best {objective_name} ({direction}imum), seed {seed}, on {where}")
        resumed = sum(1 for r in store.records.values() if r.ok or not retry_failed)
        if resumed:
            say(f"resuming the search in {out_dir}: {resumed} trials already finished")

        def keep(record: TrialRecord) -> None:
            store.add(record)
            ran.append(record.id)
            say(table.row(record))
            if bar is not None:
                bar.update(1)
            if record.ok and ranked(store.records.values(), direction)[0] is record:
                write_best(out_dir / BEST_FILE, recipe, record, objective_name)

        current, first = space, 0
        for round_, size in enumerate(sizes, start=1):
            if round_ > 1:
                current = _zoomed(current, store, round_, top, direction, say)
            store.spaces[round_ - 1:] = [current.to_dict()]
            if round_ == 1:
                say(f"search space:\n{current}")
            specs = [_spec(recipe, current, seed, round_, first + i, i, out_dir, backend, metric)
                     for i in range(size)]
            first += size
            todo = [s for s in specs if not _finished(store.records.get(s.id), s, retry_failed)]
            if bar is not None:
                bar.update(len(specs) - len(todo))
            if not todo:
                continue
            if not ran:
                say(table.header())
            with closing(_run_trials(dask_client, objective, todo)) as finished:
                for record in finished:
                    keep(record)
        store.save()

    records = sorted(store.records.values(), key=lambda r: r.id)
    best = ranked(records, direction)
    if best:
        write_best(out_dir / BEST_FILE, recipe, best[0], objective_name)
    drawn = plot_trials(records, space, objective_name, direction, out_dir / PLOT_FILE) if plot else None
    return SearchResult(out_dir, records, best[0] if best else None, objective_name, direction, ran, drawn)


def _spec(recipe, space: SearchSpace, seed: int, round_: int, number: int, index: int, out_dir: Path,
          backend: str, metric: str) -> TrialSpec:
    params = space.sample(seed, round_, index)
    trial_id = f"{number:04d}"
    return TrialSpec(trial_id, round_, index, params, apply_params(recipe, params).to_dict(), recipe.source,
                     str(out_dir / TRIALS_DIR / trial_id), backend, metric)


def _finished(record: TrialRecord | None, spec: TrialSpec, retry_failed: bool) -> bool:
    """Whether a stored record stands for this trial: same configuration (a later round's may
    differ if the trials it was zoomed from changed) and not a failure to retry."""
    return record is not None and record.params == spec.params and (record.ok or not retry_failed)


def _zoomed(space: SearchSpace, store: TrialStore, round_: int, top: float, direction: str, say) -> SearchSpace:
    earlier = ranked((r for r in store.records.values() if r.round < round_), direction)
    if not earlier:
        say(f"round {round_}: no successful trial yet to zoom around; sampling the same space again")
        return space
    best = earlier[:max(1, math.ceil(top * len(earlier)))]
    zoomed = space.zoom([r.params for r in best])
    say(f"round {round_}: the space zoomed around the best {len(best)} of {len(earlier)} successful trials:\n"
        f"{zoomed}")
    return zoomed


def _run_trials(client, objective: Callable, specs: list[TrialSpec]):
    """Run the trials, yielding each one's record as it finishes, whatever the order.

    No more trials are handed to the scheduler than the workers have threads (counted again as
    each finishes, so workers that join are used): a worker then holds only the trials it is
    running, and when it dies no trial that was merely queued there is lost with it.
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    waiting, running = list(specs), {}

    def submit() -> list:
        started = []
        while waiting and len(running) < max(1, sum(client.nthreads().values())):
            spec = waiting.pop(0)
            future = client.submit(_execute, objective, spec, key=f"lamina-trial-{spec.id}-{token}", pure=False)
            running[future] = spec
            started.append(future)
        return started

    finished = as_completed(submit())
    cancelled = 0
    try:
        for future in finished:
            spec = running.pop(future)
            finished.update(submit())
            try:
                ran = future.result()
            except CancelledError:
                cancelled += 1
                continue
            except Exception as err:
                yield _failed(spec, _describe(err))
                continue
            yield _record(spec, ran)
    finally:
        if running:                     # interrupted: stop the trials still running
            client.cancel(list(running))
    if cancelled:
        raise LaminaError(f"{cancelled} trials were cancelled (did the Dask scheduler go away?); they are not "
                          f"recorded: run the same search again to run them")


def _record(spec: TrialSpec, ran: dict) -> TrialRecord:
    """The record of a trial from what `_execute` returned."""
    result, where = ran["result"], {"seconds": ran["seconds"], "worker": ran["worker"]}
    score = result.get("score") if isinstance(result, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return _failed(spec, f"the objective returned {result!r}; expected a dict with a numeric 'score'", **where)
    metrics = result.get("metrics", {})
    if not math.isfinite(score):
        return _failed(spec, f"the score is {score}", metrics=metrics, **where)
    return TrialRecord(spec.id, spec.round, spec.index, spec.params, OK, float(score), metrics, **where)


def _failed(spec: TrialSpec, error: str, metrics: dict | None = None, seconds: float | None = None,
            worker: str | None = None) -> TrialRecord:
    return TrialRecord(spec.id, spec.round, spec.index, spec.params, FAILED, None, metrics or {}, error, seconds,
                       worker)


def _describe(err: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(err, KilledWorker):
        worker = getattr(err.last_worker, "address", err.last_worker)
        return f"KilledWorker: the worker process running this trial died ({worker})"
    return f"{type(err).__name__}: {err}"


@contextmanager
def _progress(enabled: bool, total: int):
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True, desc="trials")
    try:
        yield bar
    finally:
        bar.close()


class _Table:
    """One line per finished trial, in columns under a header."""

    def __init__(self, objective: str, params: list[str]):
        self.columns = [("trial", 5), ("round", 5), (objective, max(len(objective), 8))]
        self.columns += [(name, max(len(name), 10)) for name in params]
        self.columns += [("seconds", 7)]
        self.params = params

    def header(self) -> str:
        return "  ".join(f"{name:<{width}}" for name, width in self.columns) + "  worker"

    def row(self, record: TrialRecord) -> str:
        score = "FAILED" if not record.ok else f"{record.score:.4f}"
        seconds = "" if record.seconds is None else f"{record.seconds:.1f}"
        cells = [record.id, str(record.round), score, *(_format(record.params[p]) for p in self.params), seconds]
        line = "  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, self.columns))
        return f"{line}  {record.worker or ''}" + (f"  {record.error}" if record.error else "")


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
