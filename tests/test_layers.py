"""Layer API (Dense, Sequential, activations), initializers, state, summaries, errors and gradient checks."""
import numpy as np
import pytest

import lamina as lm
from lamina import registry


@pytest.fixture(autouse=True)
def _float32_default():
    with lm.set_default_dtype("float32"):
        yield


def mlp():
    return lm.nn.Sequential(lm.nn.Dense(4, 5, activation="relu"), lm.nn.Dense(5, 3, activation="tanh"),
                            lm.nn.Dense(3, 2))


# ---- parameters and modes -----------------------------------------------------------------------------
def test_dense_parameters():
    layer = lm.nn.Dense(4, 3)
    assert layer.W.shape == (4, 3) and layer.b.shape == (3,)
    assert [name for name, _ in layer.named_parameters()] == ["W", "b"]
    assert layer.parameters() == [layer.W, layer.b]
    assert all(isinstance(p, lm.Parameter) and p.requires_grad for p in layer.parameters())
    assert layer.num_parameters() == 15
    np.testing.assert_array_equal(layer.b.numpy(), np.zeros(3))
    no_bias = lm.nn.Dense(4, 3, use_bias=False)
    assert no_bias.b is None and no_bias.num_parameters() == 12
    assert no_bias(lm.tensor(np.ones((2, 4)))).shape == (2, 3)


def test_dense_forward_is_xw_plus_b_then_activation():
    layer = lm.nn.Dense(3, 2, activation="tanh")
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    layer.b = lm.Parameter(np.array([0.5, -0.5]))
    expected = np.tanh(x @ layer.W.numpy() + layer.b.numpy())
    np.testing.assert_allclose(layer(lm.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert layer.output_shape((None, 3)) == (None, 2)


def test_sequential_named_parameters_and_counts():
    model = mlp()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b"]
    assert model.num_parameters() == (4 * 5 + 5) + (5 * 3 + 3) + (3 * 2 + 2)
    assert len(model) == 3 and model[1].n_in == 5
    assert [layer.name for layer in model.layers()] == ["dense_0", "dense_1", "dense_2"]
    assert model(lm.tensor(np.ones((7, 4)))).shape == (7, 2)
    assert model.output_shape((None, 4)) == (None, 2)
    assert lm.nn.Sequential([lm.nn.Dense(2, 2), lm.nn.ReLU()]).num_parameters() == 6


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="Sequential: item 1 is a function, not a Layer"):
        lm.nn.Sequential(lm.nn.Dense(2, 2), lm.F.relu)


def test_train_and_eval_propagate():
    model = mlp()
    assert model.training and all(layer.training for layer in model.layers())
    assert model.eval() is model
    assert not model.training and not any(layer.training for layer in model.layers())
    model.train()
    assert model.training and all(layer.training for layer in model.layers())


def test_freeze_stops_gradients_and_updates():
    model = mlp()
    model[0].freeze()
    assert not model[0].W.requires_grad and not model[0].b.requires_grad
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - 25
    assert len(model.parameters(trainable_only=True)) == 4
    before = model[0].W.numpy().copy()
    loss = lm.F.softmax_cross_entropy(model(lm.tensor(np.ones((3, 4)))), lm.tensor([0, 1, 1]))
    loss.backward()
    assert model[0].W.grad is None and model[0].b.grad is None
    assert model[1].W.grad is not None
    lm.optim.SGD(model.parameters(), lr=0.5).step()
    np.testing.assert_array_equal(model[0].W.numpy(), before)
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


def test_zero_grad_clears_every_parameter():
    model = mlp()
    model(lm.tensor(np.ones((2, 4)))).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---- state -----------------------------------------------------------------------------------------------
def test_state_dict_round_trip():
    lm.manual_seed(1)
    a = mlp()
    lm.manual_seed(2)
    b = mlp()
    x = lm.tensor(np.random.default_rng(0).standard_normal((3, 4)))
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    state = a.state_dict()
    assert sorted(state) == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b"]
    b.load_state_dict(state)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)
        assert q.dtype == np.float32
    state["1.b"][...] = 123.0
    assert not np.any(a[1].b.numpy() == 123.0)


def test_load_state_dict_shape_mismatch_is_clear():
    model = mlp()
    state = model.state_dict()
    before = model[0].W.numpy().copy()
    state["0.W"] = np.zeros((4, 7))
    with pytest.raises(lm.CheckpointError, match=r"'0\.W' has shape \(4, 5\) in the model but \(4, 7\) in the state"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model[0].W.numpy(), before)


