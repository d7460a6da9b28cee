"""BatchNorm (§2.19): the seed's formulas by hand, parity with torch.nn.BatchNorm1d/2d in training
and eval mode (forward, backward, running averages) in float64 and float32 on both backends,
float64 gradient checks, the CPU kernel against the composite default, state and recipes."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina import checkpoint
from lamina.backend import load_backend
from lamina.ops import call
from lamina.recipes import Recipe
from lamina.tensor import Tensor
from lamina.testing import reference_backend, run_layer_test

BACKENDS = ["cpu", "reference"]
TOLERANCE = {"float64": 1e-10, "float32": 2e-5}


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The CPU backend's fused kernel, or the reference backend, which runs the composite default."""
    return load_backend("cpu") if request.param == "cpu" else reference_backend()


def layer_on(backend, n, dtype, **kwargs):
    with lm.set_default_dtype(dtype):
        layer = lm.nn.BatchNorm(n, **kwargs)
    for p in layer.parameters():
        p.backend, p.data = backend, backend.asarray(p.numpy(), p.dtype)
    return layer


def rand(shape, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * rng.uniform(0.5, 2.0, shape[-1]) + shift


# ---- the seed's formulas, by hand ------------------------------------------------------------------------
def test_training_forward_by_hand():
    """x = [[1, 2], [3, 6]]: μ = [2, 4], σ² = [1, 4], z_norm = (x - μ)/√(σ² + ε), out = γ·z_norm + β."""
    layer = layer_on(lm.get_backend(), 2, "float64", epsilon=1e-3)
    layer.gamma.data[:] = [2.0, 1.0]
    layer.beta.data[:] = [0.5, 0.0]
    out = layer(lm.tensor(np.array([[1.0, 2.0], [3.0, 6.0]]), dtype="float64")).numpy()
    z_norm = np.array([[-1.0 / np.sqrt(1.001), -2.0 / np.sqrt(4.001)], [1.0 / np.sqrt(1.001), 2.0 / np.sqrt(4.001)]])
    np.testing.assert_allclose(out, z_norm * [2.0, 1.0] + [0.5, 0.0], rtol=1e-14)
    # running = 0.9·running + 0.1·batch, the variance unbiased: σ²·N/(N-1) = [2, 8]
    np.testing.assert_allclose(layer.running_mean.numpy(), [0.2, 0.4], rtol=1e-14)
    np.testing.assert_allclose(layer.running_var.numpy(), [0.9 + 0.2, 0.9 + 0.8], rtol=1e-14)


def test_eval_uses_the_running_averages_by_hand():
    layer = layer_on(lm.get_backend(), 2, "float64", epsilon=1e-5).eval()
    layer.running_mean.data[:] = [1.0, -1.0]
    layer.running_var.data[:] = [4.0, 0.25]
    layer.gamma.data[:] = [3.0, 1.0]
    x = np.array([[1.0, 0.0], [5.0, -1.0], [-3.0, 2.0]])
    out = layer(lm.tensor(x, dtype="float64")).numpy()
    np.testing.assert_allclose(out, (x - [1.0, -1.0]) / np.sqrt([4.0 + 1e-5, 0.25 + 1e-5]) * [3.0, 1.0], rtol=1e-14)
    np.testing.assert_array_equal(layer.running_mean.numpy(), [1.0, -1.0])      # eval leaves them alone


def test_every_feature_has_mean_zero_and_variance_one_when_training():
    x = rand((64, 7), seed=1, shift=5.0)
    with lm.set_default_dtype("float64"):
        out = lm.nn.BatchNorm(7, epsilon=1e-12)(lm.tensor(x)).numpy()
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-9)


# ---- PyTorch parity ----------------------------------------------------------------------------------------
def torch_twin(layer, nhwc, dtype):
    module = (torch.nn.BatchNorm2d if nhwc else torch.nn.BatchNorm1d)(
        layer.num_features, eps=layer.epsilon, momentum=1.0 - layer.momentum).to(getattr(torch, dtype))
    with torch.no_grad():
        for name in ("running_mean", "running_var"):
            getattr(module, name).copy_(torch.from_numpy(getattr(layer, name).numpy()))
        module.weight.copy_(torch.from_numpy(layer.gamma.numpy()))
        module.bias.copy_(torch.from_numpy(layer.beta.numpy()))
    return module


