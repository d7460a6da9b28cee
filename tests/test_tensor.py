"""Tensor and autograd semantics: dtypes, operators, broadcasting, reductions, indexing, graph rules."""
import numpy as np
import pytest

import lamina as lm
from lamina.reference import ReferenceBackend


@pytest.fixture(autouse=True)
def _float32_default():
    previous = lm.get_default_dtype()
    lm.set_default_dtype("float32")
    yield
    lm.set_default_dtype(previous)


def f64(data, requires_grad=True):
    return lm.tensor(np.asarray(data, dtype=np.float64), requires_grad=requires_grad, dtype="float64")


# ---- dtypes ----------------------------------------------------------------------------------------
def test_dtype_rules():
    assert lm.tensor([1.0, 2.0]).dtype == np.float32
    assert lm.tensor(np.zeros(3, dtype=np.float64)).dtype == np.float32      # floats take the default
    assert lm.tensor(2.5).dtype == np.float32 and lm.tensor(2.5).shape == ()
    assert lm.tensor([1, 2, 3]).dtype == np.int64
    assert lm.tensor(np.array([1, 2], dtype=np.int32)).dtype == np.int64     # ints stay int64
    assert lm.tensor(np.array([1, 2], dtype=np.uint8)).dtype == np.int64
    assert lm.tensor([1.0], dtype="float64").dtype == np.float64
    assert lm.tensor([1, 2], dtype=np.float64).dtype == np.float64


def test_set_default_dtype_as_call_and_context_manager():
    lm.set_default_dtype("float64")
    assert lm.get_default_dtype() == np.float64
    assert lm.tensor([1.0]).dtype == np.float64
    assert lm.tensor([1, 2]).dtype == np.int64
    lm.set_default_dtype(np.float32)
    assert lm.tensor([1.0]).dtype == np.float32
    with lm.set_default_dtype("float64"):
        assert lm.tensor([1.0]).dtype == np.float64
        layer = lm.nn.Dense(3, 2)
        assert layer.W.dtype == np.float64 and layer.b.dtype == np.float64
    assert lm.get_default_dtype() == np.float32
    assert lm.tensor([1.0]).dtype == np.float32
    assert lm.nn.Dense(3, 2).W.dtype == np.float32


def test_set_default_dtype_rejects_non_floats():
    with pytest.raises(lm.LaminaError, match="expected float32 or float64, got int64"):
        lm.set_default_dtype("int64")
    assert lm.get_default_dtype() == np.float32


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(lm.LaminaError, match="only floating tensors can require gradients"):
        lm.tensor([1, 2], requires_grad=True)


def test_scalar_operands_keep_the_tensor_dtype():
    x = lm.tensor([1.0, 2.0])
    assert (x * 2).dtype == np.float32 and (2.5 + x).dtype == np.float32
    assert (x * np.float64(2.0)).dtype == np.float32
    assert (x + np.ones(2)).dtype == np.float32            # a float64 array joins a float32 tensor as float32
    y = lm.tensor([1.0, 2.0], dtype="float64")
    assert (y * 2).dtype == np.float64


# ---- operators ----------------------------------------------------------------------------------------
def test_arithmetic_operators_and_reflected_forms():
    a_np = np.array([[1.0, -2.0], [3.0, 4.0]])
    b_np = np.array([[0.5, 2.0], [-1.0, 3.0]])
    a, b = f64(a_np, False), f64(b_np, False)
    cases = {
        "add": (a + b, a_np + b_np), "sub": (a - b, a_np - b_np), "mul": (a * b, a_np * b_np),
        "div": (a / b, a_np / b_np), "matmul": (a @ b, a_np @ b_np), "neg": (-a, -a_np),
        "pow": (b ** 2, b_np ** 2), "radd": (3 + a, 3 + a_np), "rsub": (3 - a, 3 - a_np),
        "rmul": (3 * a, 3 * a_np), "rdiv": (3 / b, 3 / b_np),
        "np_radd": (b_np + a, b_np + a_np), "np_rsub": (b_np - a, b_np - a_np), "np_rmul": (b_np * a, b_np * a_np),
        "np_rdiv": (b_np / a, b_np / a_np), "np_rmatmul": (b_np @ a, b_np @ a_np), "np_matmul": (a @ b_np, a_np @ b_np),
        "gt": (a > b, (a_np > b_np).astype(float)), "lt": (a < b, (a_np < b_np).astype(float)),
        "gt_scalar": (a > 1.5, (a_np > 1.5).astype(float)),
    }
    for name, (got, want) in cases.items():
        assert isinstance(got, lm.Tensor), name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, err_msg=name)


