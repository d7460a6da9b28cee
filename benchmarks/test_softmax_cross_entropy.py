"""Softmax cross-entropy forward + backward on 4096 × 10000 float32 logits with integer
labels: Lamina's fused kernel against torch.nn.functional.cross_entropy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina

CASE = "softmax_cross_entropy 4096x10000 fwd+bwd"
SHAPE = (4096, 10000)
ROUNDS = 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal(SHAPE, dtype=np.float32) * 3, rng.integers(0, SHAPE[1], SHAPE[0])


def lamina_step(logits, labels):
    with lamina.use_backend("cpu"):
        z, y = lamina.tensor(logits, requires_grad=True), lamina.tensor(labels)

    def step():
        z.grad = None
        loss = lamina.F.softmax_cross_entropy(z, y)
        loss.backward()
        return loss

    return step


def torch_step(logits, labels):
    z, y = torch.from_numpy(logits.copy()).requires_grad_(), torch.from_numpy(labels)

    def step():
        z.grad = None
        loss = torch.nn.functional.cross_entropy(z, y)
        loss.backward()
        return loss

    return step


@pytest.fixture(scope="module")
def steps(data):
    """Both steps, checked once to compute the same loss."""
    ours, theirs = lamina_step(*data), torch_step(*data)
    np.testing.assert_allclose(ours().item(), theirs().item(), rtol=1e-5)
    return {"lamina": ours, "torch": theirs}


def test_softmax_cross_entropy_forward_backward(side_by_side, steps, framework):
    side_by_side(CASE, framework, steps[framework], rounds=ROUNDS)