def run_both(layer, module, x, upstream, nhwc, backend):
    """Outputs and gradients (x, γ, β) of one call of each."""
    ours = Tensor(x, requires_grad=True, dtype=x.dtype, backend=backend)
    out = layer(ours)
    out.backward(backend.asarray(upstream, out.dtype))
    theirs = torch.tensor(x, requires_grad=True)
    t_out = module(theirs.permute(0, 3, 1, 2) if nhwc else theirs)
    t_out = t_out.permute(0, 2, 3, 1) if nhwc else t_out
    t_out.backward(torch.from_numpy(upstream))
    return ((out.numpy(), ours.grad.numpy(), layer.gamma.grad.numpy(), layer.beta.grad.numpy()),
            (t_out.detach().numpy(), theirs.grad.numpy(), module.weight.grad.numpy(), module.bias.grad.numpy()))


def assert_close(ours, theirs, dtype, what):
    for name, a, b in zip(("output", "dx", "dgamma", "dbeta", "running_mean", "running_var"), ours, theirs):
        assert a.dtype == np.dtype(dtype), f"{what}: {name} is {a.dtype}"
        scale = max(1.0, float(np.max(np.abs(b))))
        np.testing.assert_allclose(a, b, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale,
                                   err_msg=f"{what}: {name}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6), (3, 1, 1, 2)], ids=["dense", "nhwc", "nhwc-1x1"])
def test_parity_with_torch_train_then_eval(backend, dtype, shape):
    nhwc = len(shape) == 4
    c = shape[-1]
    layer = layer_on(backend, c, dtype, momentum=0.8)
    rng = np.random.default_rng(3)
    layer.gamma.data = backend.asarray(rng.uniform(0.5, 1.5, c), dtype)
    layer.beta.data = backend.asarray(rng.standard_normal(c), dtype)
    module = torch_twin(layer, nhwc, dtype)
    for step in range(3):               # three training steps: the running averages follow each batch
        layer.zero_grad()
        module.zero_grad()
        x = rand(shape, seed=step, shift=2.0 * step).astype(dtype)
        upstream = np.random.default_rng(10 + step).standard_normal(shape).astype(dtype)
        ours, theirs = run_both(layer, module, x, upstream, nhwc, backend)
        stats = [layer.running_mean.numpy(), layer.running_var.numpy()]
        assert_close(list(ours) + stats, list(theirs) + [module.running_mean.numpy(), module.running_var.numpy()],
                     dtype, f"training step {step}")

    layer.eval()
    module.eval()
    layer.zero_grad()
    module.zero_grad()
    x = rand(shape, seed=7, shift=1.0).astype(dtype)
    upstream = np.random.default_rng(17).standard_normal(shape).astype(dtype)
    ours, theirs = run_both(layer, module, x, upstream, nhwc, backend)
    assert_close(ours, theirs, dtype, "eval")


def test_momentum_is_one_minus_torchs():
    layer = lm.nn.BatchNorm(4, momentum=0.6)
    module = torch.nn.BatchNorm1d(4, momentum=0.4)
    for seed in range(4):
        x = rand((8, 4), seed=seed, shift=3.0).astype(np.float32)
        layer(lm.tensor(x))
        module(torch.from_numpy(x))
    np.testing.assert_allclose(layer.running_mean.numpy(), module.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(layer.running_var.numpy(), module.running_var.numpy(), rtol=1e-5)


# ---- gradient checks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("shape,train", [((6, 3), True), ((2, 3, 2, 4), True), ((5, 3), False)],
                         ids=["dense-train", "nhwc-train", "dense-eval"])
def test_run_layer_test(backend_name, shape, train):
    def build():
        layer = lm.nn.BatchNorm(shape[-1], momentum=0.5)
        layer.gamma.data = layer.gamma.backend.asarray(np.linspace(0.5, 1.5, shape[-1]), layer.gamma.dtype)
        layer.running_var.data = layer.gamma.backend.asarray(np.linspace(0.5, 2.0, shape[-1]), layer.gamma.dtype)
        return layer.train(train)

    factory = build if backend_name == "cpu" else (lambda: _on_reference(build()))
    report = run_layer_test(factory, shape, expected_output_shape=shape)
    assert report.gradcheck.relative_difference < 1e-7
    assert report.num_parameters == 4 * shape[-1]


def _on_reference(layer):
    reference = reference_backend()
    for p in layer.parameters():
        p.backend, p.data = reference, reference.asarray(p.numpy(), p.dtype)
    return layer


def test_gradcheck_of_a_model_with_batchnorm():
    with lm.set_default_dtype("float64"):
        lm.manual_seed(0)
        model = lm.nn.Sequential(lm.nn.Dense(4, 6, use_bias=False), lm.nn.BatchNorm(6), lm.nn.ReLU(),
                                 lm.nn.Dense(6, 3))
        x = lm.tensor(np.random.default_rng(0).standard_normal((10, 4)))
        y = lm.tensor(np.arange(10) % 3)
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        result = lm.gradcheck(lambda: lm.F.softmax_cross_entropy(model(x), y), params)
    assert result.passed, str(result)


# ---- the CPU kernel against the composite default ------------------------------------------------------------
def kernel_and_default(x, train, needs=(True,) * 5):
    """(out, grads) from the CPU kernel called directly, and from the default on the reference backend."""
    cpu, reference = load_backend("cpu"), reference_backend()
    c = x.shape[-1]
    rng = np.random.default_rng(1)
    others = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 2, c)]
    others = [a.astype(x.dtype) for a in others]
    upstream = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype)
    attrs = dict(training=train, momentum=0.9, epsilon=1e-5, axis=-1)

    stats = [others[2].copy(), others[3].copy()]
    result = cpu.kernels["batch_norm"](x, *others[:2], *stats, needs_input_grad=needs, **attrs)
    assert result is not NotImplemented, "the CPU kernel declined"
    out, backprop = result
    got = [out, *backprop(upstream), *stats]

    tensors = [Tensor(a.astype(np.float64), requires_grad=True, dtype=np.float64, backend=reference)
               for a in [x] + others]
    want_out = call("batch_norm", *tensors, **attrs)
    want_out.backward(upstream.astype(np.float64))
    want = [want_out.numpy()] + [t.grad.numpy() if t.grad is not None else None for t in tensors]
    return got, want + [tensors[3].numpy(), tensors[4].numpy()]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,shift", [((3, 1), 0.0), ((1031, 1033), 0.0), ((16, 16, 32, 130), 0.0),
                                         ((50, 7), 1e3)], ids=["tiny", "threads", "nhwc-threads", "large-mean"])
