"""The backend conformance suite (`lamina.testing`) on the built-in backends, and checks that the
suite itself catches broken kernels."""
import numpy as np
import pytest

import lamina as lm
from lamina.backend import kernel
from lamina.reference import ReferenceBackend
from lamina.testing import (check_backend, check_op, conformance_params, differentiable_op_names, gradcheck_op,
                            op_names, run_layer_test)


@pytest.mark.parametrize("case", conformance_params(["cpu"]))
def test_cpu_conforms(case):
    backend, op_name, dtype = case
    assert check_op(backend, op_name, dtype) > 0


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("op_name", differentiable_op_names())
def test_gradcheck_op(backend, op_name):
    results = gradcheck_op(backend, op_name)
    assert results, f"op {op_name!r} has no float64 sample to gradient-check"
    assert all(r.relative_difference < 1e-7 for r in results)


def test_op_names_cover_primitives_and_composites():
    names = op_names()
    assert set(lm.ops.PRIMITIVE_OPS[i].name for i in range(len(lm.ops.PRIMITIVE_OPS))) <= set(names)
    assert {"dense", "softmax_cross_entropy", "adam_update"} <= set(names)
    assert "greater" not in differentiable_op_names() and "tanh" in differentiable_op_names()


def test_conformance_params_ids():
    params = conformance_params(["cpu"], dtypes=["float32"], ops=["tanh", "dense"])
    assert [p.id for p in params] == ["cpu-tanh-float32", "cpu-dense-float32"]
    assert params[0].values == (("cpu", "tanh", "float32"),)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(lm.BackendError, match="unknown backend 'cpuu'.*Did you mean 'cpu'"):
        conformance_params(["cpuu"])


# ---- the suite must catch broken backends ---------------------------------------------------------
class BrokenBackend(ReferenceBackend):
    """Each kernel here breaks the contract in one way."""

    name = "broken"

    @kernel("tanh")
    def tanh(self, x):                       # wrong derivative: 1 - y instead of 1 - y²
        y = np.tanh(x)
        return y, lambda g: (g * (1 - y),)

    @kernel("exp")
    def exp(self, x):                        # computes (and returns) float64 for float32 input
        y = np.exp(x.astype(np.float64))
        return y, lambda g: (g * y,)

    @kernel("relu")
    def relu(self, x):                       # overwrites its input
        np.maximum(x, 0, out=x)
        return x, lambda g: (g * (x > 0),)

    @kernel("sigmoid")
    def sigmoid(self, x):                    # forward off by 1e-3
        y = 1 / (1 + np.exp(-x)) + 1e-3
        return y, lambda g: (g * y * (1 - y),)

    @kernel("div")
    def div(self, a, b):                     # rejects strided arrays, as a Cython `double[:, ::1]` would
        if not (a.flags.c_contiguous and b.flags.c_contiguous):
            raise ValueError("ndarray is not C-contiguous")
        return super().div(a, b)

    @kernel("mse")
    def mse(self, pred, target):             # differentiable op without a backward
        return np.mean((pred - target) ** 2), None


@pytest.fixture
def broken():
    backend = BrokenBackend()
    del backend.kernels["log"]
    return backend


def test_wrong_gradient_is_reported(broken):
    with pytest.raises(AssertionError, match=r"backend 'broken', op 'tanh', sample 0 \(float64\): gradient of "
                                             r"input 0 .*max abs error .*max rel error"):
        check_op(broken, "tanh", "float64")
    with pytest.raises(AssertionError, match="op 'tanh', sample 0: gradient check FAILED.*worst component input 0"):
        gradcheck_op(broken, "tanh")


def test_wrong_forward_is_reported(broken):
    with pytest.raises(AssertionError, match=r"op 'sigmoid', sample 0 \(float32\): output differs.*max abs "
                                             r"error 1\.000e-03"):
        check_op(broken, "sigmoid", "float32")


def test_dtype_drift_is_reported(broken):
    check_op(broken, "exp", "float64")
    with pytest.raises(AssertionError, match="output has dtype float64, expected float32"):
        check_op(broken, "exp", "float32")


def test_kernels_must_accept_strided_inputs(broken):
    with pytest.raises(AssertionError, match=r"op 'div', sample 0 \(float64, transposed inputs\): running the op "
                                             r"failed: ValueError: ndarray is not C-contiguous"):
        check_op(broken, "div")


def test_input_mutation_is_reported(broken):
    with pytest.raises(AssertionError, match="input 0 was modified by the op"):
        check_op(broken, "relu")


def test_missing_backward_is_reported(broken):
    with pytest.raises(AssertionError, match="op 'mse'.*recorded no backward"):
        check_op(broken, "mse")


