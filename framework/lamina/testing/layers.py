"""`run_layer_test`: build, call, gradient-check, save/load and train a layer in one call
(for plugin authors, in the spirit of Keras's `run_layer_test`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..autograd import no_grad
from ..backend import use_backend
from ..dtypes import set_default_dtype
from ..gradcheck import GradcheckResult, gradcheck
from ..nn.layer import Layer
from ..optim import SGD
from ..tensor import Tensor


@dataclass(frozen=True)
class LayerTestReport:
    output_shape: tuple
    gradcheck: GradcheckResult | None
    num_parameters: int


def run_layer_test(layer_factory: Callable[[], Layer], input_shape: tuple, *,
                   expected_output_shape: tuple | None = None, input_data=None, backend: str | None = None,
                   check_gradients: bool = True, threshold: float = 1e-7, lr: float = 0.1,
                   seed: int = 0) -> LayerTestReport:
    """Check a layer end to end in float64; raises AssertionError naming the layer and what failed.

    `layer_factory()` builds the layer (called twice: the second copy receives the first's
    state). `input_shape` is the full input shape, batch first; keep it tiny, since every
    input and parameter element is gradient-checked. `input_data` replaces the random
    normal input (e.g. integer indices, which are then not gradient-checked). Checks:
    the output's shape against `output_shape()` (also with a None batch size) and
    `expected_output_shape`; `lamina.gradcheck` of the parameters and the input; a
    state_dict round trip into a fresh layer gives the same output; one SGD step changes
    every parameter that has a non-zero gradient.
    """
    rng = np.random.default_rng(seed)
    with set_default_dtype("float64"), (use_backend(backend) if backend is not None else _nothing()):
        layer = layer_factory()
        label = f"run_layer_test({type(layer).__name__} {getattr(layer, 'name', '?')!r})"
        data = rng.standard_normal(input_shape) if input_data is None else np.asarray(input_data)
        x = Tensor(data, dtype=np.float64 if data.dtype.kind == "f" else data.dtype,
                   backend=_backend_of(layer))

        out = layer(x)
        if not isinstance(out, Tensor):
            raise AssertionError(f"{label}: calling the layer returned {type(out).__name__}, not a Tensor")
        if out.dtype != np.float64:
            raise AssertionError(f"{label}: float64 input and parameters gave a {out.dtype} output")
        if not np.all(np.isfinite(out.numpy())):
            raise AssertionError(f"{label}: the output is not finite")
        _check_shapes(layer, label, tuple(x.shape), tuple(out.shape), expected_output_shape)

        params = dict(layer.named_parameters())
        trainable = {name: p for name, p in params.items() if p.requires_grad}
        upstream = Tensor(rng.standard_normal(out.shape), dtype=np.float64, backend=x.backend)
        result = None
        if check_gradients:
            checked = dict(trainable)
            if x.dtype.kind == "f":
                checked["input"] = x
            if checked:
                result = gradcheck(lambda: (layer(x) * upstream).sum(), checked, threshold=threshold)
                if not result.passed:
                    raise AssertionError(f"{label}: {result}")
            x.requires_grad = False
            x.grad = None

        _check_state_round_trip(layer_factory, layer, label, x)
        _check_training_step(layer, trainable, label, x, upstream, lr)
        return LayerTestReport(tuple(out.shape), result, layer.num_parameters())


def _check_shapes(layer, label, input_shape, actual, expected) -> None:
    declared = tuple(layer.output_shape(input_shape))
    if declared != actual:
        raise AssertionError(f"{label}: output_shape({input_shape}) says {declared} but the output has shape "
                             f"{actual}")
    unbatched = tuple(layer.output_shape((None,) + input_shape[1:]))
    if unbatched != (None,) + actual[1:]:
        raise AssertionError(f"{label}: output_shape({(None,) + input_shape[1:]}) says {unbatched}, expected "
                             f"{(None,) + actual[1:]}")
    if expected is not None and tuple(expected) != actual:
        raise AssertionError(f"{label}: expected output shape {tuple(expected)}, got {actual}")


def _check_state_round_trip(layer_factory, layer, label, x) -> None:
    state = layer.state_dict()
    names = [name for name, _ in layer.named_parameters()]
    if sorted(state) != sorted(names):
        raise AssertionError(f"{label}: state_dict keys {sorted(state)} differ from the parameter names {names}")
    twin = layer_factory()
    twin.load_state_dict(state)
    for name, p in twin.named_parameters():
        if not np.array_equal(p.numpy(), state[name]):
            raise AssertionError(f"{label}: parameter {name!r} differs after load_state_dict")
    layer.eval()
    twin.eval()
    with no_grad():
        a, b = layer(x).numpy(), twin(x).numpy()
    layer.train()
    if not np.allclose(a, b, rtol=1e-12, atol=1e-12):
        raise AssertionError(f"{label}: a fresh layer loaded with the state_dict gives a different output "
                             f"(max abs difference {np.max(np.abs(a - b)):.3e})")


def _check_training_step(layer, trainable, label, x, upstream, lr) -> None:
    if not trainable:
        return
    layer.zero_grad()
    loss = (layer(x) * upstream).sum()
    if not loss.requires_grad:
        raise AssertionError(f"{label}: the output does not depend on any parameter through autograd, so "
                             f"parameters {sorted(trainable)} received no gradient")
    loss.backward()
    before = {}
    for name, p in trainable.items():
        if p.grad is None:
            raise AssertionError(f"{label}: parameter {name!r} received no gradient")
        if tuple(p.grad.shape) != tuple(p.shape):
            raise AssertionError(f"{label}: parameter {name!r} has shape {p.shape} but its gradient {p.grad.shape}")
        before[name] = (p.numpy().copy(), p.grad.numpy().copy())
    SGD(list(trainable.values()), lr=lr).step()
    for name, p in trainable.items():
        old, grad = before[name]
        expected = old - lr * grad
        if not np.allclose(p.numpy(), expected, rtol=1e-10, atol=1e-12):
            raise AssertionError(f"{label}: one SGD step did not move parameter {name!r} to θ - lr·dθ "
                                 f"(max abs difference {np.max(np.abs(p.numpy() - expected)):.3e})")
        if np.any(grad != 0) and np.array_equal(p.numpy(), old):
            raise AssertionError(f"{label}: parameter {name!r} did not change after an SGD step")


def _backend_of(layer):
    from ..backend import get_backend

    params = layer.parameters()
    return params[0].backend if params else get_backend()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
