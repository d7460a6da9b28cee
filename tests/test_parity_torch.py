"""Forward and backward parity with PyTorch CPU: functional API, arithmetic, reductions, layers and
optimizers, in float64 (1e-6 relative) and float32 (1e-4 relative)."""
import numpy as np
import pytest

import lamina as lm

import torch
TF = torch.nn.functional

DTYPES = {"float64": (np.float64, torch.float64, 1e-6, 1e-10), "float32": (np.float32, torch.float32, 1e-4, 1e-5)}


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    with lm.set_default_dtype(request.param):
        yield request.param


def assert_close(got, want, dtype, what=""):
    """|got - want| <= atol·max(1, max|want|) + rtol·|want| (rtol 1e-6 in float64, 1e-4 in float32)."""
    _, _, rtol, atol = DTYPES[dtype]
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def check_parity(lm_fn, torch_fn, arrays, dtype, seed=0, differentiable=None):
    """Run both on the same values; compare outputs and the gradients of every floating input
    under a random upstream gradient."""
    np_dtype, torch_dtype, _, _ = DTYPES[dtype]
    differentiable = differentiable if differentiable is not None else [a.dtype.kind == "f" for a in arrays]
    lm_inputs, torch_inputs = [], []
    for array, diff in zip(arrays, differentiable):
        if array.dtype.kind == "f":
            array = array.astype(np_dtype)
        lm_inputs.append(lm.tensor(array, requires_grad=diff, dtype=array.dtype))
        torch_inputs.append(torch.tensor(array, requires_grad=diff))
    lm_out, torch_out = lm_fn(*lm_inputs), torch_fn(*torch_inputs)
    assert lm_out.dtype == np_dtype, f"output dtype {lm_out.dtype}, expected {dtype}"
    assert_close(lm_out.numpy(), torch_out.detach().numpy(), dtype, "forward")
    G = np.random.default_rng(seed).standard_normal(tuple(torch_out.shape)).astype(np_dtype)
    (lm_out * lm.tensor(G, dtype=np_dtype)).sum().backward()
    (torch_out * torch.tensor(G)).sum().backward()
    for i, (a, t, diff) in enumerate(zip(lm_inputs, torch_inputs, differentiable)):
        if diff:
            assert a.grad is not None, f"input {i} got no gradient"
            assert a.grad.dtype == np_dtype
            assert_close(a.grad.numpy(), t.grad.numpy(), dtype, f"gradient of input {i}")


def randn(*shape, seed=0, away_from_zero=False):
    x = np.random.default_rng(seed + 7 * len(shape)).standard_normal(shape)
    if away_from_zero:
        x[np.abs(x) < 0.05] += 0.1
    return x


# ---- lamina.functional ---------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_shape", [(5, 4), (2, 5, 4)])
def test_dense(dtype, with_bias, x_shape):
    x, W, b = randn(*x_shape), randn(4, 3, seed=1), randn(3, seed=2)
    if with_bias:
        check_parity(lm.F.dense, lambda x, W, b: x @ W + b, [x, W, b], dtype)
        check_parity(lm.F.dense, lambda x, W, b: TF.linear(x, W.T, b), [x, W, b], dtype)
    else:
        check_parity(lm.F.dense, lambda x, W: TF.linear(x, W.T), [x, W], dtype)


@pytest.mark.parametrize("name, torch_fn", [("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("relu", torch.relu),
                                            ("leaky_relu", TF.leaky_relu)])
def test_activations(dtype, name, torch_fn):
    x = randn(4, 6, away_from_zero=True) * 3
    check_parity(getattr(lm.F, name), torch_fn, [x], dtype)


def test_leaky_relu_default_alpha_is_001_and_custom_alpha(dtype):
    x = randn(4, 6, away_from_zero=True)
    check_parity(lm.F.leaky_relu, lambda t: TF.leaky_relu(t, negative_slope=0.01), [x], dtype)
    check_parity(lambda t: lm.F.leaky_relu(t, alpha=0.2), lambda t: TF.leaky_relu(t, negative_slope=0.2), [x],
                 dtype)
    out = lm.F.leaky_relu(lm.tensor([-2.0, 3.0])).numpy()
    np.testing.assert_allclose(out, [-0.02, 3.0], rtol=1e-6)


def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = np.array([-800.0, -50.0, 0.0, 50.0, 800.0])
    check_parity(lm.F.sigmoid, torch.sigmoid, [x], dtype)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((4, 6), 0), ((2, 3, 5), 1), ((2, 3, 5), -1)])
