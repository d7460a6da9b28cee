"""Turning FC layers into convolutions (§4.18): the seed's 14×14×3 network run on 16×16×3 and 28×28×3
images equals the original network on every 14×14 crop at stride 2; the converted model's gradients,
a PyTorch twin of the converted convolutions, and the errors for heads that cannot be converted."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.errors import ShapeError
from lamina.gradcheck import gradcheck
from lamina.nn import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D,
                       Sequential, Softmax, dense_head_to_conv)


@pytest.fixture(autouse=True)
def float64():
    """Every layer and tensor of these tests in float64."""
    with lm.set_default_dtype("float64"):
        yield


def seed_network(head_softmax_layer=False):
    """§4.18's classifier, randomly initialized in float64 (biases random too, so they are checked):
    14×14×3 → CONV 5×5, 16 filters → MAX POOL 2×2 → FC 400 → FC 400 → softmax over 4 classes."""
    lm.manual_seed(0)
    with lm.set_default_dtype("float64"):
        layers = [Conv2D(3, 16, 5, activation="relu"), MaxPool2D(2), Flatten(),
                  Dense(400, 400, activation="relu"), Dense(400, 400, activation="relu")]
        layers += [Dense(400, 4), Softmax()] if head_softmax_layer else [Dense(400, 4, activation="softmax")]
        model = Sequential(*layers, name="seed_net")
    rng = np.random.default_rng(1)
    for _, p in model.named_parameters():
        if p.ndim == 1:
            p.data = p.backend.asarray(rng.normal(0.0, 0.1, p.shape), p.dtype)
    return model


def images(n_H, n_W, m=2, seed=2):
    return np.random.default_rng(seed).standard_normal((m, n_H, n_W, 3))


def crops_through_original(model, x, window=14, stride=2):
    """The slow sliding windows: the original network on every window × window crop at `stride`."""
    n_H, n_W = (x.shape[1] - window) // stride + 1, (x.shape[2] - window) // stride + 1
    out = np.empty((x.shape[0], n_H, n_W, 4))
    for i in range(n_H):
        for j in range(n_W):
            crop = x[:, stride * i:stride * i + window, stride * j:stride * j + window, :]
            out[:, i, j] = model(lm.tensor(crop)).numpy()
    return out


def test_the_seed_network_becomes_convolutions():
    model = seed_network()
    conv_net = dense_head_to_conv(model, (14, 14, 3))
    kinds = [(type(layer).__name__, getattr(layer, "f", None), getattr(layer, "n_C", None))
             for layer in conv_net.layers()]
    assert kinds == [("Conv2D", 5, 16), ("MaxPool2D", 2, None), ("Conv2D", 5, 400), ("Conv2D", 1, 400),
                     ("Conv2D", 1, 4)]
    assert conv_net.output_shape((None, 14, 14, 3)) == (None, 1, 1, 4)
    assert conv_net.num_parameters() == model.num_parameters()
    assert conv_net.window == (14, 14) and conv_net.window_stride == 2
    assert all(p.dtype == np.float64 for p in conv_net.parameters())


@pytest.mark.parametrize("size,grid", [(14, 1), (16, 2), (28, 8)])
def test_each_output_position_is_the_original_network_on_its_crop(size, grid):
    """16×16×3 gives 2×2×4 and 28×28×3 gives 8×8×4 (the seed's examples); [i, j] is the crop at (2i, 2j)."""
    for softmax_layer in (False, True):
        model = seed_network(softmax_layer)
        x = images(size, size)
        out = dense_head_to_conv(model, (14, 14, 3))(lm.tensor(x)).numpy()
        assert out.shape == (2, grid, grid, 4)
        np.testing.assert_allclose(out, crops_through_original(model, x), rtol=0, atol=1e-10)
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-12)      # softmax over the classes


def test_non_square_images_give_non_square_grids():
    model = seed_network()
    x = images(16, 20)
    out = dense_head_to_conv(model, (14, 14, 3))(lm.tensor(x)).numpy()
    assert out.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(out, crops_through_original(model, x), rtol=0, atol=1e-10)


