"""Benchmark set-up shared by every suite here: Lamina and PyTorch run at the same thread
count (LAMINA_BENCH_THREADS, default os.cpu_count()), and each Lamina/PyTorch pair's time
ratio is stored in the benchmark's extra_info and printed as a table at the end.

Run with `python -m pytest benchmarks -q` (not part of the default test paths).
"""
from __future__ import annotations

import os

import lamina  # noqa: F401  (first, as the CLI: sets OpenBLAS's thread timeout before NumPy loads; lamina/_openblas.py)
import pytest
import torch
from threadpoolctl import threadpool_limits

import lamina_cpu.backend  # noqa: F401  (loads the kernels' OpenMP runtime before the limit is set)

THREADS = int(os.environ.get("LAMINA_BENCH_THREADS") or os.cpu_count())
FRAMEWORKS = ("torch", "lamina")      # this order: the ratio is recorded on Lamina's benchmark

#: case -> framework -> median seconds per call, filled as the benchmarks run
_medians: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="session", autouse=True)
def same_thread_count():
    """PyTorch's intra-op pool, NumPy's BLAS and the kernels' OpenMP all at THREADS threads."""
    torch.set_num_threads(THREADS)
    with threadpool_limits(limits=THREADS):
        yield THREADS


@pytest.fixture(params=FRAMEWORKS)
def framework(request) -> str:
    """Each benchmark using it runs once per framework, PyTorch first."""
    return request.param


@pytest.fixture
def side_by_side(benchmark):
    """`time(case, framework, step, rounds)`: benchmark `step` under group `case`; once both
    frameworks of a case have run, put lamina_time/torch_time in extra_info["ratio_vs_torch"]."""

    def time(case: str, framework: str, step, rounds: int, warmup_rounds: int = 3):
        benchmark.group = case
        benchmark.extra_info.update(framework=framework, threads=THREADS)
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        if benchmark.stats is None:                     # --benchmark-disable: nothing was timed
            return
        timings = _medians.setdefault(case, {})
        timings[framework] = benchmark.stats.stats.median
        if len(timings) == len(FRAMEWORKS):
            benchmark.extra_info["ratio_vs_torch"] = timings["lamina"] / timings["torch"]

    return time


@pytest.hookimpl(trylast=True)       # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter):
    if not _medians:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"Lamina vs PyTorch: median time per call, {THREADS} thread(s) each")
    write(f"{'case':<44}{'lamina':>12}{'torch':>12}{'lamina/torch':>14}")
    for case, timings in _medians.items():
        lamina, torch_time = timings.get("lamina"), timings.get("torch")
        ratio = f"{lamina / torch_time:.2f}" if lamina and torch_time else "n/a"
        write(f"{case:<44}{_ms(lamina):>12}{_ms(torch_time):>12}{ratio:>14}")


def _ms(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"