def test_kernel_matches_the_default(dtype, train, shape, shift):
    x = (np.random.default_rng(0).standard_normal(shape) * 0.5 + shift).astype(dtype)
    got, want = kernel_and_default(x, train)
    tolerance = 1e-9 if dtype == np.float64 else 2e-4
    for k, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), f"output {k}: one of kernel/default gives no gradient"
        if a is not None:
            assert a.dtype == dtype
            scale = max(1.0, float(np.max(np.abs(b))))
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * scale, err_msg=f"output {k}")


def test_kernel_takes_strided_inputs_and_skips_unneeded_gradients():
    x = np.random.default_rng(0).standard_normal((6, 9)).T        # (9, 6), not C-contiguous
    got, want = kernel_and_default(x, True, needs=(False, True, True, False, False))
    assert got[1] is None and got[4] is None and got[5] is None
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-10)
    got, want = kernel_and_default(x, False, needs=(True, False, False, False, False))    # a frozen BatchNorm
    assert got[2:6] == [None] * 4
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_kernel_declines_what_it_does_not_handle():
    cpu = load_backend("cpu")
    x, c = np.ones((4, 3, 2)), np.ones(3)
    attrs = dict(training=True, momentum=0.9, epsilon=1e-5)
    assert cpu.kernels["batch_norm"](x, c, c, c, c, axis=1, **attrs) is NotImplemented
    assert cpu.kernels["batch_norm"](x.astype(np.float16), *[c.astype(np.float16)] * 4, axis=-1,
                                     **attrs) is NotImplemented
    # the op still runs them, through the default
    layer = lm.nn.BatchNorm(3, axis=1)
    out = layer(lm.tensor(np.random.default_rng(0).standard_normal((4, 3, 2)))).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0.0, atol=1e-6)