def test_softmax_and_log_softmax(dtype, fn, shape, axis):
    x = randn(*shape) * 4
    check_parity(lambda t: getattr(lm.F, fn)(t, axis=axis), lambda t: getattr(TF, fn)(t, dim=axis), [x], dtype)


def test_softmax_is_stable_for_large_logits(dtype):
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, 0.0, 5.0]])
    check_parity(lm.F.softmax, lambda t: TF.softmax(t, dim=-1), [x], dtype)
    check_parity(lm.F.log_softmax, lambda t: TF.log_softmax(t, dim=-1), [x], dtype)


def test_binary_cross_entropy(dtype):
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.02, 0.98, (6, 3))
    y = (rng.uniform(size=(6, 3)) > 0.5).astype(np.float64)
    check_parity(lm.F.binary_cross_entropy, TF.binary_cross_entropy, [probs, y], dtype, differentiable=[True, False])
    soft = rng.uniform(size=(6, 1))
    check_parity(lm.F.binary_cross_entropy, TF.binary_cross_entropy, [probs[:, :1], soft], dtype,
                 differentiable=[True, False])


def test_softmax_cross_entropy_with_integer_labels(dtype):
    logits = randn(8, 5) * 2
    labels = np.random.default_rng(4).integers(0, 5, 8)
    check_parity(lm.F.softmax_cross_entropy, TF.cross_entropy, [logits, labels], dtype)


def test_softmax_cross_entropy_with_one_hot_and_soft_labels(dtype):
    rng = np.random.default_rng(5)
    logits = randn(8, 5) * 2
    one_hot = np.eye(5)[rng.integers(0, 5, 8)]
    check_parity(lm.F.softmax_cross_entropy, TF.cross_entropy, [logits, one_hot], dtype)
    soft = rng.dirichlet(np.ones(5), size=8)
    check_parity(lm.F.softmax_cross_entropy, TF.cross_entropy, [logits, soft], dtype)


def test_softmax_cross_entropy_integer_and_one_hot_agree():
    logits = lm.tensor(randn(6, 4), dtype="float64")
    labels = np.array([0, 3, 1, 1, 2, 0])
    a = lm.F.softmax_cross_entropy(logits, lm.tensor(labels)).item()
    b = lm.F.softmax_cross_entropy(logits, lm.tensor(np.eye(4)[labels], dtype="float64")).item()
    assert a == pytest.approx(b, rel=1e-12)


def test_mse(dtype):
    check_parity(lm.F.mse, TF.mse_loss, [randn(5, 3), randn(5, 3, seed=1)], dtype)


# ---- arithmetic, matmul, reductions, shape ops --------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((2, 3), ())])
def test_broadcast_arithmetic(dtype, op, shapes):
    a, b = randn(*shapes[0]), randn(*shapes[1], seed=1)
    if op == "div":
        b = np.abs(b) + 0.5
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y}[op]
    check_parity(fn, fn, [a, b], dtype)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (3, 4, 2))])
def test_matmul(dtype, shapes):
    check_parity(lambda a, b: a @ b, lambda a, b: a @ b, [randn(*shapes[0]), randn(*shapes[1], seed=1)], dtype)


