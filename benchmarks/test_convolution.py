"""conv2d and max pooling (float32, NHWC), Lamina against PyTorch, forward alone and forward +
backward, at the sizes issue 4 names: 64×28×28×1 → 6 filters 5×5 (valid), 32×56×56×64 → 64
filters 3×3 (same), and 2×2 max pooling on 32×56×56×64; and the other shapes a ResNet has: a 1×1
bottleneck (32×28×28×256 → 64) and a strided 3×3 (32×56×56×64 → 128, stride 2, padding 1).
PyTorch gets the same memory as channels-last NCHW views; both compute the gradients of every input
for a fixed upstream gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from lamina.ops import call
from lamina.tensor import Tensor

CASES = {  # name -> (x shape, filter shape or pool size f, padding, stride)
    "conv2d 64x28x28x1 -> 6 5x5 valid": ((64, 28, 28, 1), (5, 5, 1, 6), "valid", 1),
    "conv2d 32x56x56x64 -> 64 3x3 same": ((32, 56, 56, 64), (3, 3, 64, 64), "same", 1),
    "conv2d 32x28x28x256 -> 64 1x1": ((32, 28, 28, 256), (1, 1, 256, 64), "valid", 1),
    "conv2d 32x56x56x64 -> 128 3x3 stride 2": ((32, 56, 56, 64), (3, 3, 64, 128), 1, 2),
    "max_pool2d 2x2 32x56x56x64": ((32, 56, 56, 64), 2, 0, None),
}
ROUNDS = 10


def lamina_step(arrays, upstream, op, attrs, backward):
    backend = lamina.backend.load_backend("cpu")
    inputs = [Tensor(a, requires_grad=True, dtype=a.dtype, backend=backend) for a in arrays]
    grad = Tensor._wrap(backend.asarray(upstream, upstream.dtype), backend)

    def step():
        if not backward:
            with lamina.no_grad():
                return (call(op, *inputs, **attrs),)
        for t in inputs:
            t.grad = None
        out = call(op, *inputs, **attrs)
        out.backward(grad)
        return (out,) + tuple(t.grad for t in inputs)

    return step


def torch_step(arrays, upstream, op, attrs, backward):
    x = torch.from_numpy(arrays[0]).permute(0, 3, 1, 2).requires_grad_()        # channels-last NCHW view
    rest = [torch.from_numpy(a).permute(3, 2, 0, 1).requires_grad_() if a.ndim == 4
            else torch.from_numpy(a).requires_grad_() for a in arrays[1:]]
    grad = torch.from_numpy(upstream).permute(0, 3, 1, 2)
    if op == "conv2d":
        f, padding = arrays[1].shape[0], attrs["padding"]
        padding = (f - 1) // 2 if padding == "same" else 0 if padding == "valid" else padding   # (odd f, stride 1)
        run = lambda: TF.conv2d(x, *rest, stride=attrs["stride"], padding=padding)  # noqa: E731
    else:
        run = lambda: TF.max_pool2d(x, attrs["f"])  # noqa: E731

    def step():
        if not backward:
            with torch.no_grad():
                return (run().permute(0, 2, 3, 1),)
        for t in [x] + rest:
            t.grad = None
        out = run()
        out.backward(grad)
        return (out.permute(0, 2, 3, 1), x.grad.permute(0, 2, 3, 1)) + tuple(
            t.grad.permute(2, 3, 1, 0) if t.ndim == 4 else t.grad for t in rest)

    return step


@pytest.fixture(scope="module", params=[(name, backward) for name in CASES for backward in (False, True)],
                ids=lambda p: f"{p[0]} {'fwd+bwd' if p[1] else 'fwd'}")
def case(request):
    """(name, steps), both steps checked once to give the same output (and gradients)."""
    name, backward = request.param
    x_shape, spec, padding, stride = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    if name.startswith("conv2d"):
        op, attrs = "conv2d", {"padding": padding, "stride": stride}
        arrays = (x, (rng.standard_normal(spec) * 0.1).astype(np.float32),
                  rng.standard_normal(spec[3]).astype(np.float32))
    else:
        op, attrs, arrays = "max_pool2d", {"f": spec}, (x,)
    with lamina.no_grad():
        out_shape = call(op, *[lamina.tensor(a) for a in arrays], **attrs).shape
    upstream = rng.standard_normal(out_shape).astype(np.float32)
    steps = {"lamina": lamina_step(arrays, upstream, op, attrs, backward),
             "torch": torch_step(arrays, upstream, op, attrs, backward)}
    for a, b in zip(steps["lamina"](), steps["torch"]()):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-3, atol=2e-3)
    return f"{name} {'fwd+bwd' if backward else 'fwd'}", steps


def test_convolution(side_by_side, case, framework):
    name, steps = case
    side_by_side(name, framework, steps[framework], rounds=ROUNDS)
