"""GPU checks and speed of the CUDA backend, in one run on a machine with an NVIDIA GPU.

    python benchmarks/gpu.py [--out results.md] [--skip-tests] [--sanitize] [--quick]

1. Timings side by side with PyTorch CUDA (and CuPy for the matrix product) when importable:
   the 4096³ float32 matrix product (TFLOP/s against the card's FP32 peak), a product the size of an
   LSTM step's (64×256 · 256×1024) with each tiling, conv2d forward+backward
   (32×56×56×64 → 64 filters 3×3 same), LSTM forward+backward (batch 64, T 100, input 128,
   hidden 256; the persistent kernel and the step-by-step recurrence), one digits-mlp training
   epoch, and the per-call costs of a small op (a launch, an allocation, a framework add). Each
   time is the median of repeated runs after warm-up runs (which include Numba's compilation),
   synchronised with the device.
2. The CUDA backend's tests with pytest, on the GPU: the conformance suite, gradient checks, the
   fused kernels and every core recipe training with --backend cuda (tests/test_cuda_*.py; the
   tests the simulator leaves out run here).
3. With --sanitize, a few ops' tests under compute-sanitizer (memcheck, racecheck).

Prints a Markdown table (also written to --out) for docs/performance.md. TF32 is off in PyTorch
so that both sides compute in float32. `--quick` runs the same code at tiny sizes, also in Numba's
simulator (tests/test_cuda_benchmark_script.py does that, marked simulator_slow: about 80 s there).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 10
FULL = {"matmul": 4096, "small_matmul": (64, 256, 1024), "conv2d": (32, 56, 56, 64, 64), "lstm": (64, 100, 128, 256),
        "mlp": (64, None), "calls": 100}
QUICK = {"matmul": 16, "small_matmul": (4, 8, 12), "conv2d": (2, 5, 5, 3, 2), "lstm": (2, 3, 4, 3), "mlp": (4, 1),
         "calls": 5}
SIZES = dict(FULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--skip-tests", action="store_true", help="only time (skip the pytest run)")
    parser.add_argument("--sanitize", action="store_true", help="run a few ops' tests under compute-sanitizer")
    parser.add_argument("--test-timeout", type=int, default=300, help="seconds for the pytest run")
    parser.add_argument("--test-log", type=Path, help="write pytest's whole output here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (runs in the simulator too)")
    args = parser.parse_args()

    from numba import cuda

    if args.quick:
        global REPEATS
        SIZES.update(QUICK)
        REPEATS = 1
    elif os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0") or not cuda.is_available():
        print("benchmarks/gpu.py needs an NVIDIA GPU (and NUMBA_ENABLE_CUDASIM unset), or --quick",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    report = Report(args.out)
    report.add([f"## {card_name()} — {time.strftime('%Y-%m-%d')}", "", versions(), ""])
    report.add(timings() + [""])
    if not args.skip_tests:
        report.add(run_tests(args.test_timeout, args.test_log) + [""])
    if args.sanitize:
        report.add(sanitize() + [""])
    report.add([f"Whole run: {time.perf_counter() - started:.0f} s."])
    return 0


class Report:
    """Lines printed as each part finishes (and appended to `path`), so a run cut short keeps its results."""

    def __init__(self, path: Path | None):
        self.path = path
        if path:
            path.write_text("")

    def add(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        print(text, end="", flush=True)
        if self.path:
            with self.path.open("a") as out:
                out.write(text)


# ---- the machine ------------------------------------------------------------------------------------
FP32_CORES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128,
                     (12, 0): 128}


def card_name() -> str:
    from numba import cuda

    if _simulator():
        return "Numba CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def fp32_peak_tflops() -> float:
    """2 · SMs · FP32 cores per SM · boost clock: the card's FP32 (non-tensor-core) peak."""
    from numba import cuda

    if _simulator():
        return float("nan")
    device = cuda.get_current_device()
    sms = device.MULTIPROCESSOR_COUNT
    clock_hz = device.CLOCK_RATE * 1e3
    cores = FP32_CORES_PER_SM.get(tuple(device.compute_capability), 128)
    return 2 * sms * cores * clock_hz / 1e12


