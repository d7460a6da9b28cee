"""Neural style transfer (§4.22): each cost against an independent torch implementation of the seed's
formula in float64, gradient checks of each cost w.r.t. the generated activations and image, the
feature extractor, weights loading, image I/O, and a tiny style transfer whose cost decreases."""
import numpy as np
import pytest
import torch
from PIL import Image

import lamina as lm
from lamina.errors import CheckpointError, LaminaError, ShapeError
from lamina.images import load_image, save_image
from lamina.style import (FeatureExtractor, content_cost, feature_network, gram_matrix, layer_index,
                          layer_style_cost, load_weights, style_cost, style_transfer, total_cost)


# ---- the seed's formulas, written independently in torch (loops where the seed sums) --------------
def torch_content(a_C, a_G):
    m, n_H, n_W, n_C = a_G.shape
    return torch.sum((a_C - a_G) ** 2) / (4 * n_H * n_W * n_C)


def torch_gram(A):
    m, n_H, n_W, n_C = A.shape
    G = torch.zeros((m, n_C, n_C), dtype=A.dtype)
    for i in range(n_H):
        for j in range(n_W):
            G = G + A[:, i, j, :, None] * A[:, i, j, None, :]
    return G


def torch_layer_style(a_S, a_G):
    m, n_H, n_W, n_C = a_G.shape
    return torch.sum((torch_gram(a_S) - torch_gram(a_G)) ** 2) / (2 * n_H * n_W * n_C) ** 2