def test_missing_primitive_is_reported(broken):
    with pytest.raises(AssertionError, match="op 'log'.*BackendError.*no kernel for primitive op 'log'"):
        check_op(broken, "log")
    # a composite written with `log` fails too, and says which primitive is missing
    with pytest.raises(AssertionError, match="op 'log_softmax'.*no kernel for primitive op 'log'"):
        check_op(broken, "log_softmax")


def test_check_backend_lists_every_failure(broken):
    with pytest.raises(AssertionError) as info:
        check_backend(broken, dtypes=["float64"], ops=["add", "tanh", "log", "relu"])
    message = str(info.value)
    assert "fails 3 conformance check(s)" in message
    assert "op 'tanh'" in message and "op 'log'" in message and "op 'relu'" in message
    assert "op 'add'" not in message
    assert check_backend("cpu", dtypes=["float64"], ops=["add", "tanh"]) == 2


def test_in_place_ops_get_fresh_inputs():
    """A correct in-place kernel must pass: it mutates only its own copy, not the reference's."""

    class InPlace(ReferenceBackend):
        name = "in_place"

        @kernel("sgd_update")
        def sgd_update(self, param, grad, *, lr):
            param -= lr * grad
            return (param,), None

        @kernel("adam_update")
        def adam_update(self, param, grad, m, v, *, lr, beta1, beta2, epsilon, step, epsilon_inside_sqrt=False):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            v_hat = v / (1 - beta2 ** step)
            denominator = np.sqrt(v_hat + epsilon) if epsilon_inside_sqrt else np.sqrt(v_hat) + epsilon
            param -= lr * (m / (1 - beta1 ** step)) / denominator
            return (param, m, v), None

    backend = InPlace()
    for dtype in ("float64", "float32"):
        assert check_op(backend, "sgd_update", dtype) == 1
        assert check_op(backend, "adam_update", dtype) == 3       # ε outside the square root, then inside

    class WrongAdam(InPlace):
        @kernel("adam_update")
        def adam_update(self, param, grad, m, v, *, lr, beta1, beta2, epsilon, step,
                        epsilon_inside_sqrt=False):  # no bias correction
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            return (param - lr * m / (np.sqrt(v) + epsilon), m, v), None

    with pytest.raises(AssertionError, match="op 'adam_update', sample 0 .*: output 0 differs"):
        check_op(WrongAdam(), "adam_update")


# ---- run_layer_test --------------------------------------------------------------------------------
def test_run_layer_test_on_dense_network():
    report = run_layer_test(lambda: lm.nn.Sequential(lm.nn.Dense(3, 4, activation="tanh"), lm.nn.Dense(4, 2)),
                            (2, 3), expected_output_shape=(2, 2))
    assert report.output_shape == (2, 2)
    assert report.num_parameters == 3 * 4 + 4 + 4 * 2 + 2
    assert report.gradcheck.relative_difference < 1e-7


def test_run_layer_test_on_a_layer_without_parameters():
    assert run_layer_test(lambda: lm.nn.Activation("sigmoid"), (2, 3)).num_parameters == 0


class _Scale(lm.nn.Layer):
    """y = x * w, with a deliberately wrong backward or shape declaration when asked."""

    def __init__(self, n, wrong_shape=False, wrong_grad=False):
        super().__init__()
        self.w = lm.Parameter(np.linspace(0.5, 1.5, n))
        self.wrong_shape, self.wrong_grad = wrong_shape, wrong_grad

    def forward(self, x):
        y = x * self.w
        return y + (x * 0.1).detach() if self.wrong_grad else y      # the 0.1·x term gets no gradient

    def output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + ((input_shape[-1] + 1,) if self.wrong_shape else (input_shape[-1],))


def test_run_layer_test_catches_a_wrong_output_shape():
    with pytest.raises(AssertionError, match=r"output_shape\(\(2, 3\)\) says \(2, 4\) but the output has shape"):
        run_layer_test(lambda: _Scale(3, wrong_shape=True), (2, 3))
    with pytest.raises(AssertionError, match="expected output shape"):
        run_layer_test(lambda: _Scale(3), (2, 3), expected_output_shape=(2, 5))


def test_run_layer_test_catches_a_wrong_gradient():
    run_layer_test(lambda: _Scale(3), (2, 3))
    with pytest.raises(AssertionError, match="gradient check FAILED"):
        run_layer_test(lambda: _Scale(3, wrong_grad=True), (2, 3))


def test_run_layer_test_catches_a_parameter_without_gradient():
    class Detached(_Scale):
        def forward(self, x):
            return x * self.w.detach()

    with pytest.raises(AssertionError, match="'w'.*(gradient|no gradient)"):
        run_layer_test(lambda: Detached(3), (2, 3), check_gradients=False)
