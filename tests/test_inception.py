"""InceptionModule (§4.9–4.10), ConvUnit and AdaptiveAvgPool2D: gradient checks, shapes, the parameter
count by hand, parity with an equivalent torch module (forward, backward, BatchNorm's running averages),
argument errors and the registry."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina as lm
from lamina.errors import ShapeError
from lamina.nn import AdaptiveAvgPool2D, ConvUnit, InceptionModule
from lamina.registry import resolve
from lamina.testing import run_layer_test

SMALL = dict(n_in=3, n_1x1=2, n_3x3_reduce=2, n_3x3=3, n_5x5_reduce=1, n_5x5=2, pool_proj=2)   # 9 channels out
VARIANTS = [(False, 5), (True, 3), (True, 5), (False, 3)]
IDS = ["paper", "torchvision", "bn-5x5", "plain-3x3"]


def _with_offsets(layer, seed=0):
    """`layer` with its biases (or BN β) drawn from ±[0.2, 0.6]: with zero biases a convolution over an
    all-zero window of ReLU outputs sits exactly on the next ReLU's kink, where no gradient check holds."""
    rng = np.random.default_rng(seed)
    for name, p in layer.named_parameters():
        if name.endswith(".b") or name.endswith(".beta"):
            values = rng.uniform(0.2, 0.6, p.shape) * rng.choice([-1.0, 1.0], p.shape)
            p.data = p.backend.asarray(values, p.dtype)
    return layer


@pytest.mark.parametrize("batch_norm,f_5x5", VARIANTS, ids=IDS)
def test_run_layer_test(batch_norm, f_5x5):
    lm.manual_seed(0)
    report = run_layer_test(lambda: _with_offsets(InceptionModule(**SMALL, batch_norm=batch_norm, f_5x5=f_5x5)),
                            (2, 4, 5, 3), expected_output_shape=(2, 4, 5, 9))
    assert report.gradcheck.passed


def test_parameter_count_by_hand_inception_3a():
    """Table 1's inception (3a) on 192 channels: 64 | 96 -> 128 | 16 -> 32 | pool -> 32."""
    plain = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    weights = 192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32
    assert plain.num_parameters() == weights + (64 + 96 + 128 + 16 + 32 + 32)          # + biases
    bn = InceptionModule(192, 64, 96, 128, 16, 32, 32, batch_norm=True, f_5x5=3)
    weights_3x3 = weights - 25 * 16 * 32 + 9 * 16 * 32
    assert bn.num_parameters(trainable_only=True) == weights_3x3 + 2 * (64 + 96 + 128 + 16 + 32 + 32)   # γ, β
    assert bn.num_parameters() == weights_3x3 + 4 * (64 + 96 + 128 + 16 + 32 + 32)    # + running averages
    assert plain.output_shape((None, 28, 28, 192)) == (None, 28, 28, 256)


def _torch_unit(unit):
    """torch equivalent of a ConvUnit (NCHW), weights copied HWIO -> OIHW."""
    c = unit.conv
    conv = torch.nn.Conv2d(c.n_C_prev, c.n_C, c.f, stride=c.stride, padding=c.padding, bias=not unit.batch_norm)
    conv = conv.double()
    conv.weight.data = torch.from_numpy(c.W.numpy().transpose(3, 2, 0, 1).copy())
    if not unit.batch_norm:
        conv.bias.data = torch.from_numpy(c.b.numpy().copy())
        return torch.nn.Sequential(conv, torch.nn.ReLU())
    b = unit.bn
    bn = torch.nn.BatchNorm2d(b.num_features, eps=0.001, momentum=1 - b.momentum).double()
    bn.weight.data = torch.from_numpy(b.gamma.numpy().copy())
    bn.bias.data = torch.from_numpy(b.beta.numpy().copy())
    return torch.nn.Sequential(conv, bn, torch.nn.ReLU())