def _simulator() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def versions() -> str:
    import numba
    import numba_cuda

    import lamina

    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}", f"Numba {numba.__version__}",
             f"numba-cuda {getattr(numba_cuda, '__version__', '?')}", f"Lamina {lamina.__version__}"]
    for module in ("torch", "cupy"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            parts.append(f"{module} not installed")
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        parts.append(f"driver {driver}")
    except (OSError, subprocess.TimeoutExpired) as err:
        parts.append(f"driver unknown (nvidia-smi: {type(err).__name__})")
    return "Versions: " + ", ".join(parts) + "."


# ---- tests on the GPU ------------------------------------------------------------------------------
def cuda_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_cuda_*.py"))


def run_tests(timeout: int, log: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10",
               *cuda_test_files()]
    begun = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if log:
            log.write_text(result.stdout + result.stderr)
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
        failures = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    except subprocess.TimeoutExpired as err:
        summary, failures = f"timed out after {timeout} s", (err.stdout or b"").decode()[-2000:].splitlines()
    lines = [f"Tests on the GPU ({' '.join(cuda_test_files())}), {time.perf_counter() - begun:.0f} s: {summary}"]
    return lines + [f"    {line}" for line in failures[:40]]


def sanitize() -> list[str]:
    lines = ["compute-sanitizer:"]
    conformance, recurrent = "tests/test_cuda_backend.py", "tests/test_cuda_recurrent.py"
    loaders = "tests/test_cuda_convolution.py tests/test_cuda_matmul.py"     # the products' own operand loaders
    for tool, tests, selection in (("memcheck", conformance, "conforms and (matmul or sum or max or getitem or softmax "
                                                             "or conv2d or max_pool2d or lstm or embedding)"),
                                   ("racecheck", conformance, "conforms and (matmul or sum or max) and float32"),
                                   ("memcheck", recurrent, "persistent"), ("racecheck", recurrent, "persistent"),
                                   ("memcheck", loaders, "implicit or bias_gradient or ones_row"),
                                   ("racecheck", loaders, "implicit or bias_gradient or ones_row")):
        command = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "99", sys.executable, "-m", "pytest",
                   "-q", "-p", "no:cacheprovider", *tests.split(), "-k", selection]
        try:
            result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
            errors = [line for line in result.stdout.splitlines() if "ERROR SUMMARY" in line or "RACECHECK SUMMARY"
                      in line]
            tail = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else [result.stderr[-300:]]
            lines.append(f"    {tool} ({tests} -k {selection[:40]}): exit {result.returncode}; "
                         f"{'; '.join(errors[-2:] or tail)}")
        except (OSError, subprocess.TimeoutExpired) as err:
            lines.append(f"    {tool}: not run ({type(err).__name__}: {err})")
    return lines