def test_reflected_operators_have_correct_gradients():
    a_np = np.array([[1.0, -2.0], [3.0, 4.0]])
    c = np.array([[2.0, 1.0], [0.5, -1.0]])
    a = f64(a_np)
    (c - a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), -np.ones((2, 2)))
    a.grad = None
    (c / a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), -c / a_np ** 2, rtol=1e-12)
    a.grad = None
    (c @ a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), c.T @ np.ones((2, 2)), rtol=1e-12)
    a.grad = None
    (a ** 3).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), 3 * a_np ** 2, rtol=1e-12)


def test_power_needs_a_number():
    with pytest.raises(lm.LaminaError, match="exponent must be a Python number"):
        f64([1.0]) ** f64([2.0])


# ---- broadcasting ----------------------------------------------------------------------------------------
def test_broadcast_add_reduces_gradients_to_each_shape():
    a, b = f64(np.arange(3.0).reshape(3, 1)), f64(np.arange(4.0).reshape(1, 4))
    out = a + b
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.numpy(), np.arange(3.0).reshape(3, 1) + np.arange(4.0))
    (out * f64(np.arange(12.0).reshape(3, 4), False)).sum().backward()
    g = np.arange(12.0).reshape(3, 4)
    assert a.grad.shape == (3, 1) and b.grad.shape == (1, 4)
    np.testing.assert_allclose(a.grad.numpy(), g.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(b.grad.numpy(), g.sum(axis=0, keepdims=True))


def test_bias_broadcasting_gradient():
    rng = np.random.default_rng(0)
    x_np, W_np, b_np = rng.standard_normal((5, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    x, W, b = f64(x_np), f64(W_np), f64(b_np)
    G = rng.standard_normal((5, 4))
    ((x @ W + b) * f64(G, False)).sum().backward()
    assert b.grad.shape == (4,)
    np.testing.assert_allclose(b.grad.numpy(), G.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(W.grad.numpy(), x_np.T @ G, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), G @ W_np.T, rtol=1e-12)


def test_broadcast_with_leading_axes_and_scalar_tensor():
    a = f64(np.ones((2, 3, 4)))
    s = f64(2.0)
    v = f64(np.arange(4.0))
    ((a * s) + v).sum().backward()
    assert s.grad.shape == () and s.grad.item() == pytest.approx(24.0)
    np.testing.assert_allclose(v.grad.numpy(), np.full(4, 6.0))
    np.testing.assert_allclose(a.grad.numpy(), np.full((2, 3, 4), 2.0))


def test_incompatible_shapes_raise_shape_error():
    with pytest.raises(lm.ShapeError, match=r"add: shapes \(3, 4\) and \(3,\) cannot be broadcast"):
        f64(np.ones((3, 4))) + f64(np.ones(3))
    with pytest.raises(lm.ShapeError, match=r"matmul: inner dimensions differ"):
        f64(np.ones((3, 4))) @ f64(np.ones((3, 4)))


# ---- reductions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_mean_max_over_axes(axis, keepdims):
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((3, 4, 5))
    for name in ("sum", "mean", "max"):
        x = f64(x_np)
        out = getattr(x, name)(axis=axis, keepdims=keepdims)
        want = getattr(np, name)(x_np, axis=axis, keepdims=keepdims)
        assert out.shape == np.shape(want), name
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, err_msg=name)
        G = rng.standard_normal(np.shape(want))
        (out * f64(G, False)).sum().backward()
        G_keep = np.reshape(G, np.max(x_np, axis=axis, keepdims=True).shape)
        if name == "sum":
            expected = np.broadcast_to(G_keep, x_np.shape)
        elif name == "mean":
            expected = np.broadcast_to(G_keep, x_np.shape) * (np.size(want) / x_np.size)
        else:
            expected = (x_np == np.max(x_np, axis=axis, keepdims=True)) * G_keep
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, err_msg=name)


def test_reduction_axes_as_lists_and_numpy_ints():
    x_np = np.arange(24.0).reshape(2, 3, 4)
    for axis, want in ((np.int64(1), x_np.sum(axis=1)), ([0, 2], x_np.sum(axis=(0, 2)))):
        x = f64(x_np)
        out = x.sum(axis=axis)
        np.testing.assert_array_equal(out.numpy(), want)
        out.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.ones((2, 3, 4)))
    np.testing.assert_array_equal(f64(x_np, False).max(axis=[1, 2]).numpy(), [11.0, 23.0])
    np.testing.assert_array_equal(f64(x_np, False).mean(axis=np.int32(0)).numpy(), x_np.mean(axis=0))