def test_elementwise_math(dtype):
    x = np.abs(randn(3, 4)) + 0.5
    check_parity(lambda t: t.exp(), torch.exp, [randn(3, 4)], dtype)
    check_parity(lambda t: t.log(), torch.log, [x], dtype)
    check_parity(lambda t: t ** 2.5, lambda t: t ** 2.5, [x], dtype)
    check_parity(lambda t: t ** -1.5, lambda t: t ** -1.5, [x], dtype)
    check_parity(lambda t: -t, lambda t: -t, [x], dtype)
    check_parity(lambda t: t.clip(-0.5, 0.7), lambda t: t.clamp(-0.5, 0.7), [randn(4, 5, away_from_zero=True)],
                 dtype)


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(dtype, axis, keepdims):
    x = randn(3, 4, 5)
    dim = tuple(range(3)) if axis is None else axis
    check_parity(lambda t: t.sum(axis=axis, keepdims=keepdims), lambda t: t.sum(dim=dim, keepdim=keepdims), [x],
                 dtype)
    check_parity(lambda t: t.mean(axis=axis, keepdims=keepdims), lambda t: t.mean(dim=dim, keepdim=keepdims), [x],
                 dtype)
    check_parity(lambda t: t.max(axis=axis, keepdims=keepdims), lambda t: t.amax(dim=dim, keepdim=keepdims), [x],
                 dtype)


def test_shape_ops_and_indexing(dtype):
    x = randn(2, 3, 4)
    check_parity(lambda t: t.reshape(4, -1), lambda t: t.reshape(4, -1), [x], dtype)
    check_parity(lambda t: t.transpose(2, 0, 1), lambda t: t.permute(2, 0, 1), [x], dtype)
    check_parity(lambda t: t[1, :, ::2], lambda t: t[1, :, ::2], [x], dtype)
    idx = np.array([0, 2, 2, 1])
    check_parity(lambda t: t[:, idx], lambda t: t[:, torch.tensor(idx)], [x], dtype)


def test_composite_expression(dtype):
    """A small network written with raw ops: tanh(x W1 + b1) W2, softmax, mean of logs."""
    x, W1, b1, W2 = randn(6, 4), randn(4, 5, seed=1), randn(5, seed=2), randn(5, 3, seed=3)

    def lm_fn(x, W1, b1, W2):
        return lm.F.log_softmax((x @ W1 + b1).tanh() @ W2).mean(axis=0)

    def torch_fn(x, W1, b1, W2):
        return TF.log_softmax(torch.tanh(x @ W1 + b1) @ W2, dim=-1).mean(dim=0)

    check_parity(lm_fn, torch_fn, [x, W1, b1, W2], dtype)


# ---- layers -------------------------------------------------------------------------------------------------
def _torch_linear(dense):
    linear = torch.nn.Linear(dense.n_in, dense.n_out, dtype=torch.float64 if dense.W.dtype == np.float64
                             else torch.float32)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(dense.W.numpy().T))     # lamina W is (n_in, n_out)
        linear.bias.copy_(torch.tensor(dense.b.numpy()))
    return linear


def test_dense_layer_matches_torch_linear(dtype):
    np_dtype = DTYPES[dtype][0]
    lm.manual_seed(0)
    layer = lm.nn.Dense(4, 3)
    linear = _torch_linear(layer)
    x_np = randn(5, 4).astype(np_dtype)
    x, xt = lm.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    out, out_t = layer(x), linear(xt)
    assert_close(out.numpy(), out_t.detach().numpy(), dtype, "forward")
    G = randn(5, 3, seed=9).astype(np_dtype)
    (out * lm.tensor(G)).sum().backward()
    (out_t * torch.tensor(G)).sum().backward()
    assert_close(layer.W.grad.numpy(), linear.weight.grad.numpy().T, dtype, "dW")
    assert_close(layer.b.grad.numpy(), linear.bias.grad.numpy(), dtype, "db")
    assert_close(x.grad.numpy(), xt.grad.numpy(), dtype, "dx")


def _mlp_pair(seed=0):
    lm.manual_seed(seed)
    model = lm.nn.Sequential(lm.nn.Dense(4, 5, activation="relu"), lm.nn.Dense(5, 3, activation="tanh"),
                             lm.nn.Dense(3, 2))
    torch_model = torch.nn.Sequential(_torch_linear(model[0]), torch.nn.ReLU(), _torch_linear(model[1]),
                                      torch.nn.Tanh(), _torch_linear(model[2]))
    return model, torch_model


def _grads_match(model, torch_model, dtype):
    torch_linears = [m for m in torch_model if isinstance(m, torch.nn.Linear)]
    for i, linear in enumerate(torch_linears):
        assert_close(model[i].W.grad.numpy(), linear.weight.grad.numpy().T, dtype, f"{i}.W grad")
        assert_close(model[i].b.grad.numpy(), linear.bias.grad.numpy(), dtype, f"{i}.b grad")