# ---- timing -------------------------------------------------------------------------------------------
def timed(fn, synchronize, warmup: int = 3, repeats: int | None = None) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs, each ended by `synchronize()`."""
    repeats = min(repeats or REPEATS, REPEATS)
    warmup = min(warmup, REPEATS)
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def timings() -> list[str]:
    from numba import cuda

    import lamina as lm

    lm.use_backend("cuda")
    lm.manual_seed(0)
    torch = _torch()
    sync = cuda.synchronize
    rows = []
    m, n_H, n_W, n_C_prev, n_C = SIZES["conv2d"]
    m_seq, T, n_x, n_a = SIZES["lstm"]
    M, K, N = SIZES["small_matmul"]
    for name, bench in ((f"matmul {SIZES['matmul']}³ float32", bench_matmul),
                        (f"matmul {M}×{K} · {K}×{N} float32 (an LSTM step's product)", bench_small_matmul),
                        (f"conv2d {m}×{n_H}×{n_W}×{n_C_prev} → {n_C} 3×3 same, fwd+bwd", bench_conv2d),
                        (f"LSTM {m_seq}×{T}×{n_x} → {n_a}, fwd+bwd", bench_lstm),
                        ("digits-mlp, one epoch", bench_mlp_epoch),
                        ("per call", bench_overheads)):
        try:
            rows += bench(name, torch, sync)
        except Exception as err:        # one broken benchmark must not hide the others
            rows.append((name, f"failed: {type(err).__name__}: {str(err)[:200]}", "", "", ""))
    peak = fp32_peak_tflops()
    lines = [f"FP32 peak of the card (2 · SMs · FP32 cores · clock): {peak:.1f} TFLOP/s.", pool_summary(), "",
             "| work | Lamina CUDA | reference | reference time | Lamina / reference |",
             "| --- | --- | --- | --- | --- |"]
    for work, ours, reference, theirs, ratio in rows:
        lines.append(f"| {work} | {ours} | {reference} | {theirs} | {ratio} |")
    return lines


def pool_summary() -> str:
    """How the device memory pool (lamina_cuda.memory) served the runs above."""
    from lamina_cuda import memory

    stats = memory.stats()
    if not stats:
        return "Device memory pool: not installed (Numba's own allocator)."
    served = stats["allocations"] + stats["reuses"]
    return (f"Device memory pool: {served} requests, {stats['reuses']} served by reusing a freed block, "
            f"{stats['allocations']} raw allocations; {stats['used_bytes'] / 2**20:.0f} MiB in use, "
            f"{stats['free_bytes'] / 2**20:.0f} MiB held free.")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _row(work, ours, reference, theirs, flops=None):
    extra = (lambda t: f" ({flops / t / 1e12:.1f} TFLOP/s)") if flops else (lambda t: "")
    return (work, _ms(ours) + extra(ours), reference, _ms(theirs) + extra(theirs), f"{ours / theirs:.2f}")


def bench_overheads(name, torch, sync):
    """What a small op costs besides its arithmetic, per call (SIZES["calls"] calls a run): a kernel launch (filling one
    element), a 1 MiB device allocation freed at once (the pool's reuse), and a one-element add through the
    whole framework (op checks, dispatch, autograd bookkeeping, the kernel)."""
    import lamina as lm
    from lamina_cuda import device
    from lamina_cuda.kernels.elementwise import fill

    calls = SIZES["calls"]
    one = device.empty((1,), np.float32)
    a, b = lm.tensor(np.ones(1, np.float32)), lm.tensor(np.ones(1, np.float32))

    def repeat(fn):
        return lambda: [fn() for _ in range(calls)]

    ours = {"launch": timed(repeat(lambda: fill(one, 0)), sync),
            "allocation": timed(repeat(lambda: device.empty((262144,), np.float32)), sync),
            "add": timed(repeat(lambda: a + b), sync)}
    labels = {"launch": "kernel launch (fill one element)", "allocation": "1 MiB device allocation, freed",
              "add": "one-element add through the framework"}
    if torch is None:
        return [(f"{name}: {labels[k]}", _us(t / calls), "PyTorch not importable", "", "") for k, t in ours.items()]
    t_one, ta, tb = (torch.ones(1, device="cuda") for _ in range(3))
    theirs = {"launch": timed(repeat(lambda: t_one.fill_(0)), torch.cuda.synchronize),
              "allocation": timed(repeat(lambda: torch.empty(262144, device="cuda")), torch.cuda.synchronize),
              "add": timed(repeat(lambda: ta + tb), torch.cuda.synchronize)}
    return [(f"{name}: {labels[k]}", _us(ours[k] / calls), "PyTorch", _us(theirs[k] / calls),
             f"{ours[k] / theirs[k]:.2f}") for k in ours]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def bench_matmul(name, torch, sync):
    from lamina.ops import call
    from lamina_cuda.kernels.matmul import GPU_TILINGS, Tiling, gemm, tiling_for

    import lamina as lm

    n = SIZES["matmul"]
    rng = np.random.default_rng(0)
    a_host, b_host = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a, b = lm.tensor(a_host), lm.tensor(b_host)
    flops = 2 * n ** 3
    with lm.no_grad():
        ours = timed(lambda: call("matmul", a, b), sync)
    check = call("matmul", a[:64], b).numpy()
    error = np.abs(check - a_host[:64] @ b_host).max()
    rows = []
    default = tiling_for(np.float32, n, n)
    for tiling in (*GPU_TILINGS[np.dtype(np.float32)], Tiling(128, 64, 8, 8, 4), Tiling(128, 128, 16, 8, 8)):
        if tiling != default and not _simulator():
            t = timed(lambda: gemm(a.data, b.data, tiling=tiling), sync, repeats=5)
            rows.append((f"matmul 4096³ float32, tiling {tiling}", _ms(t) + f" ({flops / t / 1e12:.1f} TFLOP/s)",
                         "(the default tiling above)", _ms(ours), f"{t / ours:.2f}"))
    head = []
    if torch is not None:
        ta, tb = torch.from_numpy(a_host).cuda(), torch.from_numpy(b_host).cuda()
        theirs = timed(lambda: ta @ tb, torch.cuda.synchronize)
        head.append(_row(f"{name} (default tiling {default}; max error {error:.1e})", ours,
                         "PyTorch (cuBLAS)", theirs, flops))
    else:
        head.append((name, _ms(ours), "PyTorch not importable", "", ""))
    try:
        import cupy

        ca, cb = cupy.asarray(a_host), cupy.asarray(b_host)
        theirs = timed(lambda: ca @ cb, cupy.cuda.Device().synchronize)
        head.append(_row(name, ours, "CuPy (cuBLAS)", theirs, flops))
    except ImportError:
        head.append((name, _ms(ours), "CuPy not importable", "", ""))
    return head + rows


def bench_small_matmul(name, torch, sync):
    """A product too small to fill the GPU with 128×128 tiles: the tiling `tiling_for` picks, the others,
    and cuBLAS."""
    from lamina_cuda import device
    from lamina_cuda.kernels.matmul import GPU_TILINGS, gemm, tiling_for

    M, K, N = SIZES["small_matmul"]
    rng = np.random.default_rng(1)
    a_host, b_host = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    a, b = device.to_device(a_host), device.to_device(b_host)
    chosen = tiling_for(np.float32, M, N)
    ours = timed(lambda: gemm(a, b), sync)
    rows = []
    if torch is not None:
        ta, tb = torch.from_numpy(a_host).cuda(), torch.from_numpy(b_host).cuda()
        rows.append(_row(f"{name} (tiling {chosen})", ours, "PyTorch (cuBLAS)", timed(lambda: ta @ tb,
                                                                                    torch.cuda.synchronize)))
    else:
        rows.append((f"{name} (tiling {chosen})", _ms(ours), "PyTorch not importable", "", ""))
    for tiling in GPU_TILINGS[np.dtype(np.float32)]:
        if tiling != chosen and not _simulator():
            t = timed(lambda: gemm(a, b, tiling=tiling), sync)
            rows.append((f"{name}, tiling {tiling}", _ms(t), "(the chosen tiling above)", _ms(ours),
                         f"{t / ours:.2f}"))
    return rows


def bench_conv2d(name, torch, sync):
    from lamina.ops import call

    import lamina as lm

    m, n_H, n_W, n_C_prev, n_C = SIZES["conv2d"]
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((m, n_H, n_W, n_C_prev), dtype=np.float32)
    w_host = (rng.standard_normal((3, 3, n_C_prev, n_C)) * 0.05).astype(np.float32)
    b_host = np.zeros(n_C, np.float32)
    g_host = rng.standard_normal((m, n_H, n_W, n_C), dtype=np.float32)
    x, w, b = (lm.tensor(v, requires_grad=True) for v in (x_host, w_host, b_host))
    g = lm.tensor(g_host)

    def ours_step():
        for t in (x, w, b):
            t.grad = None
        call("conv2d", x, w, b, stride=1, padding="same").backward(g)

    ours = timed(ours_step, sync)
    if torch is None:
        return [(name, _ms(ours), "PyTorch not importable", "", "")]
    tx = torch.from_numpy(x_host).cuda().permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    tx.requires_grad_()
    tw = torch.from_numpy(w_host).cuda().permute(3, 2, 0, 1).contiguous().requires_grad_()
    tb = torch.from_numpy(b_host).cuda().requires_grad_()
    tg = torch.from_numpy(g_host).cuda().permute(0, 3, 1, 2)

    def torch_step():
        for t in (tx, tw, tb):
            t.grad = None
        torch.nn.functional.conv2d(tx, tw, tb, padding=1).backward(tg)

    theirs = timed(torch_step, torch.cuda.synchronize)
    return [_row(name, ours, "PyTorch (cuDNN, channels-last)", theirs)]


def bench_lstm(name, torch, sync):
    from lamina_cuda.kernels import persistent

    from lamina.ops import call

    import lamina as lm

    m, T, n_x, n_a = SIZES["lstm"]
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(n_a)
    host = {"x": rng.standard_normal((m, T, n_x)), "W_x": rng.uniform(-scale, scale, (n_x, 4 * n_a)),
            "W_a": rng.uniform(-scale, scale, (n_a, 4 * n_a)), "b": np.zeros(4 * n_a)}
    host = {k: v.astype(np.float32) for k, v in host.items()}
    zeros = np.zeros((m, n_a), np.float32)
    t = {k: lm.tensor(v, requires_grad=True) for k, v in host.items()}
    a0, c0 = lm.tensor(zeros), lm.tensor(zeros)
    g = lm.tensor(rng.standard_normal((m, T, n_a)).astype(np.float32))

    def ours_step():
        for v in t.values():
            v.grad = None
        out = call("lstm", t["x"], a0, c0, t["W_x"], t["W_a"], t["b"])
        out = out[0] if isinstance(out, tuple) else out
        out.backward(g)

    ways = {}           # the persistent kernel (when its plan fits) and the step-by-step recurrence
    for way, setting in (("persistent", "1"), ("step by step", "0")):
        previous = os.environ.get(persistent.ENVIRONMENT)
        os.environ[persistent.ENVIRONMENT] = setting
        try:
            if setting == "0" or persistent.plan(np.dtype(np.float32), m, n_a, 4):
                ways[way] = timed(ours_step, sync, repeats=5)
        finally:
            if previous is None:
                del os.environ[persistent.ENVIRONMENT]
            else:
                os.environ[persistent.ENVIRONMENT] = previous
    if torch is None:
        return [(f"{name} ({way})", _ms(ours), "PyTorch not importable", "", "") for way, ours in ways.items()]
    lstm = torch.nn.LSTM(n_x, n_a, batch_first=True).cuda()
    tx = torch.from_numpy(host["x"]).cuda().requires_grad_()
    tg = torch.from_numpy(g.numpy()).cuda()

    def torch_step():
        lstm.zero_grad()
        tx.grad = None
        lstm(tx)[0].backward(tg)

    theirs = timed(torch_step, torch.cuda.synchronize, repeats=5)
    return [_row(f"{name} ({way})", ours, "PyTorch (cuDNN)", theirs) for way, ours in ways.items()]


def bench_mlp_epoch(name, torch, sync):
    """One epoch of digits-mlp's training steps (forward, loss, backward, Adam) in its batches of 64."""
    import lamina as lm
    from lamina.recipes import load_recipe

    recipe = load_recipe("digits-mlp")
    data = recipe.load_data()
    X, y = data.train.X.astype(np.float32), data.train.y.astype(np.int64)
    model = recipe.build_model(X.shape[1])
    optimizer = recipe.build_optimizer(model.parameters(trainable_only=True))
    loss_fn = recipe.build_loss()
    size, steps = SIZES["mlp"]
    starts = list(range(0, len(X), size))[:steps]
    batches = [(lm.tensor(X[i:i + size]), lm.tensor(y[i:i + size])) for i in starts]

    def ours_epoch():
        for xb, yb in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()

    ours = timed(ours_epoch, sync, warmup=2, repeats=5)
    if torch is None:
        return [(f"{name} ({len(batches)} steps of {size})", _ms(ours), "PyTorch not importable", "", "")]
    sizes = [X.shape[1], 256, 128, 64, 10]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    torch_batches = [(torch.from_numpy(X[i:i + size]).cuda(), torch.from_numpy(y[i:i + size]).cuda())
                     for i in starts]

    def torch_epoch():
        for xb, yb in torch_batches:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()

    theirs = timed(torch_epoch, torch.cuda.synchronize, warmup=2, repeats=5)
    return [_row(f"{name} ({len(batches)} steps of {size})", ours, "PyTorch (eager)", theirs)]


if __name__ == "__main__":
    sys.exit(main())