def test_max_shares_gradient_among_ties():
    x = f64([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1, 0, 0]])


def test_reduction_axis_out_of_range():
    with pytest.raises(lm.OpError, match=r"sum: axis 3 is out of range for a tensor of shape \(2, 3\)"):
        f64(np.ones((2, 3))).sum(axis=3)


# ---- shape ops and indexing -------------------------------------------------------------------------------
def test_reshape_and_transpose_with_gradients():
    x_np = np.arange(24.0).reshape(2, 3, 4)
    x = f64(x_np)
    y = x.reshape(4, -1)
    assert y.shape == (4, 6)
    z = x.reshape((-1,))
    assert z.shape == (24,)
    t = x.transpose(2, 0, 1)
    assert t.shape == (4, 2, 3)
    np.testing.assert_array_equal(t.numpy(), x_np.transpose(2, 0, 1))
    np.testing.assert_array_equal(f64(np.ones((2, 5)), False).T.shape, (5, 2))
    G = np.arange(24.0).reshape(4, 2, 3)
    (t * f64(G, False)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), G.transpose(1, 2, 0))
    with pytest.raises(lm.ShapeError, match=r"cannot reshape a tensor of shape \(2, 3, 4\) \(24 elements\) "
                                            r"to \(5, -1\)"):
        x.reshape(5, -1)
    with pytest.raises(lm.OpError, match="not a permutation"):
        x.transpose(0, 0, 1)


def test_basic_indexing_and_slicing_gradients():
    x_np = np.arange(20.0).reshape(5, 4)
    x = f64(x_np)
    np.testing.assert_array_equal(x[1].numpy(), x_np[1])
    np.testing.assert_array_equal(x[:, -1].numpy(), x_np[:, -1])
    y = x[1:4, ::2]
    np.testing.assert_array_equal(y.numpy(), x_np[1:4, ::2])
    y.sum().backward()
    expected = np.zeros((5, 4))
    expected[1:4, ::2] = 1
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_advanced_indexing_with_repeats_scatter_adds():
    x = f64(np.arange(10.0).reshape(5, 2))
    idx = np.array([0, 3, 3, 1, 3])
    rows = x[idx]
    np.testing.assert_array_equal(rows.numpy(), np.arange(10.0).reshape(5, 2)[idx])
    rows.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[:, 0], [1, 1, 0, 3, 0])
    x.grad = None
    x[lm.tensor(idx)].sum().backward()                       # an integer tensor as index
    np.testing.assert_array_equal(x.grad.numpy()[:, 1], [1, 1, 0, 3, 0])
    x.grad = None
    pairs = x[np.array([0, 4, 4]), np.array([1, 0, 0])]
    np.testing.assert_array_equal(pairs.numpy(), [1.0, 8.0, 8.0])
    (pairs * f64([1.0, 2.0, 3.0], False)).sum().backward()
    expected = np.zeros((5, 2))
    expected[0, 1], expected[4, 0] = 1.0, 5.0
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_index_tuples_may_hold_integer_tensors():
    logits = f64(np.arange(12.0).reshape(3, 4))
    labels = lm.tensor([3, 0, 2])
    picked = logits[np.arange(3), labels]
    np.testing.assert_array_equal(picked.numpy(), [3.0, 4.0, 10.0])
    picked.sum().backward()
    np.testing.assert_array_equal(logits.grad.numpy().nonzero()[1], [3, 0, 2])


def test_bad_index_is_an_op_error():
    with pytest.raises(lm.OpError, match=r"getitem: index .* is invalid for a tensor of shape \(5, 2\)"):
        f64(np.ones((5, 2)))[7]


# ---- autograd rules --------------------------------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls():
    x = f64([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 7.0, 9.0])
    x.zero_grad()
    assert x.grad is None


