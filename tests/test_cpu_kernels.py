"""The CPU backend's compiled kernels against the reference backend (plain NumPy, composite
defaults): forward values and input gradients in float64 and float32, over odd shapes, a
batch of one, arrays above the OpenMP threshold, non-contiguous views and the inputs that
go to the fallbacks; plus the in-place contract of the optimizer updates."""
from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.ops import call
from lamina.reference import ReferenceBackend
from lamina.tensor import Tensor

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
FLOATS = list(TOLERANCE)
LARGE = (1031, 1033)   # 1 065 023 elements, above the kernels' PARALLEL_MIN (2^20): runs on OpenMP threads


@pytest.fixture(scope="module")
def cpu():
    with lamina.use_backend("cpu") as backend:
        yield backend


@pytest.fixture(scope="module")
def reference():
    return ReferenceBackend(seed=0)


def rand(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def run(backend, op, arrays, attrs):
    """(output, [input gradients]) of `op` on `backend` for a fixed random output gradient."""
    inputs = [Tensor._wrap(a, backend, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = call(op, *inputs, **attrs)
    grad_out = np.asarray(np.random.default_rng(99).standard_normal(out.shape), dtype=out.dtype)
    out.backward(grad_out)
    return out.numpy(), [None if t.grad is None else t.grad.numpy() for t in inputs]


def assert_close(actual, expected, dtype):
    """Equal to `rtol` relative to each value, or to `rtol` of the array's largest magnitude
    (gradients such as y·(g - Σ g·y) cancel to values far below their terms)."""
    rtol = TOLERANCE[dtype]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = float(np.max(np.abs(expected), initial=1.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_matches_reference(cpu, reference, op, arrays, dtype, **attrs):
    arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
    out, grads = run(cpu, op, arrays, attrs)
    want_out, want_grads = run(reference, op, [a.copy() for a in arrays], attrs)
    assert_close(out, want_out, dtype)
    assert len(grads) == len(want_grads)
    for grad, want in zip(grads, want_grads):
        assert (grad is None) == (want is None)
        if want is not None:
            assert_close(grad, want, dtype)


# ---- elementwise activations ----------------------------------------------------------------
ACTIVATIONS = [("relu", {}), ("leaky_relu", {"alpha": 0.01}), ("leaky_relu", {"alpha": 0.2}), ("sigmoid", {}),
               ("tanh", {})]
ACTIVATION_SHAPES = [(), (1,), (7,), (1, 5), (3, 17), (2, 3, 5), LARGE]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", ACTIVATION_SHAPES, ids=str)
@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_activation(cpu, reference, op, attrs, shape, dtype):
    assert_matches_reference(cpu, reference, op, [rand(*shape, scale=3.0)], dtype, **attrs)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_activation_on_transposed_view(cpu, reference, op, attrs, dtype):
    assert_matches_reference(cpu, reference, op, [rand(17, 6, scale=3.0).T], dtype, **attrs)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["sigmoid", "tanh"])
def test_saturating_activations_over_their_whole_range(cpu, reference, op, dtype):
    x = np.concatenate([np.linspace(-120, 120, 4001), np.linspace(-1e-3, 1e-3, 101), [0.0, 0.62, -0.63]])
    assert_matches_reference(cpu, reference, op, [x], dtype)


def test_relu_keeps_nan_and_clears_negative_infinity(cpu):
    x = Tensor._wrap(np.array([np.nan, -np.inf, np.inf, -1.0, 2.0]), cpu)
    np.testing.assert_array_equal(call("relu", x).numpy(), [np.nan, 0.0, np.inf, 0.0, 2.0])


@pytest.mark.parametrize("op,attrs", ACTIVATIONS, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_activation_falls_back_for_float16(cpu, reference, op, attrs):
    x = rand(4, 6, scale=3.0).astype(np.float16)
    out, (grad,) = run(cpu, op, [x], attrs)
    want_out, (want_grad,) = run(reference, op, [x.copy()], attrs)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(grad, want_grad)


# ---- softmax and log-softmax ------------------------------------------------------------------
ROW_SHAPES = [(1, 5), (4, 1), (7, 13), (2, 3, 5), (5,), LARGE]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_over_last_axis(cpu, reference, op, shape, dtype):
    assert_matches_reference(cpu, reference, op, [rand(*shape, scale=4.0)], dtype, axis=-1)
    assert_matches_reference(cpu, reference, op, [rand(*shape, scale=4.0)], dtype, axis=len(shape) - 1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_on_transposed_view_and_large_logits(cpu, reference, op, dtype):
    assert_matches_reference(cpu, reference, op, [rand(13, 6, scale=4.0).T], dtype)
    assert_matches_reference(cpu, reference, op, [rand(6, 9, scale=30.0) + 500.0], dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_over_other_axes_falls_back(cpu, reference, op, dtype):
    assert_matches_reference(cpu, reference, op, [rand(4, 6, scale=3.0)], dtype, axis=0)
    assert_matches_reference(cpu, reference, op, [rand(2, 3, 5, scale=3.0)], dtype, axis=1)


def test_softmax_of_masked_logits_is_exactly_zero(cpu):
    x = Tensor._wrap(np.array([[0.0, -np.inf, 1.0], [2.0, 2.0, -np.inf]], dtype=np.float32), cpu)
    y = call("softmax", x).numpy()
    assert y[0, 1] == 0 and y[1, 2] == 0
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)


# ---- fused softmax cross-entropy -----------------------------------------------------------------
CE_SHAPES = [(1, 5), (6, 5), (3, 1), (33, 17), LARGE]


def labels_for(kind, m, n, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "index":
        return rng.integers(0, n, m)
    if kind == "index32":
        return rng.integers(0, n, m).astype(np.int32)
    if kind == "one_hot":
        return np.eye(n)[rng.integers(0, n, m)]
    return rng.dirichlet(np.ones(n), size=m) * rng.uniform(0.5, 1.5, (m, 1))   # rows need not sum to 1


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["index", "index32", "one_hot", "soft"])
def test_softmax_cross_entropy(cpu, reference, kind, shape, dtype):
    logits = rand(*shape, scale=3.0)
    assert_matches_reference(cpu, reference, "softmax_cross_entropy", [logits, labels_for(kind, *shape)], dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["index", "soft"])
def test_softmax_cross_entropy_on_transposed_logits(cpu, reference, kind, dtype):
    logits = rand(9, 7, scale=3.0).T
    assert_matches_reference(cpu, reference, "softmax_cross_entropy", [logits, labels_for(kind, 7, 9)], dtype)


def test_softmax_cross_entropy_with_labels_of_another_float_dtype(cpu, reference):
    logits, labels = rand(6, 5).astype(np.float32), labels_for("soft", 6, 5)
    out, grads = run(cpu, "softmax_cross_entropy", [logits, labels], {})
    want_out, want_grads = run(reference, "softmax_cross_entropy", [logits.copy(), labels.copy()], {})
    assert_close(out, want_out, np.float32)
    assert grads[1].dtype == np.float64
    np.testing.assert_allclose(grads[1], want_grads[1], rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_skips_the_label_gradient_when_not_asked(cpu, reference):
    logits, labels = rand(6, 5), labels_for("soft", 6, 5)
    _, want_grads = run(reference, "softmax_cross_entropy", [logits, labels], {})
    _, backprop = cpu.kernels["softmax_cross_entropy"](logits, labels, needs_input_grad=(True, False))
    dz, dy = backprop(np.asarray(np.random.default_rng(99).standard_normal(())))
    assert dy is None
    assert_close(dz, want_grads[0], np.float64)


@pytest.mark.parametrize("bad_label", [-1, 5])
def test_softmax_cross_entropy_kernel_rejects_labels_out_of_range(cpu, bad_label):
    with pytest.raises(lamina.OpError, match=r"labels must lie in \[0, 5\)"):
        cpu.run("softmax_cross_entropy", rand(3, 5), np.array([0, bad_label, 2]))


def test_softmax_cross_entropy_falls_back_for_float16(cpu, reference):
    logits, labels = rand(6, 5).astype(np.float16), labels_for("index", 6, 5)
    out, grads = run(cpu, "softmax_cross_entropy", [logits, labels], {})
    want_out, want_grads = run(reference, "softmax_cross_entropy", [logits.copy(), labels], {})
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(grads[0], want_grads[0])


# ---- dense ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("x_shape,n_out", [((5, 4), 3), ((1, 4), 3), ((2, 5, 4), 3), ((300, 130), 70)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_dense(cpu, reference, x_shape, n_out, bias, dtype):
    arrays = [rand(*x_shape), rand(x_shape[-1], n_out, seed=1)] + ([rand(n_out, seed=2)] if bias else [])
    assert_matches_reference(cpu, reference, "dense", arrays, dtype)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True), (False, True)],
                         ids=str)
def test_dense_computes_only_the_gradients_asked_for(cpu, reference, needs):
    arrays = [rand(5, 4), rand(4, 3, seed=1), rand(3, seed=2)][:len(needs)]
    _, want_grads = run(reference, "dense", arrays, {})
    _, backprop = cpu.kernels["dense"](*arrays, needs_input_grad=needs)
    grads = backprop(np.random.default_rng(99).standard_normal((5, 3)))      # the gradient run() uses
    assert len(grads) == len(arrays)
    for grad, want, needed in zip(grads, want_grads, needs):
        if needed:
            assert_close(grad, want, np.float64)
        else:
            assert grad is None


@pytest.mark.parametrize("dtype", FLOATS)
def test_dense_on_transposed_operands(cpu, reference, dtype):
    assert_matches_reference(cpu, reference, "dense", [rand(4, 5).T, rand(3, 4, seed=1).T, rand(3, seed=2)], dtype)


def test_dense_with_mixed_dtypes_falls_back(cpu, reference):
    arrays = [rand(5, 4), rand(4, 3, seed=1).astype(np.float32), rand(3, seed=2).astype(np.float32)]
    out, grads = run(cpu, "dense", arrays, {})
    want_out, want_grads = run(reference, "dense", [a.copy() for a in arrays], {})
    assert out.dtype == want_out.dtype == np.float64
    np.testing.assert_allclose(out, want_out, rtol=1e-12)
    for grad, want in zip(grads, want_grads):
        assert grad.dtype == want.dtype
        np.testing.assert_allclose(grad, want, rtol=1e-6)


# ---- optimizer updates ----------------------------------------------------------------------------
ADAM = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}


def adam_arrays(shape, dtype):
    return [rand(*shape).astype(dtype), rand(*shape, seed=1).astype(dtype),
            (rand(*shape, seed=2) * 0.1).astype(dtype), np.abs(rand(*shape, seed=3) * 0.1).astype(dtype)]


def update(backend, op, arrays, attrs):
    return [t.numpy() for t in call(op, *(Tensor._wrap(a, backend) for a in arrays), **attrs)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1,), (4, 3), LARGE], ids=str)
@pytest.mark.parametrize("step", [1, 7])
def test_adam_update_matches_reference_in_place(cpu, reference, shape, step, dtype):
    arrays = adam_arrays(shape, dtype)
    want = update(reference, "adam_update", [a.copy() for a in arrays], {**ADAM, "step": step})
    got = update(cpu, "adam_update", arrays, {**ADAM, "step": step})
    for array, out, expected in zip([arrays[0], arrays[2], arrays[3]], got, want):
        assert out is array                      # the kernel updated the caller's arrays in place
        assert_close(out, expected, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1,), (4, 3), LARGE], ids=str)
