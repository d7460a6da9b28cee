"""Inverted dropout (§2.4): the mask's statistics beside torch.nn.Dropout's, the kept values scaled
by 1/keep_prob, the same mask in the backward, eval identity, seeding, a keep_prob per layer, and
gradient checking refusing to run through an active dropout (§2.10)."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.gradcheck import mark_stochastic
from lamina.recipes import Recipe
from lamina.testing import run_layer_test

M, N = 1000, 400          # 400 000 units: the zeroed fraction's standard deviation is below 0.001


def zeroed_fraction(out) -> float:
    return float(np.mean(out == 0))


@pytest.mark.parametrize("keep_prob", [0.5, 0.8, 0.95])
def test_statistics_match_torch(keep_prob):
    x = np.random.default_rng(123).uniform(1.0, 2.0, (M, N)).astype(np.float32)   # never 0 itself
    lm.manual_seed(0)
    ours = lm.nn.Dropout(keep_prob)(lm.tensor(x)).numpy()
    torch.manual_seed(0)
    theirs = torch.nn.Dropout(p=1.0 - keep_prob)(torch.from_numpy(x)).numpy()
    tolerance = 5 * np.sqrt(keep_prob * (1 - keep_prob) / x.size)                    # five standard deviations
    for out in (ours, theirs):
        assert abs(zeroed_fraction(out) - (1.0 - keep_prob)) < tolerance
        assert abs(out.mean() / x.mean() - 1.0) < 0.01                              # the expected value is kept
    assert abs(zeroed_fraction(ours) - zeroed_fraction(theirs)) < 2 * tolerance
    kept = ours != 0
    np.testing.assert_allclose(ours[kept], x[kept] / np.float32(keep_prob), rtol=1e-6)
    kept = theirs != 0
    np.testing.assert_allclose(theirs[kept], x[kept] / np.float32(keep_prob), rtol=1e-6)


def test_the_seed_listing_by_hand():
    """d3 = rand < keep_prob; a3 = a3·d3 / keep_prob, with rand from the backend's seeded generator."""
    a3 = np.random.default_rng(1).standard_normal((5, 7))
    with lm.set_default_dtype("float64"):
        lm.manual_seed(11)
        out = lm.nn.Dropout(0.8)(lm.tensor(a3)).numpy()
        lm.manual_seed(11)
        d3 = lm.get_backend().random_uniform(a3.shape, np.float64) < 0.8
    np.testing.assert_array_equal(out != 0, d3)
    np.testing.assert_allclose(out, a3 * d3 / 0.8, rtol=1e-15)


def test_backward_uses_the_forward_mask():
    x = lm.tensor(np.random.default_rng(2).standard_normal((50, 30)), requires_grad=True)
    out = lm.nn.Dropout(0.7)(x)
    upstream = np.random.default_rng(3).standard_normal((50, 30)).astype(np.float32)
    (out * lm.tensor(upstream)).sum().backward()
    mask = out.numpy() != 0
    assert 0 < mask.mean() < 1
    np.testing.assert_allclose(x.grad.numpy(), upstream * mask / np.float32(0.7), rtol=1e-6)


def test_eval_mode_and_keep_prob_one_are_the_identity():
    x = lm.tensor(np.random.default_rng(4).standard_normal((20, 10)))
    layer = lm.nn.Dropout(0.5)
    assert layer.eval()(x) is x
    assert lm.nn.Dropout(1.0)(x) is x
    layer.train()
    assert zeroed_fraction(layer(x).numpy()) > 0.3


def test_seeded_and_a_new_mask_each_call():
    x = lm.tensor(np.ones((30, 30)))
    layer = lm.nn.Dropout(0.5)
    lm.manual_seed(7)
    first, second = layer(x).numpy(), layer(x).numpy()
    lm.manual_seed(7)
    np.testing.assert_array_equal(layer(x).numpy(), first)
    assert not np.array_equal(first, second)