def _pair(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(shape)


SHAPES = [(1, 3, 4, 2), (2, 2, 3, 5), (1, 1, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cost,oracle,seed", [(content_cost, torch_content, 0), (layer_style_cost, torch_layer_style, 3)],
                         ids=["content", "layer_style"])
def test_cost_matches_torch_forward_and_backward(cost, oracle, seed, shape):
    target, G = _pair(shape, seed)
    with lm.set_default_dtype("float64"):
        g = lm.tensor(G, requires_grad=True)
        J = cost(target, g)
        J.backward()
    gt = torch.from_numpy(G).requires_grad_(True)
    Jt = oracle(torch.from_numpy(target), gt)
    Jt.backward()
    np.testing.assert_allclose(J.item(), Jt.item(), rtol=1e-11)
    np.testing.assert_allclose(g.grad.numpy(), gt.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_content_cost_hand_computed():
    a_C = np.zeros((1, 1, 2, 2))
    a_G = np.array([[[[1.0, 2.0], [0.0, -1.0]]]])
    # Σ (a_C − a_G)² = 1 + 4 + 0 + 1 = 6, over 4·1·2·2 = 16
    assert content_cost(a_C, lm.tensor(a_G, dtype="float64")).item() == pytest.approx(6 / 16)


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_matrix_matches_torch(shape):
    A, up = _pair(shape, 1)
    up = np.random.default_rng(2).standard_normal((shape[0], shape[3], shape[3]))
    with lm.set_default_dtype("float64"):
        a = lm.tensor(A, requires_grad=True)
        G = gram_matrix(a)
        (G * lm.tensor(up)).sum().backward()
    at = torch.from_numpy(A).requires_grad_(True)
    Gt = torch_gram(at)
    (Gt * torch.from_numpy(up)).sum().backward()
    assert G.shape == (shape[0], shape[3], shape[3])
    np.testing.assert_allclose(G.numpy(), Gt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), at.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_style_cost_and_total_cost_match_torch():
    rng = np.random.default_rng(4)
    shapes = [(1, 4, 4, 3), (1, 2, 2, 5)]
    S = [rng.standard_normal(s) for s in shapes]
    G = [rng.standard_normal(s) for s in shapes]
    C_act, _ = _pair((1, 2, 2, 5), 5)
    lambdas = [0.3, 0.7]
    with lm.set_default_dtype("float64"):
        gs = [lm.tensor(g, requires_grad=True) for g in G]
        J_style = style_cost(S, gs, lambdas)
        J = total_cost(content_cost(C_act, gs[1]), J_style, alpha=10, beta=40)
        J.backward()
        by_name = style_cost({"a": S[0], "b": S[1]}, {"a": lm.tensor(G[0]), "b": lm.tensor(G[1])},
                             {"b": 0.7, "a": 0.3})
        default = style_cost(S, [lm.tensor(g) for g in G])
    gt = [torch.from_numpy(g).requires_grad_(True) for g in G]
    Js_t = sum(w * torch_layer_style(torch.from_numpy(s), g) for w, s, g in zip(lambdas, S, gt))
    Jt = 10 * torch_content(torch.from_numpy(C_act), gt[1]) + 40 * Js_t
    Jt.backward()
    np.testing.assert_allclose(J_style.item(), Js_t.item(), rtol=1e-11)
    np.testing.assert_allclose(by_name.item(), Js_t.item(), rtol=1e-11)
    np.testing.assert_allclose(J.item(), Jt.item(), rtol=1e-11)
    for g, t in zip(gs, gt):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-13)
    equal = sum(0.5 * torch_layer_style(torch.from_numpy(s), torch.from_numpy(g)) for s, g in zip(S, G))
    np.testing.assert_allclose(default.item(), equal.item(), rtol=1e-11)


@pytest.mark.parametrize("cost", [content_cost, layer_style_cost], ids=["content", "layer_style"])
def test_gradcheck_costs_wrt_generated_activations(cost):
    target, G = _pair((2, 2, 3, 3), 6)
    with lm.set_default_dtype("float64"):
        result = lm.gradcheck(lambda g: cost(target, g), [lm.tensor(G)])
    assert result.passed, result


def test_gradcheck_total_cost_wrt_generated_image():
    """∂J/∂G through a small CNN: the gradient style transfer follows."""
    rng = np.random.default_rng(7)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(7)
        net = lm.nn.Sequential(lm.nn.Conv2D(2, 3, 3, padding=1, activation="tanh"), lm.nn.AvgPool2D(2),
                               lm.nn.Conv2D(3, 4, 2, activation="tanh"))
        extract = FeatureExtractor(net, [0, 2])
        C, S = rng.uniform(size=(1, 4, 4, 2)), rng.uniform(size=(1, 4, 4, 2))
        a_C = extract(lm.tensor(C))[2]
        a_S = extract(lm.tensor(S))

        def J(g):
            a_G = extract(g)
            return total_cost(content_cost(a_C, a_G[2]), style_cost([a_S[0], a_S[2]], [a_G[0], a_G[2]]), 1.0, 50.0)

        result = lm.gradcheck(J, [lm.tensor(rng.uniform(size=(1, 4, 4, 2)))])
    assert result.passed, result


def test_cost_errors_name_the_function_and_shapes():
    with pytest.raises(ShapeError, match=r"content_cost: a_C and a_G must have the same shape.*\(1, 2, 2, 3\)"):
        content_cost(np.zeros((1, 2, 2, 3)), lm.tensor(np.zeros((1, 2, 3, 3))))
    with pytest.raises(ShapeError, match=r"gram_matrix: A must be NHWC.*\(2, 3\)"):
        gram_matrix(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="layer_style_cost: a_S and a_G"):
        layer_style_cost(np.zeros((1, 2, 2, 3)), lm.tensor(np.zeros((1, 2, 2, 4))))
    with pytest.raises(LaminaError, match="style_cost: expected 2 weights"):
        style_cost([np.ones((1, 1, 1, 1))] * 2, [lm.tensor(np.ones((1, 1, 1, 1)))] * 2, [1.0])
    with pytest.raises(LaminaError, match="style_cost: activations_S has 1 layers but activations_G has 2"):
        style_cost([np.ones((1, 1, 1, 1))], [lm.tensor(np.ones((1, 1, 1, 1)))] * 2)


# ---- the feature extractor and networks ---------------------------------------------------------
def test_feature_extractor_returns_the_layers_outputs():
    lm.manual_seed(0)
    net = lm.nn.Sequential(lm.nn.Conv2D(1, 2, 3, name="first"), lm.nn.ReLU(), lm.nn.MaxPool2D(2),
                           lm.nn.Flatten(), lm.nn.Dense(8, 3))
    x = lm.tensor(np.random.default_rng(0).standard_normal((2, 6, 6, 1)))
    feats = FeatureExtractor(net, ["first", 2, "1"])(x)
    manual = net[0](x)
    np.testing.assert_array_equal(feats["first"].numpy(), manual.numpy())
    np.testing.assert_array_equal(feats["1"].numpy(), net[1](manual).numpy())
    np.testing.assert_array_equal(feats[2].numpy(), net[2](net[1](manual)).numpy())
    assert FeatureExtractor(net, [-1])(x)[-1].shape == (2, 3)
    assert layer_index(net, "relu_1") == 1
    with pytest.raises(LaminaError, match=r"no layer named 'frist'.*Did you mean 'first'"):
        FeatureExtractor(net, ["frist"])
    with pytest.raises(LaminaError, match="layer index 5 is out of range: the model has 5 layers"):
        FeatureExtractor(net, [5])


def test_vgg16_feature_network_is_the_truncated_trunk():
    net = feature_network("vgg16", upto="conv3_2", seed=3)
    names = [net[i].name for i in range(len(net))]
    assert names == ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2", "conv3_1", "conv3_2"]
    assert net.output_shape((None, 32, 32, 3)) == (None, 8, 8, 256)
    assert [k for k, _ in net.named_parameters()][:3] == ["0.W", "0.b", "1.W"]
    again = feature_network("vgg16", upto=7, seed=3)
    np.testing.assert_array_equal(net[7].W.numpy(), again[7].W.numpy())
    W = net[0].W.numpy()  # He initialisation: std √(2/fan_in), fan_in = 3·3·3
    assert W.std() == pytest.approx(np.sqrt(2 / 27), rel=0.15)
    full = feature_network("vgg16")
    assert len(full) == 18 and full[-1].name == "pool5"
    assert [feature_network("alexnet")[i].name for i in range(8)] == [
        "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool3"]
    with pytest.raises(LaminaError, match="unknown model 'vgg61'.*Did you mean 'vgg16'"):
        feature_network("vgg61")


def test_load_weights_from_a_full_model_state_and_errors(tmp_path):
    from safetensors.numpy import save_file

    from lamina.models import vgg16

    lm.manual_seed(11)
    full = vgg16(input_shape=(32, 32, 3), num_classes=2)
    path = tmp_path / "vgg16.safetensors"
    save_file(full.state_dict(), str(path))
    net = feature_network("vgg16", upto="conv2_1", seed=0)
    load_weights(net, path)  # the classifier and the later blocks are ignored
    np.testing.assert_array_equal(net[3].W.numpy(), full[3].W.numpy())
    lm.checkpoint.save(tmp_path / "ckpt", full)  # a `lamina train` checkpoint folder works too
    net = feature_network("vgg16", upto="conv2_1", seed=0)
    load_weights(net, tmp_path / "ckpt")
    np.testing.assert_array_equal(net[0].b.numpy(), full[0].b.numpy())

    state = {k: v for k, v in net.state_dict().items() if k != "3.b"}
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['3.b'\]"):
        load_weights(net, tmp_path / "missing.safetensors")
    state = dict(net.state_dict(), **{"0.W": np.zeros((5, 5, 3, 64), np.float32)})
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match=r"'0.W' has shape \(3, 3, 3, 64\) in the model but \(5, 5, 3, 64\)"):
        load_weights(net, tmp_path / "shape.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_weights(net, tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(net, tmp_path / "nope.safetensors")


# ---- image files ----------------------------------------------------------------------------------
def test_image_round_trip_resize_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (1, 10, 20, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], pixels / 255.0, atol=1e-7)
    assert load_image(tmp_path / "a.png", size=8).shape == (1, 4, 8, 3)
    assert load_image(tmp_path / "a.png", size=(5, 6), mode="L").shape == (1, 5, 6, 1)

    y = x.copy()
    y[0, 0, 0] = [-0.5, 1.7, np.nan]
    save_image(tmp_path / "b.png", y)
    back = np.asarray(Image.open(tmp_path / "b.png"))
    assert back[0, 0].tolist() == [0, 255, 0]
    np.testing.assert_array_equal(back[1:], pixels[1:])
    save_image(tmp_path / "g.jpg", np.full((4, 4), 0.5))
    assert Image.open(tmp_path / "g.jpg").size == (4, 4)

    with pytest.raises(LaminaError, match="image file .*nope.png does not exist"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(LaminaError, match="bad.png is not an image Pillow can read"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ShapeError, match="save_image: expected one image"):
        save_image(tmp_path / "c.png", np.zeros((2, 4, 4, 3)))
    with pytest.raises(LaminaError, match="names no image format"):
        save_image(tmp_path / "c.xyz", np.zeros((4, 4, 3)))
    assert not list(tmp_path.glob(".*.tmp"))


# ---- the optimisation ------------------------------------------------------------------------------
def _tiny_images(n=16):
    yy, xx = np.mgrid[0:n, 0:n] / n
    content = np.stack([xx, yy, np.full_like(xx, 0.5)], -1)[None]
    style = (0.5 + 0.5 * np.sin(12 * xx + 7 * yy))[..., None] * np.array([1.0, 0.4, 0.1])
    return content, style[None]


def test_tiny_style_transfer_decreases_the_cost():
    content, style = _tiny_images()
    net = feature_network("vgg16", upto="conv2_1", seed=0)
    params_before = {k: v.copy() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    result = style_transfer(content, style, net, "conv2_1", ["conv1_1", "conv2_1"], steps=12, lr=0.03, seed=1,
                            alpha=10, beta=40)
    assert len(result.costs) == len(result.content_costs) == len(result.style_costs) == 13
    assert result.costs[-1] < 0.5 * result.costs[0]
    np.testing.assert_allclose(result.costs, 10 * np.array(result.content_costs) + 40 * np.array(result.style_costs),
                               rtol=1e-5)
    assert result.image.shape == (1, 16, 16, 3) and result.image.dtype == np.float32
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    for k, v in net.state_dict().items():  # the network is used, not trained
        np.testing.assert_array_equal(v, params_before[k])
    assert [p.requires_grad for p in net.parameters()] == flags and net.training
    again = style_transfer(content, style, net, "conv2_1", ["conv1_1", "conv2_1"], steps=12, lr=0.03, seed=1,
                           alpha=10, beta=40)
    np.testing.assert_array_equal(again.image, result.image)


def test_zero_steps_returns_the_initial_image_and_pure_content_keeps_content():
    content, style = _tiny_images(8)
    net = feature_network("vgg16", upto="conv1_2", seed=0)
    start = style_transfer(content, style, net, "conv1_2", ["conv1_1"], steps=0, init_noise=0.0)
    np.testing.assert_allclose(start.image, content, atol=1e-6)
    assert start.content_costs == [pytest.approx(0.0, abs=1e-10)]


def test_style_transfer_argument_errors():
    content, style = _tiny_images(8)
    net = feature_network("vgg16", upto="conv1_2", seed=0)
    with pytest.raises(ShapeError, match="content and style must have the same shape"):
        style_transfer(content, style[:, :4], net, "conv1_2", ["conv1_1"], steps=1)
    with pytest.raises(LaminaError, match="init_noise must lie in"):
        style_transfer(content, style, net, "conv1_2", ["conv1_1"], steps=1, init_noise=2)
    with pytest.raises(LaminaError, match="no layer named 'conv9_9'"):
        style_transfer(content, style, net, "conv9_9", ["conv1_1"], steps=1)
