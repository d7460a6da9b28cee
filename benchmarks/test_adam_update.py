"""The Adam update of 10M float32 parameters (one tensor, gradient given): Lamina's in-place
compiled kernel against torch.optim.Adam, once as PyTorch picks by default (foreach and fused
left unset: on CPU its single-tensor loop) and once with fused=True (its one-pass CPU kernel)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina

SIZE = 10_000_000
ROUNDS = 30
TORCH_VARIANTS = {"default": {}, "fused": {"fused": True}}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal(SIZE, dtype=np.float32), rng.standard_normal(SIZE, dtype=np.float32) * 1e-2


def lamina_step(param, grad):
    with lamina.use_backend("cpu"):
        p = lamina.Parameter(param, dtype="float32")
        p.grad = lamina.tensor(grad, dtype="float32")
    optimizer = lamina.optim.Adam([p], lr=1e-3)

    def step():
        optimizer.step()
        return p.numpy()

    return step


def torch_step(param, grad, options):
    p = torch.from_numpy(param.copy()).requires_grad_()
    p.grad = torch.from_numpy(grad.copy())
    optimizer = torch.optim.Adam([p], lr=1e-3, **options)

    def step():
        optimizer.step()
        return p.detach().numpy()

    return step


@pytest.fixture(scope="module", params=list(TORCH_VARIANTS))
def steps(request, data):
    """Both updates, checked once to give the same parameters."""
    ours, theirs = lamina_step(*data), torch_step(*data, TORCH_VARIANTS[request.param])
    np.testing.assert_allclose(ours(), theirs(), rtol=1e-5, atol=1e-7)
    return request.param, {"lamina": ours, "torch": theirs}


def test_adam_update(side_by_side, steps, framework):
    variant, step = steps
    side_by_side(f"adam_update 10M float32 (torch {variant})", framework, step[framework], rounds=ROUNDS)
