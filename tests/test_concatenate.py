"""concatenate (§4.10, joining the Inception branches): parity with torch.cat forward and backward for the
CPU kernel and for the composite default (on the reference backend), float64 gradient checks, the
default's exactness, the conformance samples, and argument errors."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.backend import load_backend
from lamina.errors import OpError, ShapeError
from lamina.ops import call, get_op
from lamina.tensor import Tensor
from lamina.testing import check_op, gradcheck_op, reference_backend


@pytest.fixture(params=["cpu", "reference"])
def backend(request):
    """The CPU backend's kernel, or the reference backend, which runs the composite default."""
    return load_backend("cpu") if request.param == "cpu" else reference_backend()


CASES = [  # (shapes, axis)
    ([(2, 4, 4, 3), (2, 4, 4, 5), (2, 4, 4, 1), (2, 4, 4, 2)], -1),   # Inception's four branches
    ([(3, 2), (1, 2), (4, 2)], 0),
    ([(2, 3, 4), (2, 5, 4)], 1),
    ([(2, 3, 4), (2, 3, 1)], 2),
    ([(6,), (1,)], 0),
    ([(2, 3), (2, 0), (2, 2)], -1),                                   # an empty piece
    ([(3, 4)], 0),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shapes,axis", CASES, ids=lambda c: str(c))
def test_matches_torch_cat(backend, shapes, axis, dtype):
    rng = np.random.default_rng(len(shapes) * 7 + axis)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tensors = [Tensor(a, dtype=dtype, backend=backend, requires_grad=True) for a in arrays]
    out = call("concatenate", *tensors, axis=axis)
    torch_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    want = torch.cat(torch_in, dim=axis)
    upstream = rng.standard_normal(tuple(want.shape)).astype(dtype)
    (out * Tensor(upstream, dtype=dtype, backend=backend)).sum().backward()
    (want * torch.tensor(upstream)).sum().backward()

    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out.numpy(), want.detach().numpy())      # a copy: exact, also the default
    for t, tt in zip(tensors, torch_in):
        assert t.grad.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(t.grad.numpy(), tt.grad.numpy())


def test_functional_and_large_values_are_exact(backend):
    """The default's 0/1 selection products add only zeros to each element: no rounding, even at 1e300."""
    a = np.array([[1e300, -3.0, 1e-300]])
    b = np.array([[np.pi, 2.0 ** -60]])
    out = lm.functional.concatenate([Tensor(a, dtype=a.dtype, backend=backend),
                                    Tensor(b, dtype=b.dtype, backend=backend)], axis=1)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([a, b], axis=1))
    assert lm.functional.concatenate([a[:, 1:], b]).shape == (1, 4)   # arrays are wrapped, axis=-1 by default


def test_gradcheck_float64(backend):
    results = gradcheck_op(backend, "concatenate")
    assert len(results) == len(get_op("concatenate").samples(np.random.default_rng(0), np.float64))
    assert all(r.passed for r in results)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_kernel_conforms(dtype):
    assert check_op("cpu", "concatenate", dtype) == 5


def test_cpu_kernel_is_used_and_the_gradient_only_reaches_inputs_that_need_it():
    cpu = load_backend("cpu")
    assert "concatenate" in cpu.kernels
    a = Tensor(np.ones((2, 2)), backend=cpu, requires_grad=True)
    b = Tensor(np.zeros((2, 3)), backend=cpu)
    out = call("concatenate", a, b, axis=1)
    out.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.ones((2, 2)))
    assert b.grad is None


@pytest.mark.parametrize("arrays,axis,error,words", [
    ([np.ones((2, 3)), np.ones((2, 3, 1))], 0, ShapeError, ["argument 1", "2 dimensions", "(2, 3, 1)"]),
    ([np.ones((2, 3)), np.ones((2, 3)), np.ones((4, 2))], 1, ShapeError,
     ["argument 2", "axis 0", "expected size 2", "got 4"]),
    ([np.ones((2, 3)), np.ones((2, 3), dtype=np.float32)], 0, OpError, ["argument 1", "float64", "float32"]),
    ([np.ones((2, 3))], 2, OpError, ["axis 2", "out of range"]),
    ([np.ones((2, 3))], 1.0, OpError, ["'axis' must be an int"]),
    ([np.array(1.0)], 0, OpError, ["argument 0", "scalar"]),
])
def test_argument_errors_name_the_op_argument_and_both_values(arrays, axis, error, words):
    tensors = [Tensor(a, dtype=a.dtype) for a in arrays]
    with pytest.raises(error) as info:
        call("concatenate", *tensors, axis=axis)
    message = str(info.value)
    assert message.startswith("concatenate:")
    for word in words:
        assert word in message, message


def test_no_tensors_is_an_error():
    with pytest.raises(OpError, match="at least one tensor"):
        lm.functional.concatenate([])
