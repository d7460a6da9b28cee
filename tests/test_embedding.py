"""Embedding (rows = words): parity with torch.nn.Embedding forward and backward (repeated indices add up),
float64 gradient checks, only the rows used receive gradient, the CPU kernel against the composite default,
argument errors."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.backend import load_backend
from lamina.ops import call
from lamina.registry import resolve
from lamina.tensor import Tensor
from lamina.testing import gradcheck_op, reference_backend, run_layer_test


@pytest.fixture(params=["cpu", "reference"])
def backend(request):
    return load_backend("cpu") if request.param == "cpu" else reference_backend()


INDICES = np.array([[3, 1, 3, 0], [7, 3, 3, 1], [9, 0, 2, 3]])   # word 3 five times, words 4, 5, 6, 8 never


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_torch_embedding(backend, dtype):
    rng = np.random.default_rng(0)
    E = rng.standard_normal((10, 4)).astype(dtype)
    g = rng.standard_normal(INDICES.shape + (4,)).astype(dtype)
    e = Tensor(E, dtype=dtype, backend=backend, requires_grad=True)
    out = call("embedding", Tensor(INDICES, backend=backend), e)
    (out * Tensor(g, dtype=dtype, backend=backend)).sum().backward()

    module = torch.nn.Embedding(10, 4).to(getattr(torch, dtype))
    module.weight.data = torch.tensor(E)
    want = module(torch.tensor(INDICES))
    (want * torch.tensor(g)).sum().backward()
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(e.grad.numpy(), module.weight.grad.numpy(), rtol=tol, atol=tol)
    unused = [4, 5, 6, 8]
    assert np.all(e.grad.numpy()[unused] == 0)
    np.testing.assert_allclose(e.grad.numpy()[3], g[INDICES == 3].sum(axis=0), rtol=tol * 10, atol=tol * 10)


def test_op_gradcheck(backend):
    assert all(r.passed for r in gradcheck_op(backend, "embedding"))


def test_run_layer_test():
    lm.manual_seed(0)
    report = run_layer_test(lambda: lm.nn.Embedding(10, 3), INDICES.shape, input_data=INDICES,
                            expected_output_shape=(3, 4, 3))
    assert report.gradcheck.passed and report.num_parameters == 30


def test_layer_feeds_a_recurrent_layer():
    lm.manual_seed(1)
    model = lm.nn.Sequential(lm.nn.Embedding(10, 3), lm.nn.GRU(3, 4))
    assert model(INDICES).shape == (3, 4)
    assert model.output_shape((None, 4)) == (None, 4)
    assert resolve("layers", "embedding") is lm.nn.Embedding


def test_errors():
    layer = lm.nn.Embedding(5, 2)
    with pytest.raises(lm.errors.OpError, match=r"embedding: indices must lie in \[0, V\) = \[0, 5\), got values from 0 to 5"):
        layer(np.array([0, 5]))
    with pytest.raises(lm.errors.OpError, match="Embedding layer 'embedding': expected integer word indices"):
        layer(lm.tensor(np.array([0.0, 1.0])))
    with pytest.raises(lm.errors.ShapeError, match="V \\(vocabulary size\\) and d"):
        lm.nn.Embedding(0, 3)
