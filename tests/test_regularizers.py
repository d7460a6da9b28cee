"""L2 and L1 regularization (§2.3): the cost terms by hand, only weights regularized (not biases,
not BatchNorm's γ/β), the weight-decay gradient, PyTorch's weight_decay taking the same step, and a
gradient check of a cost with the L2 term included (§2.10)."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina import registry
from lamina.regularizers import L1, L2


def small_model():
    """Dense(2, 2) then BatchNorm then Dense(2, 1) with W^[1] = [[1, 2], [3, 4]], W^[2] = [[-1], [2]]."""
    with lm.set_default_dtype("float64"):
        model = lm.nn.Sequential(lm.nn.Dense(2, 2), lm.nn.BatchNorm(2), lm.nn.Dense(2, 1))
    model[0].W.data = np.array([[1.0, 2.0], [3.0, 4.0]])
    model[2].W.data = np.array([[-1.0], [2.0]])
    for p in (model[0].b, model[1].gamma, model[1].beta, model[2].b):
        p.data = np.full(p.shape, 7.0)
    return model


def test_registered_by_name():
    assert registry.get("regularizers", "l2") is L2 and registry.get("regularizers", "l1") is L1
    reg = registry.get("regularizers", "l2")(lambd=0.01)
    assert reg.lambd == 0.01 and repr(reg) == "L2(lambd=0.01)"


def test_l2_term_by_hand():
    """λ/(2m)·Σ_l ‖W^[l]‖²_F = 0.1/(2·5)·((1 + 4 + 9 + 16) + (1 + 4)) = 0.35; biases, γ and β are not in it."""
    term = L2(lambd=0.1)(small_model(), 5)
    assert term.shape == () and term.dtype == np.float64
    assert term.item() == pytest.approx(0.35, rel=1e-15)


def test_l1_term_by_hand():
    """λ/(2m)·Σ_l ‖W^[l]‖₁ = 0.1/(2·5)·((1 + 2 + 3 + 4) + (1 + 2)) = 0.13."""
    assert L1(lambd=0.1)(small_model(), 5).item() == pytest.approx(0.13, rel=1e-15)


def test_only_the_listed_weights_are_regularized():
    model = small_model()
    assert [name for name, _ in model.named_weights()] == ["0.W", "2.W"]
    (L2(lambd=0.1)(model, 5) + L1(lambd=0.1)(model, 5)).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.endswith(".W"), name


def test_gradients_are_weight_decay_and_sign():
    model = small_model()
    model[0].W.data = np.array([[1.5, -2.0], [0.0, 4.0]])
    L2(lambd=0.3)(model, 6).backward()
    np.testing.assert_allclose(model[0].W.grad.numpy(), 0.3 / 6 * model[0].W.numpy(), rtol=1e-15)
    model.zero_grad()
    L1(lambd=0.3)(model, 6).backward()
    np.testing.assert_allclose(model[0].W.grad.numpy(), 0.3 / 12 * np.array([[1.0, -1.0], [0.0, 1.0]]), rtol=1e-15)


def test_no_weights_no_term_and_bad_arguments():
    assert L2(lambd=1.0)(lm.nn.Sequential(lm.nn.ReLU()), 3).item() == 0.0
    with pytest.raises(lm.LaminaError, match="lambd must be non-negative"):
        L2(lambd=-1.0)
    with pytest.raises(lm.LaminaError, match="m .* must be positive"):
        L2(lambd=1.0)(small_model(), 0)


def test_weight_decay_step_matches_torch():
    """One SGD step on J + λ/(2m)·Σ‖W‖² equals PyTorch's SGD with weight_decay = λ/m on the weights
    (and none on the biases): W ← (1 - αλ/m)·W - α·dW."""
    lambd, lr, m = 0.7, 0.1, 8
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((m, 3)), rng.integers(0, 2, m)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(0)
        model = lm.nn.Sequential(lm.nn.Dense(3, 4, activation="tanh"), lm.nn.Dense(4, 2))
        twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
        with torch.no_grad():
            for dense, linear in zip((model[0], model[1]), (twin[0], twin[2])):
                linear.weight.copy_(torch.from_numpy(dense.W.numpy().T))
                linear.bias.copy_(torch.from_numpy(dense.b.numpy()))
        cost = lm.F.softmax_cross_entropy(model(lm.tensor(X)), lm.tensor(y)) + L2(lambd=lambd)(model, m)
        cost.backward()
        lm.optim.SGD(model.parameters(), lr=lr).step()

    weights = [twin[0].weight, twin[2].weight]
    biases = [twin[0].bias, twin[2].bias]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": lambd / m}, {"params": biases}], lr=lr)
    torch.nn.functional.cross_entropy(twin(torch.from_numpy(X)), torch.from_numpy(y)).backward()
    optimizer.step()
    for dense, linear in zip((model[0], model[1]), (twin[0], twin[2])):
        np.testing.assert_allclose(dense.W.numpy(), linear.weight.detach().numpy().T, rtol=1e-12)
        np.testing.assert_allclose(dense.b.numpy(), linear.bias.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("regularizer", [L2(lambd=0.5), L1(lambd=0.5)], ids=["l2", "l1"])
def test_gradient_check_with_the_term_in_the_cost(regularizer):
    with lm.set_default_dtype("float64"):
        lm.manual_seed(1)
        model = lm.nn.Sequential(lm.nn.Dense(3, 5, activation="tanh"), lm.nn.Dense(5, 4, use_bias=False),
                                 lm.nn.BatchNorm(4), lm.nn.Dense(4, 3))
        X = lm.tensor(np.random.default_rng(2).standard_normal((6, 3)))
        y = lm.tensor(np.arange(6) % 3)
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        result = lm.gradcheck(lambda: lm.F.softmax_cross_entropy(model(X), y) + regularizer(model, 6), params)
    assert result.passed, str(result)
    assert result.relative_difference < 1e-7