# ---- errors -----------------------------------------------------------------------------------------------
def test_errors_name_the_layer_and_the_fix():
    layer = lm.nn.BatchNorm(4, name="bn1")
    with pytest.raises(lm.ShapeError, match=r"BatchNorm layer 'bn1': expected an input with 4 features .* \(8, 3\)"):
        layer(lm.tensor(np.ones((8, 3))))
    with pytest.raises(lm.ShapeError, match="more than one value per feature"):
        layer(lm.tensor(np.ones((1, 4))))
    assert layer.eval()(lm.tensor(np.ones((1, 4)))).shape == (1, 4)     # one example is fine in eval mode
    with pytest.raises(lm.LaminaError, match="momentum"):
        lm.nn.BatchNorm(4, momentum=1.5)
    with pytest.raises(lm.ShapeError, match="positive"):
        lm.nn.BatchNorm(0)
    x = lm.tensor(np.ones((3, 2)), dtype="float64")
    g = lm.tensor(np.ones(2), dtype="float32")
    with pytest.raises(lm.OpError, match="'gamma' has dtype float32 but x has float64"):
        call("batch_norm", x, g, g, g, g, training=True)


# ---- parameters, state, recipes ------------------------------------------------------------------------------
def test_running_averages_are_saved_but_never_trained(tmp_path):
    layer = lm.nn.BatchNorm(3)
    assert [name for name, p in layer.named_parameters() if p.requires_grad] == ["gamma", "beta"]
    assert list(layer.named_weights()) == []                            # γ, β are not regularized
    layer.freeze()
    layer.unfreeze()
    assert not layer.running_mean.requires_grad and not layer.running_var.requires_grad
    assert layer.gamma.requires_grad

    model = lm.nn.Sequential(lm.nn.Dense(2, 3, use_bias=False), layer)
    model(lm.tensor(np.random.default_rng(0).standard_normal((8, 2))))
    assert sorted(model.state_dict()) == ["0.W", "1.beta", "1.gamma", "1.running_mean", "1.running_var"]
    checkpoint.save(tmp_path, model)
    twin = lm.nn.Sequential(lm.nn.Dense(2, 3, use_bias=False), lm.nn.BatchNorm(3))
    checkpoint.load(tmp_path, twin)
    np.testing.assert_array_equal(twin[1].running_var.numpy(), layer.running_var.numpy())
    x = lm.tensor(np.random.default_rng(1).standard_normal((5, 2)))
    np.testing.assert_array_equal(twin.eval()(x).numpy(), model.eval()(x).numpy())


def test_recipe_takes_the_features_from_the_previous_layer():
    recipe = Recipe.from_dict({
        "data": {"dataset": "digits"}, "loss": {"name": "softmax_cross_entropy"},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "model": {"layers": [{"type": "dense", "n_out": 32, "use_bias": False}, {"type": "batch_norm", "momentum": 0.8},
                             {"type": "relu"}, {"type": "dense", "n_out": 10}]}})
    model = recipe.build_model(64)
    assert isinstance(model[1], lm.nn.BatchNorm)
    assert model[1].num_features == 32 and model[1].momentum == 0.8
    assert model(lm.tensor(np.ones((4, 64)))).shape == (4, 10)