def test_gradients_match_the_original_on_the_training_size():
    model = seed_network()
    conv_net = dense_head_to_conv(model, (14, 14, 3))
    x = images(14, 14, m=3)
    upstream = np.random.default_rng(5).standard_normal((3, 4))
    grads = []
    for net, out_shape in ((model, (3, 4)), (conv_net, (3, 1, 1, 4))):
        xt = lm.tensor(x, requires_grad=True)
        out = net(xt)
        out.backward(lm.tensor(upstream.reshape(out_shape)))
        grads.append((xt.grad.numpy(), [(name, p.grad.numpy()) for name, p in net.named_parameters()]))
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-10, atol=1e-12)
    assert len(grads[0][1]) == len(grads[1][1]) == 8
    for (name, g), (_, g_conv) in zip(grads[0][1], grads[1][1]):   # Dense W (n_in, n_out) = the conv's W reshaped
        np.testing.assert_allclose(g_conv.reshape(g.shape), g, rtol=1e-10, atol=1e-12, err_msg=name)


def test_gradcheck_of_the_converted_model_on_a_larger_image():
    lm.manual_seed(3)
    with lm.set_default_dtype("float64"):
        model = Sequential(Conv2D(2, 3, 3, activation="tanh"), AvgPool2D(2), Flatten(),
                           Dense(12, 5, activation="tanh"), Dense(5, 3))
    conv_net = dense_head_to_conv(model, (6, 6, 2))
    x = lm.tensor(np.random.default_rng(4).standard_normal((2, 8, 10, 2)))
    target = lm.tensor(np.random.default_rng(6).standard_normal((2, 2, 3, 3)))
    params = dict(conv_net.named_parameters())
    result = gradcheck(lambda: ((conv_net(x) - target) ** 2).sum(), params)
    assert result.passed, str(result)


