"""Optimizers (§2.11-2.15): parity with torch.optim over 20 steps on the compiled CPU kernels and on
the composite defaults (the reference backend), hand-computed steps for the forms PyTorch lacks
(the seed's averaged momentum, ε inside the square root), the in-place CPU kernels against the
defaults, state_dict round trips, and the errors for bad hyper-parameters."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina as lm
from lamina.backend import kernel, load_backend
from lamina.errors import CheckpointError, LaminaError
from lamina.ops import call
from lamina.reference import ReferenceBackend
from lamina.registry import get
from lamina.tensor import Tensor
from lamina.testing import check_op

SHAPES = [(5, 3), (3,), (2, 2, 2)]
STEPS = 20
#: name -> (Lamina optimizer, the torch.optim optimizer that moves identically)
PAIRS = {
    "sgd": (lambda p: lm.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "momentum_simplified": (lambda p: lm.optim.Momentum(p, lr=0.05, beta=0.8, dampening="simplified"),
                            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8)),
    # the seed's average v = β·v + (1-β)·dθ at α moves as torch's v = β·v + dθ at α·(1-β)
    "momentum_ewa": (lambda p: lm.optim.Momentum(p, lr=0.5, beta=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.5 * (1 - 0.9), momentum=0.9)),
    "rmsprop": (lambda p: lm.optim.RMSprop(p, lr=0.01, beta=0.95, epsilon=1e-6),
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-6)),
    "rmsprop_defaults": (lambda p: lm.optim.RMSprop(p), lambda p: torch.optim.RMSprop(p, lr=0.001, alpha=0.9)),
    "adam": (lambda p: lm.optim.Adam(p, lr=0.05, beta1=0.8, beta2=0.99, epsilon=1e-7),
             lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-7)),
    "adam_defaults": (lambda p: lm.optim.Adam(p), lambda p: torch.optim.Adam(p)),
}
#: backend -> dtype -> tolerance; "reference" runs the ops' composite defaults, "cpu" the compiled kernels
TOLERANCES = {("cpu", "float64"): dict(rtol=1e-11, atol=1e-13), ("reference", "float64"): dict(rtol=1e-11, atol=1e-13),
              ("cpu", "float32"): dict(rtol=1e-5, atol=1e-6)}


def backend_named(name):
    return ReferenceBackend(seed=0) if name == "reference" else load_backend(name)


class Problem:
    """Parameters with a gradient that depends on where they are, dθ = c·(θ - target) + noise_t,
    so a wrong step changes every later gradient."""

    def __init__(self, dtype, seed=0):
        rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.target = [rng.standard_normal(s) for s in SHAPES]
        self.curvature = [rng.uniform(0.5, 2.0, s) for s in SHAPES]
        self.noise = [[rng.standard_normal(s) * 0.1 for s in SHAPES] for _ in range(STEPS)]

    def grads(self, values, step):
        return [(c * (v - t) + n).astype(self.dtype)
                for v, t, c, n in zip(values, self.target, self.curvature, self.noise[step])]


def run_lamina(make, problem, backend, steps=STEPS, params=None, optimizer=None, first_step=0):
    params = params or [lm.Parameter(v, dtype=v.dtype, backend=backend) for v in problem.start]
    optimizer = optimizer or make(params)
    for step in range(first_step, first_step + steps):
        optimizer.zero_grad()
        for p, g in zip(params, problem.grads([p.numpy() for p in params], step)):
            p.grad = Tensor(g, dtype=g.dtype, backend=backend)
        optimizer.step()
    return params, optimizer


def run_torch(make, problem):
    params = [torch.tensor(v, requires_grad=True) for v in problem.start]
    optimizer = make(params)
    for step in range(STEPS):
        optimizer.zero_grad()
        for p, g in zip(params, problem.grads([p.detach().numpy() for p in params], step)):
            p.grad = torch.from_numpy(g)
        optimizer.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("backend,dtype", list(TOLERANCES), ids=["-".join(k) for k in TOLERANCES])
@pytest.mark.parametrize("name", list(PAIRS))
def test_matches_torch_over_20_steps(name, backend, dtype):
    make_lamina, make_torch = PAIRS[name]
    problem = Problem(np.dtype(dtype))
    params, optimizer = run_lamina(make_lamina, problem, backend_named(backend))
    want = run_torch(make_torch, problem)
    assert optimizer.step_count == STEPS
    for i, (p, w) in enumerate(zip(params, want)):
        assert p.dtype == w.dtype
        assert not np.allclose(w, problem.start[i])                 # it did move
        np.testing.assert_allclose(p.numpy(), w, **TOLERANCES[backend, dtype], err_msg=f"{name}: parameter {i}")


def test_torch_dampening_beta_is_not_the_averaged_form():
    """torch's SGD(dampening=β) starts its average at dθ₁, the seed's at (1-β)·dθ₁: they differ from step 1."""
    problem = Problem(np.dtype("float64"))
    ours = run_lamina(lambda p: lm.optim.Momentum(p, lr=0.1, beta=0.9), problem, load_backend("cpu"))[0]
    theirs = run_torch(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.9), problem)
    assert not np.allclose(ours[0].numpy(), theirs[0], rtol=1e-3)


# ---- hand-computed steps (the seed's forms) ------------------------------------------------------------
def steps_of(optimizer_factory, start, grads, backend="cpu"):
    """The parameter after each step, fed the given gradients."""
    backend = backend_named(backend)
    p = lm.Parameter(np.array(start), dtype=np.float64, backend=backend)
    optimizer = optimizer_factory([p])
    trajectory = []
    for g in grads:
        p.grad = Tensor(np.array(g), dtype=np.float64, backend=backend)
        optimizer.step()
        trajectory.append(p.numpy().copy())
    return trajectory


BOTH_BACKENDS = pytest.mark.parametrize("backend", ["cpu", "reference"])


@BOTH_BACKENDS
def test_momentum_ewa_by_hand(backend):
    # v1 = 0.1·(1, 2) = (0.1, 0.2); θ1 = (1, -2) - 0.1·v1 = (0.99, -2.02)
    # v2 = 0.9·v1 + 0.1·(0.5, -1) = (0.14, 0.08); θ2 = θ1 - 0.1·v2 = (0.976, -2.028)
    got = steps_of(lambda p: lm.optim.Momentum(p, lr=0.1, beta=0.9, dampening="ewa"), [1.0, -2.0],
                   [[1.0, 2.0], [0.5, -1.0]], backend)
    np.testing.assert_allclose(got, [[0.99, -2.02], [0.976, -2.028]], rtol=1e-14)


@BOTH_BACKENDS
def test_momentum_simplified_by_hand(backend):
    # v1 = (1, 2); θ1 = (0.9, -2.2); v2 = 0.9·v1 + (0.5, -1) = (1.4, 0.8); θ2 = (0.76, -2.28)
    got = steps_of(lambda p: lm.optim.Momentum(p, lr=0.1, beta=0.9, dampening="simplified"), [1.0, -2.0],
                   [[1.0, 2.0], [0.5, -1.0]], backend)
    np.testing.assert_allclose(got, [[0.9, -2.2], [0.76, -2.28]], rtol=1e-14)


@BOTH_BACKENDS
def test_rmsprop_epsilon_inside_and_outside_by_hand(backend):
    # s1 = 0.1·0.03² = 9e-5. Inside: θ1 = 1 - 0.01·0.03/√(9e-5 + 1e-5) = 1 - 0.01·3 = 0.97.
    # Outside: θ1 = 1 - 0.01·0.03/(√9e-5 + 1e-5). A zero gradient leaves its element where it is.
    def make(inside):
        return lambda p: lm.optim.RMSprop(p, lr=0.01, beta=0.9, epsilon=1e-5, epsilon_inside_sqrt=inside)

    (inside,) = steps_of(make(True), [1.0, 2.0], [[0.03, 0.0]], backend)
    (outside,) = steps_of(make(False), [1.0, 2.0], [[0.03, 0.0]], backend)
    np.testing.assert_allclose(inside, [0.97, 2.0], rtol=1e-14)
    np.testing.assert_allclose(outside, [1 - 0.01 * 0.03 / (math.sqrt(9e-5) + 1e-5), 2.0], rtol=1e-14)


@BOTH_BACKENDS
def test_adam_epsilon_inside_sqrt_by_hand(backend):
    # t = 1: v̂ = dθ = 0.3, ŝ = dθ² = 0.09; θ1 = 1 - 0.1·0.3/√(0.09 + 0.07) = 1 - 0.1·0.3/0.4 = 0.925.
    # t = 2, dθ = -0.1: v = 0.9·0.03 - 0.01 = 0.017, v̂ = 0.017/(1 - 0.81);
    # s = 0.999·9e-5 + 0.001·0.01 = 9.991e-5, ŝ = 9.991e-5/(1 - 0.999²) = 9.991e-5/0.001999;
    # θ2 = 0.925 - 0.1·v̂/√(ŝ + 0.07).
    got = steps_of(lambda p: lm.optim.Adam(p, lr=0.1, epsilon=0.07, epsilon_inside_sqrt=True), [1.0],
                   [[0.3], [-0.1]], backend)
    np.testing.assert_allclose(got[0], [0.925], rtol=1e-14)
    np.testing.assert_allclose(got[1], [0.925 - 0.1 * (0.017 / 0.19) / math.sqrt(9.991e-5 / 0.001999 + 0.07)],
                               rtol=1e-12)
    (outside,) = steps_of(lambda p: lm.optim.Adam(p, lr=0.1, epsilon=0.07), [1.0], [[0.3]], backend)
    np.testing.assert_allclose(outside, [1 - 0.1 * 0.3 / (0.3 + 0.07)], rtol=1e-14)


# ---- the compiled CPU kernels against the composite defaults --------------------------------------------
UPDATES = {
    "momentum_update": (1, [{"lr": 0.1, "beta": 0.9, "dampening": "ewa"},
                            {"lr": 0.1, "beta": 0.7, "dampening": "simplified"}]),
    "rmsprop_update": (1, [{"lr": 0.01, "beta": 0.9, "epsilon": 1e-4, "epsilon_inside_sqrt": inside}
                           for inside in (False, True)]),
    "adam_update": (2, [{"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-4, "step": 4,
                         "epsilon_inside_sqrt": inside} for inside in (False, True)]),
}
LARGE = (1031, 1033)   # above the kernels' PARALLEL_MIN (2^20 elements): runs on OpenMP threads


def update_arrays(n_state, shape, dtype):
    rng = np.random.default_rng(7)
    param, grad = rng.standard_normal(shape), rng.standard_normal(shape) * 0.01
    state = [rng.standard_normal(shape) * 0.01] * (n_state - 1) + [np.abs(rng.standard_normal(shape)) * 1e-4]
    return [a.astype(dtype) for a in (param, grad, *state)]


def run_update(backend, op, arrays, attrs):
    return [t.numpy() for t in call(op, *(Tensor._wrap(a, backend) for a in arrays), **attrs)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(1,), (4, 3), LARGE], ids=str)
@pytest.mark.parametrize("op", list(UPDATES))
def test_cpu_update_kernels_work_in_place_and_match_the_defaults(op, shape, dtype):
    n_state, attr_sets = UPDATES[op]
    for attrs in attr_sets:
        arrays = update_arrays(n_state, shape, dtype)
        want = run_update(ReferenceBackend(), op, [a.copy() for a in arrays], attrs)
        got = run_update(load_backend("cpu"), op, arrays, attrs)
        owned = [arrays[0]] + arrays[2:]
        for k, (out, array, expected) in enumerate(zip(got, owned, want)):
            assert out is array, f"{op} {attrs}: output {k} is not the caller's array updated in place"
            rtol = 1e-12 if dtype == "float64" else 2e-6
            np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max(),
                                       err_msg=f"{op} {attrs}: output {k}")


@pytest.mark.parametrize("op", list(UPDATES))
def test_cpu_update_kernels_leave_the_gradient_alone_and_take_strided_ones(op):
    n_state, attr_sets = UPDATES[op]
    arrays = update_arrays(n_state, (4, 3), "float64")
    arrays[1] = np.ascontiguousarray(arrays[1].T).T          # a transposed view, as autograd may hand over
    grad_before = arrays[1].copy()
    want = run_update(ReferenceBackend(), op, [a.copy() for a in arrays], attr_sets[-1])
    got = run_update(load_backend("cpu"), op, arrays, attr_sets[-1])
    np.testing.assert_array_equal(arrays[1], grad_before)
    for out, expected in zip(got, want):
        np.testing.assert_allclose(out, expected, rtol=1e-12)


# ---- the conformance suite catches kernels that ignore the new attributes ----------------------------------
class IgnoresOptions(ReferenceBackend):
    name = "ignores_options"

    @kernel("momentum_update")
    def momentum_update(self, param, grad, v, *, lr, beta, dampening):         # always the averaged form
        v = beta * v + (1 - beta) * grad
        return (param - lr * v, v), None

    @kernel("rmsprop_update")
    def rmsprop_update(self, param, grad, s, *, lr, beta, epsilon, epsilon_inside_sqrt=False):  # ε always outside
        s = beta * s + (1 - beta) * grad * grad
        return (param - lr * grad / (np.sqrt(s) + epsilon), s), None

    @kernel("adam_update")
    def adam_update(self, param, grad, m, v, *, lr, beta1, beta2, epsilon, step, epsilon_inside_sqrt=False):
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        return (param - lr * m_hat / (np.sqrt(v_hat) + epsilon), m, v), None


@pytest.mark.parametrize("op,sample", [("momentum_update", 1), ("rmsprop_update", 1), ("adam_update", 2)])
def test_conformance_samples_catch_an_ignored_option(op, sample):
    with pytest.raises(AssertionError, match=fr"op '{op}', sample {sample} .*output 0 differs"):
        check_op(IgnoresOptions(), op, "float32")


# ---- state_dict round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PAIRS))
def test_state_dict_round_trip_continues_the_same_run(name):
    """5 steps, save, load into a fresh optimizer on copies of the parameters, 5 more: the same as 10 at once."""
    make, _ = PAIRS[name]
    problem = Problem(np.dtype("float64"))
    cpu = load_backend("cpu")
    straight, _ = run_lamina(make, problem, cpu, steps=10)
    params, optimizer = run_lamina(make, problem, cpu, steps=5)
    arrays, scalars = optimizer.state_dict()
    assert set(arrays) == {f"{i}.{k}" for i in range(len(SHAPES)) for k in optimizer.state_names}
    resumed = [lm.Parameter(p.numpy(), dtype=p.dtype, backend=cpu) for p in params]
    fresh = make(resumed)
    fresh.load_state_dict(arrays, scalars)
    assert fresh.step_count == 5
    run_lamina(make, problem, cpu, steps=5, params=resumed, optimizer=fresh, first_step=5)
    for p, q in zip(resumed, straight):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_state_of_another_optimizer_is_refused():
    p = [lm.Parameter(np.ones(3))]
    rmsprop = lm.optim.RMSprop(p)
    p[0].grad = lm.tensor(np.ones(3))
    rmsprop.step()
    adam = lm.optim.Adam(p)
    with pytest.raises(CheckpointError, match="Adam: the checkpoint holds the state of optimizer 'rmsprop'"):
        adam.load_state_dict(*rmsprop.state_dict())
    arrays, scalars = rmsprop.state_dict()
    with pytest.raises(CheckpointError, match="Adam: the optimizer state of parameter 0 lacks v"):
        adam.load_state_dict(arrays, {**scalars, "name": "adam"})
    assert adam.state == {} and adam.step_count == 0                 # a refused load changes nothing


# ---- registry and errors ------------------------------------------------------------------------------
def test_optimizers_are_registered_by_name():
    for name, cls in {"sgd": lm.optim.SGD, "momentum": lm.optim.Momentum, "rmsprop": lm.optim.RMSprop,
                      "adam": lm.optim.Adam}.items():
        assert get("optimizers", name) is cls
    momentum = get("optimizers", "momentum")([lm.Parameter(np.ones(2))], lr=0.1, dampening="simplified")
    assert momentum.hyperparameters() == {"lr": 0.1, "beta": 0.9, "dampening": "simplified"}


@pytest.mark.parametrize("make,message", [
    (lambda p: lm.optim.SGD(p, lr=0), r"SGD: lr must lie in \(0, ∞\), got 0.0"),
    (lambda p: lm.optim.Adam(p, lr="fast"), "Adam: lr must be a number, got 'fast'"),
    (lambda p: lm.optim.Adam(p, lr=math.inf), r"Adam: lr must lie in \(0, ∞\), got inf"),
    (lambda p: lm.optim.Adam(p, beta2=1.0), r"Adam: beta2 must lie in \[0, 1\), got 1.0"),
    (lambda p: lm.optim.Adam(p, epsilon=math.nan), "Adam: epsilon must lie in .*got nan"),
    (lambda p: lm.optim.Adam(p, epsilon_inside_sqrt="yes"), "Adam: epsilon_inside_sqrt must be true or false"),
    (lambda p: lm.optim.Momentum(p, beta=-0.1), r"Momentum: beta must lie in \[0, 1\), got -0.1"),
    (lambda p: lm.optim.Momentum(p, dampening="nesterov"),
     "Momentum: dampening must be one of 'ewa', 'simplified', got 'nesterov'"),
    (lambda p: lm.optim.RMSprop(p, beta=1.5), r"RMSprop: beta must lie in \[0, 1\), got 1.5"),
    (lambda p: lm.optim.RMSprop(p, epsilon=-1e-8), r"RMSprop: epsilon must lie in \[0, ∞\), got -1e-08"),
    (lambda p: lm.optim.RMSprop(p, epsilon_inside_sqrt=1), "RMSprop: epsilon_inside_sqrt must be true or false"),
    (lambda p: lm.optim.RMSprop([]), "RMSprop: got an empty parameter list"),
])
def test_bad_hyperparameters_name_the_optimizer_and_argument(make, message):
    with pytest.raises(LaminaError, match=message):
        make([lm.Parameter(np.ones(2))])