class TorchInception(torch.nn.Module):
    """The module as torchvision writes it (Inception in torchvision/models/googlenet.py)."""

    def __init__(self, block):
        super().__init__()
        self.branch1 = _torch_unit(block.branch1)
        self.branch2 = torch.nn.Sequential(_torch_unit(block.branch2[0]), _torch_unit(block.branch2[1]))
        self.branch3 = torch.nn.Sequential(_torch_unit(block.branch3[0]), _torch_unit(block.branch3[1]))
        self.branch4 = torch.nn.Sequential(torch.nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                           _torch_unit(block.branch4[1]))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def _units(block):
    return [("branch1", block.branch1), ("branch2.0", block.branch2[0]), ("branch2.1", block.branch2[1]),
            ("branch3.0", block.branch3[0]), ("branch3.1", block.branch3[1]), ("branch4.1", block.branch4[1])]


def _torch_units(mod):
    return [mod.branch1, mod.branch2[0], mod.branch2[1], mod.branch3[0], mod.branch3[1], mod.branch4[1]]


@pytest.mark.parametrize("batch_norm,f_5x5", VARIANTS, ids=IDS)
def test_parity_with_torch_train_mode(batch_norm, f_5x5):
    rng = np.random.default_rng(2)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(2)
        block = InceptionModule(5, 3, 2, 4, 2, 3, 2, batch_norm=batch_norm, f_5x5=f_5x5)
        for p in block.parameters(trainable_only=True):      # non-trivial biases, γ and β
            if p.ndim == 1:
                p.data = p.backend.asarray(rng.uniform(0.5, 1.5, p.shape), p.dtype)
        mod = TorchInception(block)
        x = rng.standard_normal((3, 7, 6, 5))
        up = rng.standard_normal(block.output_shape(x.shape))
        xl = lm.tensor(x, requires_grad=True)
        out = block(xl)
        (out * lm.tensor(up)).sum().backward()

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    ot = mod(xt)
    (ot * torch.from_numpy(up.transpose(0, 3, 1, 2).copy())).sum().backward()

    assert out.shape == (3, 7, 6, 12)
    np.testing.assert_allclose(out.numpy(), ot.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xl.grad.numpy(), xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-9, atol=1e-9)
    for (name, unit), tunit in zip(_units(block), _torch_units(mod)):
        conv = tunit[0]
        np.testing.assert_allclose(unit.conv.W.grad.numpy(), conv.weight.grad.numpy().transpose(2, 3, 1, 0),
                                   rtol=1e-9, atol=1e-9, err_msg=name)
        if batch_norm:
            bn = tunit[1]
            np.testing.assert_allclose(unit.bn.gamma.grad.numpy(), bn.weight.grad.numpy(), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(unit.bn.beta.grad.numpy(), bn.bias.grad.numpy(), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(unit.bn.running_var.numpy(), bn.running_var.numpy(), rtol=1e-9)
        else:
            np.testing.assert_allclose(unit.conv.b.grad.numpy(), conv.bias.grad.numpy(), rtol=1e-9, atol=1e-9)


def test_eval_mode_parity_with_batch_norm():
    rng = np.random.default_rng(3)
    with lm.set_default_dtype("float64"):
        block = InceptionModule(4, 2, 2, 2, 1, 2, 1, batch_norm=True, f_5x5=3)
        for _, unit in _units(block):
            n = unit.bn.num_features
            unit.bn.running_mean.data = unit.bn.running_mean.backend.asarray(rng.standard_normal(n), np.float64)
            unit.bn.running_var.data = unit.bn.running_var.backend.asarray(rng.uniform(0.5, 2, n), np.float64)
        mod = TorchInception(block)
        for (_, unit), tunit in zip(_units(block), _torch_units(mod)):
            tunit[1].running_mean.data = torch.from_numpy(unit.bn.running_mean.numpy().copy())
            tunit[1].running_var.data = torch.from_numpy(unit.bn.running_var.numpy().copy())
        block.eval()
        mod.eval()
        x = rng.standard_normal((2, 5, 5, 4))
        with lm.no_grad():
            out = block(lm.tensor(x)).numpy()
    want = mod(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def test_in_a_sequential_summary_and_float32_forward():
    lm.manual_seed(0)
    model = lm.nn.Sequential(lm.nn.Conv2D(3, 8, 3, padding=1, activation="relu"),
                             InceptionModule(8, 4, 4, 6, 2, 3, 3), lm.nn.MaxPool2D(2),
                             InceptionModule(16, 2, 2, 2, 2, 2, 2, batch_norm=True, f_5x5=3),
                             lm.nn.GlobalAvgPool2D(), lm.nn.Dense(8, 5))
    text = model.summary((8, 8, 3), print_fn=None)
    assert "(None, 8, 8, 16)" in text and "(None, 4, 4, 8)" in text and "(None, 5)" in text
    assert "8 -> 4+6+3+3 = 16, 5×5 wide branch" in text
    assert f"Total params: {model.num_parameters():,}" in text
    out = model(lm.tensor(np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)))
    assert out.shape == (2, 5) and out.dtype == np.float32


def test_learns_a_tiny_task():
    """Four 6×6 patterns told apart by a conv + Inception + linear head: the loss falls."""
    rng = np.random.default_rng(0)
    y = np.arange(32) % 4
    x = rng.standard_normal((32, 6, 6, 1)).astype(np.float32) * 0.3
    for c in range(4):
        x[y == c, c:c + 3, c:c + 3, 0] += 1.5
    lm.manual_seed(0)
    model = lm.nn.Sequential(InceptionModule(1, 4, 2, 4, 2, 4, 4), lm.nn.GlobalAvgPool2D(), lm.nn.Dense(16, 4))
    opt = lm.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        model.zero_grad()
        loss = lm.functional.softmax_cross_entropy(model(lm.tensor(x)), lm.tensor(y))
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_errors_name_the_layer_argument_and_value():
    with pytest.raises(ShapeError, match=r"InceptionModule layer 'inc': every channel count must be a positive int, "
                                         r"got n_3x3=0"):
        InceptionModule(3, 2, 2, 0, 1, 2, 2, name="inc")
    with pytest.raises(ShapeError, match=r"f_5x5 must be a positive odd int.*got 4"):
        InceptionModule(3, 2, 2, 2, 1, 2, 2, f_5x5=4)
    block = InceptionModule(3, 2, 2, 2, 1, 2, 2)
    with pytest.raises(ShapeError, match=r"InceptionModule layer 'inception_module'.*\(m, n_H, n_W, 3\).*"
                                         r"\(2, 4, 4, 5\)"):
        block(lm.tensor(np.ones((2, 4, 4, 5))))
    with pytest.raises(ShapeError, match=r"expected NHWC input \(m, n_H, n_W, 3\), got shape \(None, 4, 4\)"):
        block.output_shape((None, 4, 4))


def test_registered_as_layers():
    assert resolve("layers", "inception") is InceptionModule
    assert resolve("layers", "adaptive_avg_pool2d") is AdaptiveAvgPool2D


def test_conv_unit_layouts():
    plain, bn = ConvUnit(3, 4, 3, padding=1), ConvUnit(3, 4, 3, padding=1, batch_norm=True)
    assert sorted(dict(plain.named_parameters())) == ["conv.W", "conv.b"]
    assert sorted(dict(bn.named_parameters())) == ["bn.beta", "bn.gamma", "bn.running_mean", "bn.running_var",
                                                   "conv.W"]
    assert bn.bn.epsilon == 1e-3
    assert repr(bn) == "ConvUnit(3 -> 4, f=3, stride=1, padding=1, BN, ReLU)"


@pytest.mark.parametrize("size,out", [((14, 14), (4, 4)), ((7, 5), (4, 4)), ((6, 9), (3, 2)), ((3, 3), (1, 1)),
                                      ((2, 3), (4, 5))], ids=str)
def test_adaptive_avg_pool_matches_torch(size, out):
    rng = np.random.default_rng(size[0] * 10 + size[1])
    x = rng.standard_normal((2,) + size + (3,))
    up = rng.standard_normal((2,) + out + (3,))
    with lm.set_default_dtype("float64"):
        layer = AdaptiveAvgPool2D(out)
        xl = lm.tensor(x, requires_grad=True)
        got = layer(xl)
        (got * lm.tensor(up)).sum().backward()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    want = TF.adaptive_avg_pool2d(xt, out)
    (want * torch.from_numpy(up.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(got.numpy(), want.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xl.grad.numpy(), xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-14)
    assert layer.output_shape((None,) + size + (3,)) == (None,) + out + (3,)


def test_adaptive_avg_pool_run_layer_test_and_errors():
    report = run_layer_test(lambda: AdaptiveAvgPool2D(2), (2, 5, 4, 3), expected_output_shape=(2, 2, 2, 3))
    assert report.gradcheck.passed
    with pytest.raises(ShapeError, match=r"AdaptiveAvgPool2D layer 'adaptive_avg_pool2d'.*got \(0, 4\)"):
        AdaptiveAvgPool2D((0, 4))


@pytest.mark.parametrize("variant,in_hw", [("paper", (14, 14)), ("paper", (8, 11)), ("torchvision", (6, 5))])
def test_inception_aux_matches_torch_in_eval_mode(variant, in_hw):
    """The side branch: pool -> 1×1 conv 128 (+ BN) + ReLU -> flatten -> FC 1024 + ReLU -> dropout -> FC."""
    from lamina.nn.inception import InceptionAux

    rng = np.random.default_rng(11)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(11)
        aux = InceptionAux(6, 3, in_hw=in_hw, variant=variant).eval()
        x = rng.standard_normal((2,) + in_hw + (6,))
        with lm.no_grad():
            got = aux(lm.tensor(x)).numpy()
    conv = _torch_unit(aux.conv)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    pooled = TF.avg_pool2d(xt, 5, stride=3) if variant == "paper" else TF.adaptive_avg_pool2d(xt, (4, 4))
    conv.eval()
    z = conv(pooled)                                                   # (m, 128, o_H, o_W)
    flat = z.permute(0, 2, 3, 1).reshape(2, -1)                        # Lamina flattens NHWC
    h = torch.relu(flat @ torch.from_numpy(aux.fc1.W.numpy()) + torch.from_numpy(aux.fc1.b.numpy()))
    want = h @ torch.from_numpy(aux.fc2.W.numpy()) + torch.from_numpy(aux.fc2.b.numpy())
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    o_h, o_w = z.shape[2:]
    assert aux.fc1.n_in == 128 * o_h * o_w and aux.output_shape((None,) + in_hw + (6,)) == (None, 3)
    assert aux.dropout.keep_prob == 0.3 and aux.conv.batch_norm == (variant == "torchvision")


def test_summary_shapes_each_branch_from_the_input_and_ends_with_the_concatenation():
    block = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    lines = block.summary((28, 28, 192), print_fn=None).splitlines()
    rows = {line.split(" (")[0]: line for line in lines[3:8]}
    assert list(rows) == ["branch1", "branch2", "branch3", "branch4", "concatenate"]
    for key, shape in (("branch1", 64), ("branch2", 128), ("branch3", 32), ("branch4", 32), ("concatenate", 256)):
        assert f"(None, 28, 28, {shape})" in rows[key], rows[key]
    assert rows["branch1"].startswith("branch1 (ConvUnit 192 -> 64")
    assert "Total params: 163,696" in lines[-3]
    assert "?" in block.summary(print_fn=None).splitlines()[3]        # no input shape: shapes unknown


def test_usable_from_a_recipe_by_registered_names():
    """A config describes the layers by name; n_in comes from the previous layer's output channels."""
    import tomllib

    from lamina.recipes import Recipe

    recipe = Recipe.from_dict(tomllib.loads('''
        [data]
        dataset = "digits"
        [loss]
        name = "auxiliary"
        [optimizer]
        name = "sgd"
        lr = 0.1
        [[model.layers]]
        type = "conv2d"
        n_C = 4
        f = 3
        padding = "same"
        activation = "relu"
        [[model.layers]]
        type = "local_response_norm"
        size = 3
        [[model.layers]]
        type = "inception"
        n_1x1 = 2
        n_3x3_reduce = 2
        n_3x3 = 3
        n_5x5_reduce = 1
        n_5x5 = 2
        pool_proj = 1
        batch_norm = true
        f_5x5 = 3
        [[model.layers]]
        type = "adaptive_avg_pool2d"
        output_size = 2
        [[model.layers]]
        type = "flatten"
        [[model.layers]]
        type = "dense"
        n_out = 10
    '''))
    model = recipe.build_model((8, 8, 1))
    assert isinstance(model[2], InceptionModule) and model[2].n_in == 4 and model[2].n_out == 8
    assert model.output_shape((None, 8, 8, 1)) == (None, 10)
    out = model(lm.tensor(np.random.default_rng(0).standard_normal((3, 8, 8, 1)).astype(np.float32)))
    assert out.shape == (3, 10)
    loss = recipe.build_loss()
    assert float(loss(out, lm.tensor(np.array([0, 1, 2]))).numpy()) > 0