def test_sgd_update_matches_reference_in_place(cpu, reference, shape, dtype):
    param, grad = rand(*shape).astype(dtype), rand(*shape, seed=1).astype(dtype)
    (want,) = update(reference, "sgd_update", [param.copy(), grad], {"lr": 0.1})
    (got,) = update(cpu, "sgd_update", [param, grad], {"lr": 0.1})
    assert got is param
    assert_close(got, want, dtype)


def test_adam_update_with_a_transposed_gradient(cpu, reference):
    arrays = adam_arrays((4, 3), np.float64)
    arrays[1] = np.ascontiguousarray(arrays[1].T).T
    want = update(reference, "adam_update", [a.copy() for a in arrays], {**ADAM, "step": 2})
    got = update(cpu, "adam_update", arrays, {**ADAM, "step": 2})
    assert got[0] is arrays[0]
    for out, expected in zip(got, want):
        assert_close(out, expected, np.float64)


def test_updates_of_non_contiguous_parameters_fall_back(cpu, reference):
    arrays = [np.ascontiguousarray(a.T).T for a in adam_arrays((4, 3), np.float64)]
    want = update(reference, "adam_update", [a.copy() for a in arrays], {**ADAM, "step": 2})
    got = update(cpu, "adam_update", arrays, {**ADAM, "step": 2})
    for out, expected in zip(got, want):
        assert_close(out, expected, np.float64)
    param, grad = arrays[0], arrays[1]
    (want,) = update(reference, "sgd_update", [param.copy(), grad], {"lr": 0.1})
    (got,) = update(cpu, "sgd_update", [param, grad], {"lr": 0.1})
    assert_close(got, want, np.float64)