def test_backward_twice_through_the_same_graph_accumulates():
    x = f64([1.0, -2.0])
    loss = (x * x * x).sum()
    loss.backward()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 3 * np.array([1.0, 4.0]))


def test_shared_subexpression_sums_both_paths():
    x = f64([2.0])
    y = x * 3.0
    (y * y + y).sum().backward()          # d/dx (9x² + 3x) = 18x + 3
    np.testing.assert_allclose(x.grad.numpy(), [39.0])


def test_leaf_grads_do_not_alias_each_other():
    a, b = f64([1.0, 2.0]), f64([3.0, 4.0])
    (a + b).sum().backward()
    a.grad.numpy()[...] = 100.0          # writing into one gradient must not change the other
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])
    c, d = f64(np.ones((2, 2))), f64(np.ones(4))
    (c.reshape(4) + d).sum().backward()    # c gets a view of the buffer d gets
    d.grad.numpy()[...] = 7.0
    np.testing.assert_array_equal(c.grad.numpy(), np.ones((2, 2)))
    G = f64([5.0, 6.0], False)
    e = f64([0.0, 0.0])
    e.backward(G)                        # the caller's gradient buffer is not adopted as e.grad
    G.numpy()[...] = 0.0
    np.testing.assert_array_equal(e.grad.numpy(), [5.0, 6.0])


def test_no_grad_records_no_graph():
    x = f64([1.0, 2.0])
    with lm.no_grad():
        assert not lm.is_grad_enabled()
        y = x * 2 + 1
        with lm.enable_grad():
            z = x * 2
    assert lm.is_grad_enabled()
    assert y.requires_grad is False and y.is_leaf
    assert z.requires_grad
    with pytest.raises(lm.LaminaError, match="does not require grad"):
        y.sum().backward()

    @lm.no_grad()
    def infer(t):
        return t * 3

    assert infer(x).requires_grad is False and lm.is_grad_enabled()

    @lm.enable_grad()
    def record(t):
        return t * 3

    with lm.no_grad():
        assert record(x).requires_grad is True     # the decorator re-enables, it does not disable
        assert not lm.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = f64([1.0, 2.0])
    y = x * x.detach()                  # only one factor carries gradient: dy/dx = x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])
    assert not x.detach().requires_grad


def test_backward_on_non_scalar_needs_grad():
    x = f64([[1.0, 2.0], [3.0, 4.0]])
    y = x * 2
    with pytest.raises(lm.LaminaError, match=r"grad can be omitted only for a scalar, got shape \(2, 2\)"):
        y.backward()
    y.backward(np.array([[1.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 0.0], [0.0, 4.0]])


def test_float32_graph_gives_float32_grads():
    x = lm.tensor([1.0, 2.0], requires_grad=True)
    (x * np.ones(2) * 2.0).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_item_len_and_repr():
    x = f64([[1.0, 2.0]], False)
    assert len(x) == 1 and x.ndim == 2 and x.size == 2
    assert f64(3.5, False).item() == 3.5 and float(f64(3.5, False)) == 3.5
    with pytest.raises(lm.LaminaError, match=r"item\(\): expected a tensor with one element, got shape \(1, 2\)"):
        x.item()
    assert "backend='cpu'" in repr(x) and "float64" in repr(x)


# ---- backends ----------------------------------------------------------------------------------------
def test_mixing_backends_is_a_clear_error():
    other = ReferenceBackend()
    a = lm.tensor([1.0, 2.0])
    b = lm.Tensor([1.0, 2.0], backend=other)
    assert b.backend is other and (b + b).backend is other
    with pytest.raises(lm.BackendError, match="cannot mix tensors of backends 'cpu' and 'reference'"):
        a + b
    with pytest.raises(lm.BackendError, match="cannot mix tensors of backends 'reference' and 'cpu'"):
        b * a
    with pytest.raises(lm.BackendError, match=r"matmul: inputs live on different backends \('cpu' and 'reference'\)"):
        lm.ops.call("matmul", lm.tensor(np.ones((2, 2))), lm.Tensor(np.ones((2, 2)), backend=other))


def test_use_backend_unknown_name():
    with pytest.raises(lm.BackendError, match="unknown backend 'nope'"):
        lm.use_backend("nope")