def test_sequential_matches_torch(dtype):
    np_dtype = DTYPES[dtype][0]
    model, torch_model = _mlp_pair()
    x_np = randn(8, 4).astype(np_dtype)
    labels = np.random.default_rng(1).integers(0, 2, 8)
    logits, logits_t = model(lm.tensor(x_np)), torch_model(torch.tensor(x_np))
    assert_close(logits.numpy(), logits_t.detach().numpy(), dtype, "logits")
    loss = lm.F.softmax_cross_entropy(logits, lm.tensor(labels))
    loss_t = TF.cross_entropy(logits_t, torch.tensor(labels))
    assert_close(loss.numpy(), loss_t.detach().numpy(), dtype, "loss")
    loss.backward()
    loss_t.backward()
    _grads_match(model, torch_model, dtype)


# ---- optimizers -----------------------------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd": (lambda p: lm.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "adam": (lambda p: lm.optim.Adam(p, lr=0.05, beta1=0.8, beta2=0.99, epsilon=1e-7),
             lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-7)),
    "adam_defaults": (lambda p: lm.optim.Adam(p), lambda p: torch.optim.Adam(p)),
}
OPT_TOLERANCE = {"float64": dict(rtol=1e-9, atol=1e-12), "float32": dict(rtol=1e-4, atol=1e-5)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_on_quadratic_matches_torch(dtype, name):
    np_dtype = DTYPES[dtype][0]
    rng = np.random.default_rng(2)
    A, target = rng.standard_normal((6, 4)).astype(np_dtype), rng.standard_normal(6).astype(np_dtype)
    w0 = rng.standard_normal(4).astype(np_dtype)
    w = lm.Parameter(w0)
    wt = torch.tensor(w0, requires_grad=True)
    make_lm, make_torch = OPTIMIZERS[name]
    opt, opt_t = make_lm([w]), make_torch([wt])
    start = None
    for step in range(20):
        opt.zero_grad()
        opt_t.zero_grad()
        r = lm.tensor(A) @ w.reshape(4, 1) - lm.tensor(target.reshape(6, 1))
        loss = (r * r).mean() * 0.5
        rt = torch.tensor(A) @ wt - torch.tensor(target)
        loss_t = (rt * rt).mean() * 0.5
        start = loss.item() if start is None else start
        loss.backward()
        loss_t.backward()
        opt.step()
        opt_t.step()
    assert loss.item() < start                     # it does optimise
    np.testing.assert_allclose(w.numpy(), wt.detach().numpy(), **OPT_TOLERANCE[dtype])
    assert opt.step_count == 20


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_on_mlp_matches_torch(dtype, name):
    np_dtype = DTYPES[dtype][0]
    model, torch_model = _mlp_pair(seed=3)
    x_np = randn(16, 4, seed=4).astype(np_dtype)
    labels = np.random.default_rng(5).integers(0, 2, 16)
    make_lm, make_torch = OPTIMIZERS[name]
    opt, opt_t = make_lm(model.parameters()), make_torch(torch_model.parameters())
    for step in range(20):
        opt.zero_grad()
        opt_t.zero_grad()
        lm.F.softmax_cross_entropy(model(lm.tensor(x_np)), lm.tensor(labels)).backward()
        TF.cross_entropy(torch_model(torch.tensor(x_np)), torch.tensor(labels)).backward()
        opt.step()
        opt_t.step()
    torch_linears = [m for m in torch_model if isinstance(m, torch.nn.Linear)]
    for i, linear in enumerate(torch_linears):
        assert model[i].W.dtype == np_dtype
        np.testing.assert_allclose(model[i].W.numpy(), linear.weight.detach().numpy().T, **OPT_TOLERANCE[dtype],
                                   err_msg=f"{name}: {i}.W after 20 steps")
        np.testing.assert_allclose(model[i].b.numpy(), linear.bias.detach().numpy(), **OPT_TOLERANCE[dtype],
                                   err_msg=f"{name}: {i}.b after 20 steps")