def test_optimizer_steps_update_parameters_in_place(cpu):
    layer = lamina.nn.Dense(6, 3)
    optimizer = lamina.optim.Adam(layer.parameters(), lr=0.01)
    weights = layer.W.data
    for _ in range(3):
        optimizer.zero_grad()
        loss = lamina.F.softmax_cross_entropy(layer(lamina.tensor(rand(5, 6))), lamina.tensor(np.arange(5) % 3))
        loss.backward()
        optimizer.step()
    assert layer.W.data is weights
    assert optimizer.state[0]["v"].data.any()


# ---- conv2d: the direct kernel, Winograd and im2col + BLAS --------------------------------------------
CONV_KERNEL_CASES = [  # (x shape, filter shape, stride, padding): direct up to 1024 filter numbers, BLAS above
    ((1, 5, 5, 1), (3, 3, 1, 2), 1, "valid"), ((1, 1, 1, 3), (1, 1, 3, 4), 1, "valid"),
    ((2, 17, 33, 3), (3, 3, 3, 8), 2, "same"), ((3, 9, 20, 2), (5, 5, 2, 20), 1, 2),
    ((1, 5, 5, 1), (3, 3, 1, 120), 1, "same"), ((2, 17, 33, 3), (3, 3, 3, 40), 3, "same"),
    ((3, 9, 20, 8), (2, 2, 8, 40), 2, 1), ((2, 9, 10, 8), (3, 3, 8, 17), 1, "same"),     # the last: Winograd
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_KERNEL_CASES, ids=str)
def test_conv2d(cpu, reference, x_shape, w_shape, stride, padding, dtype):
    arrays = [rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[3], seed=2)]
    assert_matches_reference(cpu, reference, "conv2d", arrays, dtype, stride=stride, padding=padding)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("w_shape", [(3, 3, 2, 5), (3, 3, 2, 64), (2, 2, 2, 300)], ids=["direct", "winograd", "gemm"])
