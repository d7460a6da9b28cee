"""Local response normalization (AlexNet, §4.7): parity with torch.nn.functional.local_response_norm
forward and backward (NHWC <-> NCHW) for the CPU kernel and the composite default (on the reference
backend), float64 gradient checks of the op and the layer, a hand-computed value, argument errors and
the layer's registry name."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina as lm
from lamina.backend import load_backend
from lamina.errors import OpError, ShapeError
from lamina.ops import call
from lamina.registry import resolve
from lamina.tensor import Tensor
from lamina.testing import check_op, gradcheck_op, reference_backend, run_layer_test

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


@pytest.fixture(params=["cpu", "reference"])
def backend(request):
    """The CPU backend's NumPy kernel, or the reference backend, which runs the composite default."""
    return load_backend("cpu") if request.param == "cpu" else reference_backend()


CASES = [  # (shape NHWC, size, alpha, beta, k)
    ((2, 4, 3, 8), 5, 1e-4, 0.75, 2.0),        # AlexNet's constants
    ((2, 3, 3, 8), 5, 0.8, 0.75, 2.0),         # a large α: the normalization matters
    ((1, 2, 5, 6), 2, 1.5, 0.5, 1.0),          # even n: the window is off centre
    ((3, 2, 2, 4), 3, 2.0, 1.5, 0.5),
    ((1, 3, 2, 3), 9, 1.0, 0.75, 1.0),         # window wider than the channels
    ((2, 1, 1, 5), 1, 0.5, 2.0, 1.0),          # n = 1: each channel alone
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[1:])))
def test_matches_torch_forward_and_backward(backend, case, dtype):
    shape, size, alpha, beta, k = case
    rng = np.random.default_rng(size * 10 + shape[-1])
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    up = rng.standard_normal(shape).astype(dtype)
    xl = Tensor(x, dtype=dtype, backend=backend, requires_grad=True)
    out = call("local_response_norm", xl, size=size, alpha=alpha, beta=beta, k=k)
    (out * Tensor(up, dtype=dtype, backend=backend)).sum().backward()

    xt = torch.tensor(x).permute(0, 3, 1, 2).detach().requires_grad_()
    want = TF.local_response_norm(xt, size, alpha=alpha, beta=beta, k=k)
    (want * torch.tensor(up).permute(0, 3, 1, 2)).sum().backward()

    tol = TOLERANCE[dtype]
    assert out.dtype == np.dtype(dtype) and xl.grad.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out.numpy(), want.detach().permute(0, 2, 3, 1).numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(xl.grad.numpy(), xt.grad.permute(0, 2, 3, 1).numpy(), rtol=tol, atol=tol)


def test_hand_computed_value(backend):
    """Channels (1, 2, 3), n = 3, α = 3, β = 1, k = 1: d = 1 + (α/n)·(window sums 5, 14, 13)."""
    x = Tensor(np.array([[1.0, 2.0, 3.0]]), dtype=np.float64, backend=backend)
    out = call("local_response_norm", x, size=3, alpha=3.0, beta=1.0, k=1.0)
    np.testing.assert_allclose(out.numpy(), [[1 / 6, 2 / 15, 3 / 14]], rtol=1e-15)


def test_gradcheck_float64(backend):
    results = gradcheck_op(backend, "local_response_norm")
    assert len(results) == 4 and all(r.passed for r in results)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_kernel_conforms(dtype):
    assert "local_response_norm" in load_backend("cpu").kernels
    assert check_op("cpu", "local_response_norm", dtype) == 4


def test_layer_run_layer_test_and_torch_module():
    report = run_layer_test(lambda: lm.nn.LocalResponseNorm(size=3, alpha=0.9, beta=0.75, k=1.5), (2, 3, 3, 5),
                            expected_output_shape=(2, 3, 3, 5))
    assert report.gradcheck.passed and report.num_parameters == 0
    layer = lm.nn.LocalResponseNorm()
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, 1e-4, 0.75, 2.0)
    x = np.random.default_rng(4).standard_normal((2, 4, 4, 7)) * 30
    with lm.set_default_dtype("float64"):
        got = layer(lm.tensor(x)).numpy()
    want = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(torch.tensor(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=1e-12)
    assert layer.output_shape((None, 4, 4, 7)) == (None, 4, 4, 7)
    assert "size=5" in repr(layer)


def test_registered_as_a_layer():
    assert resolve("layers", "local_response_norm") is lm.nn.LocalResponseNorm


def test_functional_wrapper_uses_the_layer_defaults():
    x = np.random.default_rng(5).standard_normal((1, 2, 2, 6)) * 40
    with lm.set_default_dtype("float64"):
        got = lm.functional.local_response_norm(x).numpy()
    want = TF.local_response_norm(torch.tensor(x).permute(0, 3, 1, 2), 5, alpha=1e-4, beta=0.75, k=2.0)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("x,attrs,error,words", [
    (np.ones(4), {}, ShapeError, ["'x'", "at least 2 dimensions", "(4,)"]),
    (np.ones((2, 3), dtype=np.int64), {}, OpError, ["'x'", "floating", "int64"]),
    (np.ones((2, 3)), {"size": 0}, OpError, ["'size'", "positive int", "0"]),
    (np.ones((2, 3)), {"size": 2.5}, OpError, ["'size'", "2.5"]),
    (np.ones((2, 3)), {"alpha": -1.0}, OpError, ["'alpha'", "≥ 0", "-1.0"]),
    (np.ones((2, 3)), {"k": 0.0}, OpError, ["'k'", "> 0", "0.0"]),
    (np.ones((2, 3)), {"beta": "3/4"}, OpError, ["'beta'", "a number", "'3/4'"]),
])
def test_op_argument_errors(x, attrs, error, words):
    with pytest.raises(error) as info:
        call("local_response_norm", Tensor(x, dtype=x.dtype), **attrs)
    message = str(info.value)
    assert message.startswith("local_response_norm:")
    for word in words:
        assert word in message, message


def test_layer_errors_name_the_layer():
    with pytest.raises(OpError, match=r"LocalResponseNorm layer 'lrn1': 'k' must be > 0"):
        lm.nn.LocalResponseNorm(k=-1.0, name="lrn1")
    with pytest.raises(ShapeError, match=r"LocalResponseNorm layer 'local_response_norm'.*got shape \(3,\)"):
        lm.nn.LocalResponseNorm()(lm.tensor(np.ones(3)))
