"""The op registry and the dispatcher that runs an op on its inputs' backend.

An op is defined once here, in the framework: its name, its argument checks, whether it
is *primitive* (every backend must supply a kernel) or *composite* (it has a default
implementation written with other ops, which a backend may replace with a fused kernel),
and sample inputs the conformance suite uses. A kernel is a backend function
`kernel(*arrays, **attrs) -> (out, backprop)` where `backprop(grad_out)` returns one
gradient (or None) per input; non-differentiable ops return `backprop=None`. A kernel of a
composite op may return `NotImplemented` for inputs it does not handle (a dtype, a layout):
the op then runs its default implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import autograd
from ..errors import BackendError, OpError, RegistrationError, UnknownNameError, close_matches
from ..tensor import Tensor

PRIMITIVE = "primitive"
COMPOSITE = "composite"


@dataclass(frozen=True)
class Sample:
    """One input case of an op for the conformance suite: arrays and keyword attributes."""

    inputs: tuple
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    """An operation: `name(*tensors, **attrs)`.

    `check(*tensors, **attrs)` raises OpError/ShapeError for bad arguments. `default`
    (composite ops only) computes the op with other ops. `samples(rng, dtype)` yields
    `Sample`s; `differentiable=False` ops (comparisons, optimizer updates) have no backward.
    `in_place` ops may overwrite their inputs (optimizer updates); tests pass copies.
    """

    name: str
    kind: str
    samples: Callable
    check: Optional[Callable] = None
    default: Optional[Callable] = None
    differentiable: bool = True
    in_place: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.kind not in (PRIMITIVE, COMPOSITE):
            raise RegistrationError(f"op {self.name!r}: kind must be 'primitive' or 'composite', got {self.kind!r}")
        if self.kind == COMPOSITE and self.default is None:
            raise RegistrationError(f"composite op {self.name!r} needs a default implementation")


_ops: dict[str, Op] = {}
_owners: dict[str, str] = {}


def register_op(op: Op, plugin: str = "lamina", override: bool = False) -> None:
    if op.name in _ops and not override:
        raise RegistrationError(f"op {op.name!r} is registered twice: by plugin {_owners[op.name]!r} "
                                f"and by plugin {plugin!r} (pass override=True to replace it)")
    _ops[op.name] = op
    _owners[op.name] = plugin


def get_op(name: str) -> Op:
    _ensure_loaded()
    try:
        return _ops[name]
    except KeyError:
        raise UnknownNameError(f"unknown op {name!r}.{close_matches(name, _ops)}") from None


def all_ops() -> dict[str, Op]:
    """Every registered op by name (the built-in ones and those plugins added)."""
    _ensure_loaded()
    return dict(_ops)


def op_owner(name: str) -> str:
    return _owners[name]


def _ensure_loaded() -> None:
    from ..plugins import get_manager

    get_manager()


def call(name: str, *inputs, **attrs):
    """Run op `name` on tensors `inputs`, recording it for autograd when needed."""
    op = _ops.get(name) or get_op(name)
    backend = inputs[0].backend
    for tensor in inputs[1:]:
        if tensor.backend is not backend:
            raise BackendError(f"{name}: inputs live on different backends "
                               f"({backend.name!r} and {tensor.backend.name!r})")
    if op.check is not None:
        op.check(*inputs, **attrs)
    kernel = backend.kernels.get(name)
    if kernel is None:
        if op.default is None:
            raise BackendError(f"backend {backend.name!r} has no kernel for primitive op {name!r}; "
                               f"every backend must implement it")
        return op.default(*inputs, **attrs)
    if name in backend.kernels_taking_input_mask and autograd.is_grad_enabled():
        attrs["needs_input_grad"] = tuple(t.requires_grad for t in inputs)
    result = kernel(*(t.data for t in inputs), **attrs)
    if result is NotImplemented:        # a fused kernel declining these inputs (dtype, layout)
        if op.default is None:
            raise BackendError(f"backend {backend.name!r}: the kernel of primitive op {name!r} "
                               f"returned NotImplemented; primitives must handle every input")
        attrs.pop("needs_input_grad", None)
        return op.default(*inputs, **attrs)
    out, backprop = result
    if isinstance(out, tuple):
        return tuple(Tensor._wrap(o, backend) for o in out)
    needs_grad = (backprop is not None and autograd.is_grad_enabled()
                  and any(t.requires_grad for t in inputs))
    result = Tensor._wrap(out, backend, requires_grad=needs_grad)
    if needs_grad:
        result._node = autograd.Node(inputs, backprop, name)
    return result


def check_ndim(op: str, arg: str, tensor, ndims) -> None:
    if tensor.ndim not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise OpError(f"{op}: argument {arg!r} must have {expected} dimensions, got shape {tensor.shape}")


def check_float(op: str, arg: str, tensor) -> None:
    if tensor.dtype.kind != "f":
        raise OpError(f"{op}: argument {arg!r} must be a floating tensor, got dtype {tensor.dtype}")