def test_conv2d_on_non_contiguous_views_without_bias(cpu, reference, w_shape, dtype):
    x = np.ascontiguousarray(rand(2, 7, 9, 2).transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    w = np.ascontiguousarray(rand(*w_shape, seed=1).T).T
    assert not (x.flags.c_contiguous or w.flags.c_contiguous)
    assert_matches_reference(cpu, reference, "conv2d", [x, w], dtype, padding="same")


# ---- _matmul: the products on the OpenMP threads (the recurrences' instead of BLAS) ------------------------
MATMUL_SHAPES = [(1, 1, 1), (7, 17, 5), (13, 70, 0), (200, 90, 70), (6, 130, 300), (97, 33, 260)]   # (rows, N, K)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("rows, n, k", MATMUL_SHAPES, ids=str)
def test_matmul_panels_equals_numpy(rows, n, k, dtype):
    from lamina_cpu import _matmul
    rng = np.random.default_rng(rows + n + k)
    A, W = rng.standard_normal((rows, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    out = np.full((rows, n), np.nan, dtype)
    _matmul.matmul_panels(A, _matmul.pack_panels(W), out)
    np.testing.assert_allclose(out, A.astype(np.float64) @ W, rtol=1e-5 if dtype is np.float32 else 1e-12,
                               atol=1e-4 if dtype is np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("rows, n, k", MATMUL_SHAPES, ids=str)
def test_matmul_tn_equals_numpy_on_column_slices(rows, n, k, dtype):
    """out = Aᵀ·B summed over k in chunks of 256 rows; A, B and out may be column slices of wider arrays."""
    from lamina_cpu import _matmul
    rng = np.random.default_rng(rows * n + k)
    A = rng.standard_normal((k, rows + 3)).astype(dtype)[:, 2:2 + rows]
    B = rng.standard_normal((k, n + 5)).astype(dtype)[:, 5:]
    out = np.full((rows, n + 4), np.nan, dtype)
    _matmul.matmul_tn(A, B, out[:, 4:])
    np.testing.assert_allclose(out[:, 4:], A.T.astype(np.float64) @ B, rtol=1e-5 if dtype is np.float32 else 1e-12,
                               atol=1e-4 if dtype is np.float32 else 1e-11)
    assert np.isnan(out[:, :4]).all()


def test_pack_panels_lays_each_gates_columns_out_in_zero_padded_panels():
    from lamina_cpu import _matmul
    W = np.arange(3 * 2 * 20, dtype=np.float32).reshape(3, 40)       # K = 3, two gates of 20 units
    panels = _matmul.pack_panels(W, gates=2)
    assert panels.shape == (2, 1, 3, 64) and panels.flags.c_contiguous      # 64 float32 units: 256 bytes
    np.testing.assert_array_equal(panels[1, 0, :, :20], W[:, 20:])
    assert not panels[:, :, :, 20:].any()


def test_matmul_errors_name_the_function_and_shapes():
    from lamina_cpu import _matmul
    with pytest.raises(ValueError, match=r"matmul_panels: A \(2, 3\), panels \(1, 1, 4, 64\)"):
        _matmul.matmul_panels(np.ones((2, 3), np.float32), _matmul.pack_panels(np.ones((4, 5), np.float32)),
                              np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="matmul_tn: A's rows must be contiguous"):
        _matmul.matmul_tn(np.ones((4, 6))[:, ::2], np.ones((4, 2)), np.empty((3, 2)))
