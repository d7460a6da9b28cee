"""The CUDA backend (the lamina-cuda distribution): the conformance suite, tensors that stay on the
device, availability and selection, out-of-memory errors, and training with --backend cuda.

Without an NVIDIA GPU these run in Numba's CUDA simulator (tests/conftest.py switches it on), at
the suite's small sizes; on a GPU they run unchanged."""
import gc
import json
import weakref

import numpy as np
import pytest
from click.testing import CliRunner

import lamina as lm
from lamina import backend as backend_module
from lamina.cli import cli
from lamina.recipes import builtin_recipes
from lamina.testing import check_op, conformance_params, differentiable_op_names, gradcheck_op
from lamina_cuda import device


@pytest.mark.parametrize("case", conformance_params(["cuda"]))
def test_cuda_conforms(case):
    backend, op_name, dtype = case
    assert check_op(backend, op_name, dtype) > 0


def _ops_with_cuda_kernels() -> list[str]:
    kernels = backend_module.load_backend("cuda").kernels
    return [name for name in differentiable_op_names() if name in kernels]


@pytest.mark.simulator_slow
@pytest.mark.parametrize("op_name", _ops_with_cuda_kernels())
def test_gradcheck_cuda_kernels(op_name):
    """§2.10 on every CUDA kernel. Minutes per op in the simulator, so it runs on a GPU (or with
    --simulator-slow); there the conformance suite's float64 gradients, compared with the gradchecked
    reference backend, and the smaller gradchecks of tests/test_cuda_*.py cover the kernels."""
    results = gradcheck_op("cuda", op_name)
    assert results and all(r.relative_difference < 1e-7 for r in results)


def test_tensors_live_on_the_device_until_asked():
    with lm.use_backend("cuda"):
        x = lm.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
        y = (lm.F.relu(x - 5.0) * 2.0).sum()
        y.backward()
    for array in (x.data, y.data, x.grad.data):
        assert device.is_device_array(array) and not isinstance(array, np.ndarray)
    assert isinstance(x.grad.numpy(), np.ndarray)
    np.testing.assert_array_equal(x.grad.numpy(), 2.0 * (np.arange(12.0).reshape(3, 4) > 5))
    assert "backend='cuda'" in repr(y) and float(y) == 2.0 * sum(range(1, 7))


def test_device_arrays_are_released_with_their_tensors():
    with lm.use_backend("cuda"):
        x = lm.tensor(np.ones((16, 16)), requires_grad=True)
        y = (x @ x).sum()
        y.backward()
    arrays = [weakref.ref(t.data) for t in (x, y, x.grad)]
    del x, y
    gc.collect()
    assert all(ref() is None for ref in arrays)


def test_mixing_backends_is_a_clear_error():
    a = lm.tensor([1.0, 2.0])
    with lm.use_backend("cuda"):
        b = lm.tensor([1.0, 2.0])
    with pytest.raises(lm.BackendError, match="cannot mix tensors of backends 'cpu' and 'cuda'"):
        a + b


def test_out_of_range_labels_are_the_ops_error_and_never_read_outside_a_row():
    """The op's check names the bad labels before any kernel runs; the kernel called directly (no check, no
    copy of the labels to the host) gives that row a NaN loss instead of reading past it (the simulator raises
    on any access out of bounds)."""
    logits = np.random.default_rng(0).standard_normal((3, 4))
    bad = np.array([0, 4, 1])
    with lm.use_backend("cuda"):
        with pytest.raises(lm.OpError, match=r"softmax_cross_entropy: labels must lie in \[0, 4\), got values "
                                             r"from 0 to 4"):
            lm.ops.call("softmax_cross_entropy", lm.tensor(logits), lm.tensor(bad))
    cuda = backend_module.load_backend("cuda")
    loss, backprop = cuda.softmax_cross_entropy(device.to_device(logits), device.to_device(bad))
    assert np.isnan(loss.copy_to_host())
    good = np.array([0, 3, 1])
    loss, _ = cuda.softmax_cross_entropy(device.to_device(logits), device.to_device(good))
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(loss.copy_to_host(), -log_p[[0, 1, 2], good].mean(), rtol=1e-12)


