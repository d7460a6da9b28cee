"""LSTM and GRU (float32, batch-first), Lamina's layers against torch.nn.LSTM/GRU with the same weights, forward
alone and forward + backward, at the size issue 5 names: batch 64, T_x 100, n_x 128, n_a 256. The output is
every a<t> (return_sequences); both compute the gradients of the input and every weight for a fixed upstream
gradient. The GRU is the reset_after (PyTorch/cuDNN) one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina.tensor import Tensor

M, T, N_X, N_A = 64, 100, 128, 256
ROUNDS = 10


def torch_layout(op, W):
    """Lamina's gate columns -> torch's gate rows: LSTM [u f o c̃] -> [i f g o]; GRU [r u c̃] -> [r z n], z = 1 − Γ_u."""
    blocks = np.split(W, 4 if op == "lstm" else 3, axis=-1)
    blocks = [blocks[0], blocks[1], blocks[3], blocks[2]] if op == "lstm" else [blocks[0], -blocks[1], blocks[2]]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(blocks, axis=-1).T))


def make_pair(op):
    with lamina.set_default_dtype("float32"):
        lamina.manual_seed(0)
        layer = (lamina.nn.LSTM if op == "lstm" else lamina.nn.GRU)(N_X, N_A, return_sequences=True)
    module = (torch.nn.LSTM if op == "lstm" else torch.nn.GRU)(N_X, N_A, batch_first=True)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch_layout(op, layer.W_x.numpy()))
        module.weight_hh_l0.copy_(torch_layout(op, layer.W_a.numpy()))
        if op == "lstm":
            module.bias_ih_l0.copy_(torch_layout(op, layer.b.numpy()[None])[:, 0])
            module.bias_hh_l0.zero_()
        else:
            module.bias_ih_l0.copy_(torch_layout(op, layer.b_x.numpy()[None])[:, 0])
            module.bias_hh_l0.copy_(torch_layout(op, layer.b_a.numpy()[None])[:, 0])
    return layer, module


def lamina_step(layer, x_np, upstream, backward):
    x = Tensor(x_np, requires_grad=True, dtype=np.float32)
    grad = Tensor(upstream, dtype=np.float32)

    def step():
        if not backward:
            with lamina.no_grad():
                return (layer(x),)
        x.grad = None
        layer.zero_grad()
        out = layer(x)
        out.backward(grad)
        return out, x.grad

    return step


def torch_step(module, x_np, upstream, backward):
    x = torch.from_numpy(x_np).requires_grad_()
    grad = torch.from_numpy(upstream)

    def step():
        if not backward:
            with torch.no_grad():
                return (module(x)[0],)
        x.grad = None
        module.zero_grad()
        out = module(x)[0]
        out.backward(grad)
        return out, x.grad

    return step


@pytest.fixture(scope="module", params=[(op, backward) for op in ("lstm", "gru") for backward in (False, True)],
                ids=lambda p: f"{p[0]} {'fwd+bwd' if p[1] else 'fwd'}")
def case(request):
    """(name, steps), both steps checked once to give the same output (and input gradient)."""
    op, backward = request.param
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, T, N_X)).astype(np.float32)
    upstream = rng.standard_normal((M, T, N_A)).astype(np.float32)
    layer, module = make_pair(op)
    steps = {"lamina": lamina_step(layer, x, upstream, backward), "torch": torch_step(module, x, upstream, backward)}
    for a, b in zip(steps["lamina"](), steps["torch"]()):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-3, atol=2e-4)
    name = f"{op} 64x100x128 -> 256 {'fwd+bwd' if backward else 'fwd'}"
    return name, steps


def test_recurrent(side_by_side, case, framework):
    name, steps = case
    side_by_side(name, framework, steps[framework], rounds=ROUNDS)