def test_load_state_dict_missing_and_unexpected_names():
    model = mlp()
    state = model.state_dict()
    del state["2.b"]
    state["9.W"] = np.zeros(2)
    with pytest.raises(lm.CheckpointError, match=r"missing \['2\.b'\], unexpected \['9\.W'\]"):
        model.load_state_dict(state)
    del state["9.W"]
    state["0.b"] = np.full(5, 2.0)
    model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model[0].b.numpy(), np.full(5, 2.0))


def test_summary_text():
    model = mlp()
    model[2].freeze()
    lines = []
    text = model.summary((4,), print_fn=lines.append)
    assert lines == [text]
    assert "0 (Dense 4 -> 5, activation='relu')" in text and "(None, 5)" in text
    assert "2 (Dense 3 -> 2)" in text and "(None, 2)" in text
    row = next(line for line in text.splitlines() if line.startswith("1 ("))
    assert row.split()[-1] == "18"
    assert "Total params: 51" in text and "Trainable params: 43" in text
    assert "?" in model.summary(print_fn=None)       # no input shape given: shapes unknown


# ---- initializers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("init, expected_std", [
    ("small_random", lambda n_in, n_out: 0.01),
    ("xavier", lambda n_in, n_out: np.sqrt(1.0 / n_in)),
    ("glorot", lambda n_in, n_out: np.sqrt(2.0 / (n_in + n_out))),
    ("he", lambda n_in, n_out: np.sqrt(2.0 / n_in)),
])
def test_initializer_scales(init, expected_std):
    lm.manual_seed(0)
    n_in, n_out = 400, 600
    W = lm.nn.Dense(n_in, n_out, init=init).W.numpy()
    assert W.std() == pytest.approx(expected_std(n_in, n_out), rel=0.02)
    assert abs(W.mean()) < 0.01 * expected_std(n_in, n_out) * 10


def test_zeros_initializer_and_the_symmetry_trap():
    layer = lm.nn.Dense(5, 4, init="zeros")
    np.testing.assert_array_equal(layer.W.numpy(), np.zeros((5, 4)))
    out = layer(lm.tensor(np.random.default_rng(0).standard_normal((3, 5))))
    np.testing.assert_array_equal(out.numpy(), np.zeros((3, 4)))


def test_auto_init_follows_the_activation():
    lm.manual_seed(0)
    relu = lm.nn.Dense(500, 500, activation="relu").W.numpy()
    tanh = lm.nn.Dense(500, 500, activation="tanh").W.numpy()
    assert relu.std() == pytest.approx(np.sqrt(2 / 500), rel=0.02)
    assert tanh.std() == pytest.approx(np.sqrt(1 / 500), rel=0.02)


def test_initializer_by_object_and_by_registry():
    assert registry.get("initializers", "he") is lm.init.He
    lm.manual_seed(0)
    W = lm.nn.Dense(300, 300, init=lm.init.Glorot()).W.numpy()
    assert W.std() == pytest.approx(np.sqrt(2 / 600), rel=0.03)
    with lm.set_default_dtype("float64"):
        assert lm.nn.Dense(3, 3, init="he").W.dtype == np.float64


def test_manual_seed_reproduces_initial_weights():
    lm.manual_seed(42)
    a = lm.nn.Dense(6, 4).W.numpy().copy()
    lm.manual_seed(42)
    b = lm.nn.Dense(6, 4).W.numpy().copy()
    c = lm.nn.Dense(6, 4).W.numpy().copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


# ---- activations by name -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, fn", [
    ("relu", lambda z: np.maximum(z, 0)), ("sigmoid", lambda z: 1 / (1 + np.exp(-z))), ("tanh", np.tanh),
    ("leaky_relu", lambda z: np.where(z > 0, z, 0.01 * z)),
    ("softmax", lambda z: np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)),
])
def test_activation_by_registered_name(name, fn):
    z = np.random.default_rng(0).standard_normal((4, 3))
    with lm.set_default_dtype("float64"):
        x = lm.tensor(z)
        np.testing.assert_allclose(lm.nn.Activation(name)(x).numpy(), fn(z), rtol=1e-12)
        layer = lm.nn.Dense(3, 3, activation=name)
        np.testing.assert_allclose(layer(x).numpy(), fn(z @ layer.W.numpy() + layer.b.numpy()), rtol=1e-10,
                                   atol=1e-12)
    assert registry.get("activations", name) is getattr(lm.F, name)


