"""BatchNorm forward + backward in training mode (float32), Lamina against PyTorch: a dense
256×1024 batch (BatchNorm1d) and a 32×32×32×64 NHWC batch (BatchNorm2d on the same memory,
which PyTorch sees as channels-last NCHW). Each step computes the output, the running
averages and the gradients of x, γ and β for a fixed upstream gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina.tensor import Tensor

SHAPES = {"dense 256x1024": (256, 1024), "NHWC 32x32x32x64": (32, 32, 32, 64)}
ROUNDS = 100


def lamina_step(x, upstream):
    with lamina.use_backend("cpu") as backend:
        layer = lamina.nn.BatchNorm(x.shape[-1])
    inputs = Tensor(x, requires_grad=True, dtype=x.dtype, backend=backend)
    grad = Tensor._wrap(backend.asarray(upstream, upstream.dtype), backend)

    def step():
        inputs.grad = None
        layer.zero_grad()
        out = layer(inputs)
        out.backward(grad)
        return out, inputs.grad, layer.gamma.grad

    return step


def torch_step(x, upstream):
    nhwc = x.ndim == 4
    layer = (torch.nn.BatchNorm2d if nhwc else torch.nn.BatchNorm1d)(x.shape[-1])
    inputs = torch.from_numpy(x).requires_grad_()
    grad = torch.from_numpy(upstream)
    if nhwc:                                         # NCHW views of the NHWC arrays (channels-last memory)
        grad = grad.permute(0, 3, 1, 2)

    def step():
        inputs.grad = None
        layer.zero_grad()
        out = layer(inputs.permute(0, 3, 1, 2) if nhwc else inputs)
        out.backward(grad)
        return out.permute(0, 2, 3, 1) if nhwc else out, inputs.grad, layer.weight.grad

    return step


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request):
    """(name, steps), both steps checked once to give the same output and gradients."""
    rng = np.random.default_rng(0)
    shape = SHAPES[request.param]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    upstream = rng.standard_normal(shape).astype(np.float32)
    steps = {"lamina": lamina_step(x, upstream), "torch": torch_step(x, upstream)}
    ours, theirs = steps["lamina"](), steps["torch"]()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-3, atol=1e-4)
    return f"batch_norm fwd+bwd {request.param}", steps


def test_batchnorm_forward_backward(side_by_side, case, framework):
    name, steps = case
    side_by_side(name, framework, steps[framework], rounds=ROUNDS)
