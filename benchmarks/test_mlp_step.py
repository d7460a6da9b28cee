"""One training step of a 784-512-256-10 ReLU MLP (batch 256, float32): forward, softmax
cross-entropy, backward and an Adam update, in Lamina and in the identical PyTorch model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina

CASE = "mlp_step 784-512-256-10, batch 256"
SIZES = (784, 512, 256, 10)
BATCH = 256
ROUNDS = 200


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], BATCH)


@pytest.fixture(scope="module")
def lamina_model():
    with lamina.use_backend("cpu"):
        lamina.manual_seed(0)
        last = len(SIZES) - 2
        return lamina.nn.Sequential(*(lamina.nn.Dense(n_in, n_out, activation=None if i == last else "relu")
                                      for i, (n_in, n_out) in enumerate(zip(SIZES, SIZES[1:]))))


def torch_copy(model) -> torch.nn.Sequential:
    """The PyTorch MLP with the Lamina model's weights (torch keeps W as (n_out, n_in))."""
    layers = []
    for dense in model.layers():
        linear = torch.nn.Linear(dense.n_in, dense.n_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(dense.W.numpy().T))
            linear.bias.copy_(torch.from_numpy(dense.b.numpy()))
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def lamina_step(model, x, y):
    optimizer = lamina.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = lamina.losses.SoftmaxCrossEntropy()

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def torch_step(model, x, y):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


@pytest.fixture(scope="module")
def steps(data, lamina_model):
    """Both training steps, checked once to compute the same first loss."""
    x, y = data
    with lamina.use_backend("cpu"):
        ours = lamina_step(lamina_model, lamina.tensor(x), lamina.tensor(y))
    theirs = torch_step(torch_copy(lamina_model), torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(ours().item(), theirs().item(), rtol=1e-4)
    return {"lamina": ours, "torch": theirs}


def test_mlp_training_step(side_by_side, steps, framework):
    side_by_side(CASE, framework, steps[framework], rounds=ROUNDS)