def test_a_different_keep_prob_per_layer():
    model = lm.nn.Sequential(lm.nn.Dense(N, N), lm.nn.Dropout(0.5), lm.nn.Dense(N, N), lm.nn.Dropout(0.9))
    seen = {}
    for i in (1, 3):
        forward = model[i].forward
        model[i].forward = lambda x, i=i, forward=forward: seen.setdefault(i, forward(x))
    model(lm.tensor(np.random.default_rng(5).uniform(1, 2, (M, N))))
    assert abs(zeroed_fraction(seen[1].numpy()) - 0.5) < 0.01
    assert abs(zeroed_fraction(seen[3].numpy()) - 0.1) < 0.01


def test_keep_prob_must_be_a_probability():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(lm.LaminaError, match=r"keep_prob .* must lie in \(0, 1\]"):
            lm.nn.Dropout(bad)


def test_float32_stays_float32():
    assert lm.nn.Dropout(0.5)(lm.tensor(np.ones((4, 4)), dtype="float32")).dtype == np.float32
    assert lm.nn.Dropout(0.5)(lm.tensor(np.ones((4, 4)), dtype="float64")).dtype == np.float64


# ---- gradient checking (§2.10: turn dropout off) ----------------------------------------------------------
def model_and_data():
    lm.manual_seed(0)
    model = lm.nn.Sequential(lm.nn.Dense(4, 5, activation="tanh"), lm.nn.Dropout(0.8, name="drop"),
                             lm.nn.Dense(5, 2))
    x = lm.tensor(np.random.default_rng(0).standard_normal((6, 4)))
    return model, x, dict(model.named_parameters())


def test_gradcheck_refuses_an_active_dropout_and_says_why():
    with lm.set_default_dtype("float64"):
        model, x, params = model_and_data()
        why = r"stochastic.*§2\.10.*Dropout layer 'drop' is active.*model\.eval\(\)"
        with pytest.raises(lm.LaminaError, match=why):
            lm.gradcheck(lambda: (model(x) ** 2).sum(), params)
        model.eval()
        assert lm.gradcheck(lambda: (model(x) ** 2).sum(), params).passed
        model.train()
        model[1].keep_prob = 1.0
        assert lm.gradcheck(lambda: (model(x) ** 2).sum(), params).passed


def test_any_stochastic_code_can_ask_gradcheck_to_refuse():
    class Noise(lm.nn.Layer):
        def forward(self, x):
            mark_stochastic("Noise layer adds Gaussian noise")
            return x + lm.tensor(np.random.default_rng().standard_normal(x.shape), dtype=x.dtype)

    with lm.set_default_dtype("float64"):
        x = lm.tensor(np.ones((2, 2)))
        layer = Noise()
        with pytest.raises(lm.LaminaError, match="Noise layer adds Gaussian noise"):
            lm.gradcheck(lambda t: layer(t).sum(), [x])
        assert layer(x).shape == (2, 2)                   # outside a gradient check marking costs nothing
        assert lm.gradcheck(lambda t: (t * t).sum(), [x]).passed      # the refusal left no state behind


def test_run_layer_test():
    assert run_layer_test(lambda: lm.nn.Dropout(1.0), (3, 4)).output_shape == (3, 4)
    assert run_layer_test(lambda: lm.nn.Dropout(0.5).eval(), (2, 3, 4)).num_parameters == 0
    with pytest.raises(lm.LaminaError, match="Dropout layer 'dropout' is active"):
        run_layer_test(lambda: lm.nn.Dropout(0.5), (3, 4))


def test_recipe_layer():
    recipe = Recipe.from_dict({
        "data": {"dataset": "digits"}, "loss": {"name": "softmax_cross_entropy"},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "model": {"layers": [{"type": "dense", "n_out": 16, "activation": "relu"},
                             {"type": "dropout", "keep_prob": 0.8}, {"type": "dense", "n_out": 10}]}})
    model = recipe.build_model(64)
    assert isinstance(model[1], lm.nn.Dropout) and model[1].keep_prob == 0.8
    assert model(lm.tensor(np.ones((4, 64)))).shape == (4, 10)