def test_out_of_memory_names_the_request_and_the_free_memory(monkeypatch):
    class OutOfMemory(Exception):
        code = 2                # CUDA_ERROR_OUT_OF_MEMORY

    def fail(*args, **kwargs):
        raise OutOfMemory("[2] Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY")

    monkeypatch.setattr(device.cuda, "device_array", fail)
    monkeypatch.setattr(device, "memory_info", lambda: (1024 ** 3, 80 * 1024 ** 3))
    with pytest.raises(lm.BackendError, match=r"out of device memory allocating an array of shape \(1000, 1000\) "
                                              r"and dtype float32 \(3.8 MiB\); 1.0 GiB of 80.0 GiB free"):
        device.empty((1000, 1000), np.float32)


def test_other_allocation_failures_pass_through(monkeypatch):
    monkeypatch.setattr(device.cuda, "device_array", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        device.empty((2,), np.float32)


@pytest.fixture
def no_gpu(monkeypatch):
    """As on a machine with neither a GPU nor the simulator switched on."""
    monkeypatch.setattr(device, "availability", lambda: (False, "no usable CUDA GPU (CUDA driver library cannot "
                                                                "be found); set NUMBA_ENABLE_CUDASIM=1 ..."))
    monkeypatch.setattr(backend_module, "_instances", {})


def test_unavailable_backend_is_a_clear_error(no_gpu):
    with pytest.raises(lm.BackendError, match=r"backend 'cuda' \(from plugin 'cuda'\) is not available: no usable "
                                              r"CUDA GPU \(CUDA driver library cannot be found\).*Available: cpu"):
        lm.use_backend("cuda")


def test_cli_lists_and_refuses_an_unavailable_cuda(no_gpu, tmp_path):
    listing = CliRunner().invoke(cli, ["backends"])
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if line.startswith("cuda"))
    assert " no " in row and "CUDA driver library cannot be found" in row
    result = CliRunner().invoke(cli, ["train", "breast-cancer-logreg", "--backend", "cuda", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "backend 'cuda'" in result.output and "not available" in result.output


def test_cli_lists_the_simulator_or_the_gpu():
    listing = CliRunner().invoke(cli, ["backends"])
    row = next(line for line in listing.output.splitlines() if line.startswith("cuda"))
    assert " yes " in row and ("simulator" in row if device.simulator() else "compute capability" in row)


def _train(recipe: str, backend: str, out, *extra) -> dict:
    result = CliRunner().invoke(cli, ["train", recipe, "--backend", backend, "--out", str(out), "--no-progress",
                                      *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def test_smoke_recipe_trains_on_cuda_as_on_cpu(tmp_path):
    """Same seed, same host-drawn initial weights and batches: the runs agree to float32 rounding."""
    on_cuda = _train("breast-cancer-logreg", "cuda", tmp_path / "cuda", "--epochs", "3")
    on_cpu = _train("breast-cancer-logreg", "cpu", tmp_path / "cpu", "--epochs", "3")
    assert on_cuda.keys() == on_cpu.keys()
    cuda_losses = np.array(_losses(on_cuda))
    assert cuda_losses.size and np.all(np.isfinite(cuda_losses))
    np.testing.assert_allclose(cuda_losses, _losses(on_cpu), rtol=1e-4)


def _losses(metrics: dict) -> list[float]:
    """Every number in the metrics file, in order (losses and accuracies)."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            for key in sorted(value):
                walk(value[key])
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append(float(value))

    walk(metrics)
    return found


@pytest.mark.simulator_slow
@pytest.mark.parametrize("recipe", sorted(builtin_recipes()))
def test_every_core_recipe_trains_on_cuda(recipe, tmp_path):
    metrics = _train(recipe, "cuda", tmp_path / recipe, "--epochs", "1")
    assert all(np.isfinite(_losses(metrics)))


@pytest.mark.parametrize("how", ["env", "toml"])
def test_cuda_is_selected_like_any_backend(how, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if how == "env":
        monkeypatch.setenv("LAMINA_BACKEND", "cuda")
    else:
        (tmp_path / "lamina.toml").write_text('backend = "cuda"\n')
    result = CliRunner().invoke(cli, ["train", "breast-cancer-logreg", "--epochs", "1", "--out", str(tmp_path / "run"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "on backend 'cuda'" in result.output