def test_activation_layers_with_arguments():
    z = np.array([[-2.0, 1.0], [3.0, -0.5]])
    with lm.set_default_dtype("float64"):
        np.testing.assert_allclose(lm.nn.LeakyReLU(alpha=0.2)(lm.tensor(z)).numpy(), np.where(z > 0, z, 0.2 * z))
        np.testing.assert_allclose(lm.nn.Softmax(axis=0)(lm.tensor(z)).numpy().sum(axis=0), [1.0, 1.0])
        layer = lm.nn.Dense(2, 2, activation=lm.F.sigmoid)
        assert layer.activation_name == "sigmoid"


def test_unknown_activation_lists_close_matches():
    with pytest.raises(lm.LaminaError, match=r"unknown activation 'rleu'\. Did you mean 'relu'.*Known activations:"):
        lm.nn.Dense(3, 2, activation="rleu")
    with pytest.raises(lm.LaminaError, match=r"unknown activation 'sigmod'\. Did you mean 'sigmoid'"):
        lm.nn.Activation("sigmod")
    with pytest.raises(lm.LaminaError, match=r"unknown initializer 'hee'\. Did you mean 'he'"):
        lm.nn.Dense(3, 2, init="hee")


# ---- bad inputs ---------------------------------------------------------------------------------------
def test_dense_wrong_feature_count_names_layer_and_shapes():
    model = mlp()
    with pytest.raises(lm.ShapeError, match=r"Dense layer 'dense_0': expected input of shape \(m, 4\).*got \(2, 3\)"):
        model(lm.tensor(np.ones((2, 3))))
    layer = lm.nn.Dense(4, 2, name="encoder")
    with pytest.raises(lm.ShapeError, match=r"'encoder'.*\(m, 4\).*got \(4,\)"):
        layer(lm.tensor(np.ones(4)))


def test_dense_rejects_non_positive_sizes():
    with pytest.raises(lm.ShapeError, match="n_in and n_out must be positive, got 0 and 3"):
        lm.nn.Dense(0, 3)


# ---- gradient checks ----------------------------------------------------------------------------------
def test_gradcheck_small_dense_network_float64():
    with lm.set_default_dtype("float64"):
        lm.manual_seed(0)
        model = lm.nn.Sequential(lm.nn.Dense(3, 4, activation="tanh"), lm.nn.Dense(4, 3, activation="sigmoid"),
                                 lm.nn.Dense(3, 2))
        rng = np.random.default_rng(1)
        x = lm.tensor(rng.standard_normal((5, 3)))
        labels = lm.tensor(rng.integers(0, 2, 5))
        inputs = dict(model.named_parameters())
        result = lm.gradcheck(lambda: lm.F.softmax_cross_entropy(model(x), labels), inputs)
        assert result.passed and result.relative_difference < 1e-7, str(result)
        target = lm.tensor(rng.standard_normal((5, 2)))
        result = lm.gradcheck(lambda: lm.F.mse(model(x), target), {"x": x, **inputs})
        assert result.relative_difference < 1e-7, str(result)


def test_gradcheck_detects_a_wrong_gradient_and_reports_the_worst_component():
    with lm.set_default_dtype("float64"):
        lm.manual_seed(0)
        model = lm.nn.Sequential(lm.nn.Dense(3, 4, activation="tanh"), lm.nn.Dense(4, 2))
        x = lm.tensor(np.random.default_rng(1).standard_normal((5, 3)))
        mask = np.zeros((4, 2))
        mask[2, 1] = 0.5

        def loss():   # the detached term changes J but hides its gradient from autograd
            return model(x).sum() + (model[1].W.detach() * lm.tensor(mask)).sum()

        result = lm.gradcheck(loss, dict(model.named_parameters()))
        assert not result.passed and result.relative_difference > 1e-3
        assert result.worst_input == "1.W" and result.worst_index == (2, 1)
        assert result.worst_difference == pytest.approx(0.5, rel=1e-5)
        assert "FAILED" in str(result) and "1.W[2, 1]" in str(result)


def test_gradcheck_requires_float64():
    layer = lm.nn.Dense(2, 2)
    with pytest.raises(lm.LaminaError, match="gradient checking needs float64"):
        lm.gradcheck(lambda: layer(lm.tensor(np.ones((1, 2)))).sum(), dict(layer.named_parameters()))
