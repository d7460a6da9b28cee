"""Gradient clipping by value and by global norm, against torch.nn.utils.clip_grad_value_ and
clip_grad_norm_, and the promise not to write into the old gradient arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina as lm
from lamina.clipping import clip_grad_norm, clip_grad_value
from lamina.errors import LaminaError

SHAPES = [(4, 3), (3,), (2, 2, 2)]
TOLERANCE = {"float64": dict(rtol=1e-13, atol=0), "float32": dict(rtol=1e-6, atol=1e-7)}


def pair(dtype, scale, seed=0):
    """Lamina parameters and torch tensors holding the same values and gradients (std `scale`)."""
    rng = np.random.default_rng(seed)
    grads = [(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES]
    params = [lm.Parameter(np.zeros(s), dtype=dtype) for s in SHAPES]
    for p, g in zip(params, grads):
        p.grad = lm.tensor(g, dtype=dtype)
    tensors = [torch.zeros(s, dtype=getattr(torch, dtype), requires_grad=True) for s in SHAPES]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g.copy())
    return params, tensors


def assert_grads_match(params, tensors, dtype):
    for i, (p, t) in enumerate(zip(params, tensors)):
        assert p.grad.dtype == np.dtype(dtype)
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), **TOLERANCE[dtype], err_msg=f"gradient {i}")


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("clip_value", [0.5, 3.0])
def test_clip_by_value_matches_torch(dtype, clip_value):
    params, tensors = pair(dtype, scale=1.0)
    clip_grad_value(params, clip_value)
    torch.nn.utils.clip_grad_value_(tensors, clip_value)
    assert_grads_match(params, tensors, dtype)
    assert max(float(np.abs(p.grad.numpy()).max()) for p in params) <= clip_value


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("scale,max_norm", [(1.0, 1.0), (10.0, 5.0), (0.01, 1.0)], ids=["clipped", "large", "kept"])
def test_clip_by_norm_matches_torch(dtype, scale, max_norm):
    params, tensors = pair(dtype, scale)
    total = clip_grad_norm(params, max_norm)
    total_torch = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert total == pytest.approx(float(total_torch), rel=TOLERANCE[dtype]["rtol"])
    assert_grads_match(params, tensors, dtype)
    after = math.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum()) for p in params))
    assert after == pytest.approx(min(total, max_norm), rel=1e-5)


def test_clip_by_norm_by_hand():
    a, b = lm.Parameter(np.zeros(2), dtype="float64"), lm.Parameter(np.zeros(1), dtype="float64")
    a.grad, b.grad = lm.tensor([3.0, 0.0], dtype="float64"), lm.tensor([4.0], dtype="float64")
    assert clip_grad_norm([a, b], 1.0) == 5.0                     # √(3² + 4²), over both parameters
    np.testing.assert_allclose(a.grad.numpy(), [3 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(b.grad.numpy(), [4 / (5 + 1e-6)], rtol=1e-15)


def test_gradients_under_the_limit_are_left_as_they_are():
    params, _ = pair("float32", scale=0.01)
    before = [p.grad for p in params]
    clip_grad_norm(params, 10.0)
    assert all(p.grad is g for p, g in zip(params, before))


@pytest.mark.parametrize("clip", [lambda ps: clip_grad_value(ps, 0.1), lambda ps: clip_grad_norm(ps, 0.1)],
                         ids=["value", "norm"])
def test_clipping_never_writes_into_the_old_gradient(clip):
    shared = np.random.default_rng(1).standard_normal(6)
    p = lm.Parameter(np.zeros(6), dtype="float64")
    p.grad = lm.Tensor._wrap(shared, p.backend)          # a gradient array another tensor also holds
    kept = shared.copy()
    clip([p])
    np.testing.assert_array_equal(shared, kept)
    assert np.abs(p.grad.numpy()).max() <= 0.1 + 1e-12


def test_parameters_without_gradients_and_a_single_tensor():
    with_grad, without = lm.Parameter(np.zeros(2), dtype="float64"), lm.Parameter(np.zeros(2), dtype="float64")
    with_grad.grad = lm.tensor([6.0, 8.0], dtype="float64")
    assert clip_grad_norm([with_grad, without], 5.0) == 10.0
    assert without.grad is None
    clip_grad_value(with_grad, 1.0)                          # a lone tensor, as torch accepts
    np.testing.assert_allclose(with_grad.grad.numpy(), [1.0, 1.0])
    assert clip_grad_norm([without], 1.0) == 0.0


@pytest.mark.filterwarnings("ignore:invalid value encountered")       # inf·0 in the scaling, as in torch
def test_a_non_finite_gradient_shows_in_the_norm_and_the_gradients():
    params, tensors = pair("float64", scale=1.0)
    params[0].grad = lm.tensor(np.where(np.arange(12).reshape(4, 3) == 0, np.inf, 1.0), dtype="float64")
    tensors[0].grad = torch.from_numpy(params[0].grad.numpy().copy())
    assert clip_grad_norm(params, 1.0) == float(torch.nn.utils.clip_grad_norm_(tensors, 1.0)) == math.inf
    for p, t in zip(params, tensors):
        np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())


@pytest.mark.parametrize("call,message", [
    (lambda ps: clip_grad_value(ps, 0.0), r"clip_grad_value: clip_value must lie in \(0, ∞\), got 0.0"),
    (lambda ps: clip_grad_value(ps, "1"), "clip_grad_value: clip_value must be a number"),
    (lambda ps: clip_grad_norm(ps, -1.0), r"clip_grad_norm: max_norm must lie in \(0, ∞\), got -1.0"),
    (lambda ps: clip_grad_norm(ps, math.nan), "clip_grad_norm: max_norm must lie in"),
])
def test_bad_limits_are_refused(call, message):
    params, _ = pair("float32", scale=1.0)
    with pytest.raises(LaminaError, match=message):
        call(params)