def test_parity_with_torch_convolutions():
    """The converted layers as torch.nn.Conv2d (HWIO -> OIHW) on a 28×28×3 image, forward and backward."""
    model = seed_network()
    conv_net = dense_head_to_conv(model, (14, 14, 3))
    convs = [layer for layer in conv_net.layers() if isinstance(layer, Conv2D)]
    tconvs = []
    for c in convs:
        t = torch.nn.Conv2d(c.n_C_prev, c.n_C, c.f).double()
        t.weight.data = torch.from_numpy(c.W.numpy().transpose(3, 2, 0, 1).copy())
        t.bias.data = torch.from_numpy(c.b.numpy().copy())
        tconvs.append(t)

    def torch_net(x):
        z = torch.nn.functional.max_pool2d(torch.relu(tconvs[0](x)), 2)
        z = torch.relu(tconvs[2](torch.relu(tconvs[1](z))))
        return torch.softmax(tconvs[3](z), dim=1)

    x = images(28, 28)
    upstream = np.random.default_rng(8).standard_normal((2, 8, 8, 4))
    xt = lm.tensor(x, requires_grad=True)
    out = conv_net(xt)
    out.backward(lm.tensor(upstream))
    tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tout = torch_net(tx)
    tout.backward(torch.from_numpy(upstream.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-9, atol=1e-12)
    for c, t in zip(convs, tconvs):
        np.testing.assert_allclose(c.W.grad.numpy(), t.weight.grad.numpy().transpose(2, 3, 1, 0),
                                   rtol=1e-9, atol=1e-12)


def test_batch_norm_and_dropout_in_the_head_are_kept_in_eval_mode():
    lm.manual_seed(5)
    with lm.set_default_dtype("float64"):
        model = Sequential(Conv2D(1, 4, 3, activation="relu"), BatchNorm(4), MaxPool2D(2), Flatten(), Dropout(0.5),
                           Dense(64, 8, use_bias=False), BatchNorm(8, axis=1), Dropout(0.7), lm.nn.ReLU(),
                           Dense(8, 3))
    rng = np.random.default_rng(9)
    for bn in (model[1], model[6]):        # running statistics as after training
        bn.running_mean.data = bn.running_mean.backend.asarray(rng.normal(size=bn.num_features), np.float64)
        bn.running_var.data = bn.running_var.backend.asarray(rng.uniform(0.5, 2, bn.num_features), np.float64)
    model.eval()
    conv_net = dense_head_to_conv(model, (10, 10, 1))
    assert not conv_net.training and conv_net.window_stride == 2
    x = np.random.default_rng(10).standard_normal((3, 14, 12, 1))
    out = conv_net(lm.tensor(x)).numpy()
    assert out.shape == (3, 3, 2, 3)
    for i in range(3):
        for j in range(2):
            want = model(lm.tensor(x[:, 2 * i:2 * i + 10, 2 * j:2 * j + 10])).numpy()
            np.testing.assert_allclose(out[:, i, j], want, rtol=0, atol=1e-10)


def test_the_original_model_is_untouched():
    model = seed_network()
    before = {name: value.copy() for name, value in model.state_dict().items()}
    names = [layer.name for layer in model.layers()]
    conv_net = dense_head_to_conv(model, (14, 14, 3))
    for p in conv_net.parameters():
        p.data = p.backend.asarray(np.zeros(p.shape), p.dtype)
    assert {id(p) for p in conv_net.parameters()}.isdisjoint(id(p) for p in model.parameters())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert [layer.name for layer in model.layers()] == names and len(model) == 6


def test_a_trained_digits_classifier_scans_a_larger_image():
    """Trained on the 8×8 digits, the converted network reads two digits pasted side by side in a 8×16
    image: the window at column 0 sees the first digit and the window at column 8 (= 4 steps of the
    stride 2) the second."""
    from lamina.datasets import digits
    from lamina.training import fit
    from lamina.losses import SoftmaxCrossEntropy

    data = digits(seed=0, images=True)
    lm.manual_seed(0)
    with lm.set_default_dtype("float64"):
        model = Sequential(Conv2D(1, 16, 3, activation="relu"), MaxPool2D(2), Flatten(),
                           Dense(144, 64, activation="relu"), Dense(64, 10))
        fit(model, SoftmaxCrossEntropy(), lm.optim.Adam(model.parameters(), lr=0.005), data.train, data.dev,
            epochs=8, batch_size=32, progress=False)
    model.eval()
    conv_net = dense_head_to_conv(model, (8, 8, 1))
    X, y = data.test.X[:40], data.test.y[:40]
    canvas = np.concatenate([X[:20], X[20:]], axis=2)              # (20, 8, 16, 1)
    out = conv_net(lm.tensor(canvas)).numpy()
    assert out.shape == (20, 1, 5, 10)
    left, right = out[:, 0, 0].argmax(axis=1), out[:, 0, 4].argmax(axis=1)
    single = model(lm.tensor(X)).numpy().argmax(axis=1)
    np.testing.assert_array_equal(left, single[:20])
    np.testing.assert_array_equal(right, single[20:])
    assert (np.concatenate([left, right]) == y).mean() >= 0.9


# ---- errors -------------------------------------------------------------------------------------------------
def flat_net():
    return Sequential(Dense(64, 10, activation="relu"), Dense(10, 3), name="mlp")


@pytest.mark.parametrize("build,shape,match", [
    (flat_net, (8, 8, 1), "model 'mlp' has no Flatten layer"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), Flatten(), Dense(72, 3)), (8, 8, 1), "2 Flatten layers"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten()), (8, 8, 1), "no Dense layer after its Flatten"),
    (lambda: Sequential(Conv2D(1, 2, 3), GlobalAvgPool2D(), Flatten(), Dense(2, 3)), (8, 8, 1),
     "is a GlobalAvgPool2D, which cannot come before the Flatten"),
    (lambda: Sequential(Dense(1, 2), Flatten(), Dense(128, 3)), (8, 8, 1),
     "is a Dense, which cannot come before the Flatten"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), Dense(72, 3), Conv2D(3, 3, 1)), (8, 8, 1),
     "is a Conv2D, which cannot follow the Flatten"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), BatchNorm(72), Dense(72, 3)), (8, 8, 1),
     "BatchNorm layer .* normalizes the 72 flattened features"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), Dense(96, 3)), (8, 10, 1), "follows a 6×8×2 image"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), Dense(50, 3)), (8, 8, 1),
     r"expects n_in=50 features, but the layers before it give 6·6·2 = 72"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), Dense(72, 3), Softmax(axis=0)), (8, 8, 1),
     "works on axis 0"),
    (lambda: Sequential(Conv2D(1, 2, 3), Flatten(), Dense(72, 3)), (8, 8), r"input_shape must be the \(n_H"),
    (lambda: Dense(3, 4), (8, 8, 1), "expected a Sequential model, got a Dense"),
])
def test_heads_that_cannot_be_converted_say_why(build, shape, match):
    with pytest.raises(ShapeError, match=f"dense_head_to_conv: .*{match}"):
        dense_head_to_conv(build(), shape)
