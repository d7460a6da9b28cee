"""ResidualBlock (§4.8): gradient checks, shapes, and parity with an equivalent torch module."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.registry import resolve
from lamina.testing import run_layer_test

CASES = [  # (n_in, n_C, stride, kind, expected channels, projection)
    (4, 4, 1, "basic", 4, False),
    (3, 4, 2, "basic", 4, True),
    (8, 2, 1, "bottleneck", 8, False),
    (3, 2, 2, "bottleneck", 8, True),
]
IDS = ["basic-identity", "basic-projection", "bottleneck-identity", "bottleneck-projection"]


@pytest.mark.parametrize("n_in,n_C,stride,kind,n_out,projection", CASES, ids=IDS)
def test_run_layer_test(n_in, n_C, stride, kind, n_out, projection):
    lm.manual_seed(0)
    report = run_layer_test(lambda: lm.nn.ResidualBlock(n_in, n_C, stride=stride, kind=kind), (2, 5, 5, n_in),
                            expected_output_shape=(2, 3 if stride == 2 else 5, 3 if stride == 2 else 5, n_out))
    assert report.gradcheck.passed
    block = lm.nn.ResidualBlock(n_in, n_C, stride=stride, kind=kind)
    assert block.projection is projection
    assert block.output_shape((None, 6, 6, n_in)) == (None, 6 // stride, 6 // stride, n_out)


def test_registered_as_a_layer():
    assert resolve("layers", "residual_block") is lm.nn.ResidualBlock


def _torch_block(block):
    """The torch (NCHW) module equivalent to `block`, with its weights copied (HWIO -> OIHW)."""
    convs = ["conv1", "conv2"] + (["conv3"] if block.kind == "bottleneck" else [])
    bns = ["bn1", "bn2"] + (["bn3"] if block.kind == "bottleneck" else [])
    if block.projection:
        convs, bns = convs + ["shortcut_conv"], bns + ["shortcut_bn"]
    mods = {}
    for name in convs:
        c = getattr(block, name)
        m = torch.nn.Conv2d(c.n_C_prev, c.n_C, c.f, stride=c.stride, padding=c.padding, bias=False).double()
        m.weight.data = torch.from_numpy(c.W.numpy().transpose(3, 2, 0, 1).copy())
        mods[name] = m
    for name in bns:
        b = getattr(block, name)
        m = torch.nn.BatchNorm2d(b.num_features, eps=b.epsilon, momentum=1 - b.momentum).double()
        m.weight.data = torch.from_numpy(b.gamma.numpy().copy())
        m.bias.data = torch.from_numpy(b.beta.numpy().copy())
        mods[name] = m
    return torch.nn.ModuleDict(mods)


def _torch_forward(mods, kind, projection, x):
    z = torch.relu(mods["bn1"](mods["conv1"](x)))
    z = mods["bn2"](mods["conv2"](z))
    if kind == "bottleneck":
        z = mods["bn3"](mods["conv3"](torch.relu(z)))
    s = mods["shortcut_bn"](mods["shortcut_conv"](x)) if projection else x
    return torch.relu(z + s)


@pytest.mark.parametrize("n_in,n_C,stride,kind,n_out,projection", CASES, ids=IDS)
def test_parity_with_torch_train_mode(n_in, n_C, stride, kind, n_out, projection):
    rng = np.random.default_rng(1)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(1)
        block = lm.nn.ResidualBlock(n_in, n_C, stride=stride, kind=kind)
        for p in block.parameters(trainable_only=True):  # non-trivial γ and β
            if p.ndim == 1:
                p.data = p.backend.asarray(rng.uniform(0.5, 1.5, p.shape), p.dtype)
        mods = _torch_block(block)
        x = rng.standard_normal((3, 7, 6, n_in))
        up = rng.standard_normal(block.output_shape(x.shape))
        xl = lm.tensor(x, requires_grad=True)
        out = block(xl)
        (out * lm.tensor(up)).sum().backward()

        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        ot = _torch_forward(mods, kind, projection, xt)
        (ot * torch.from_numpy(up.transpose(0, 3, 1, 2).copy())).sum().backward()

    np.testing.assert_allclose(out.numpy(), ot.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xl.grad.numpy(), xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-9, atol=1e-9)
    for name, m in mods.items():
        layer = getattr(block, name)
        if isinstance(m, torch.nn.Conv2d):
            np.testing.assert_allclose(layer.W.grad.numpy(), m.weight.grad.numpy().transpose(2, 3, 1, 0),
                                       rtol=1e-9, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_allclose(layer.gamma.grad.numpy(), m.weight.grad.numpy(), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(layer.beta.grad.numpy(), m.bias.grad.numpy(), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(layer.running_mean.numpy(), m.running_mean.numpy(), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(layer.running_var.numpy(), m.running_var.numpy(), rtol=1e-9, atol=1e-12)
