"""Reverse-mode automatic differentiation over the graph that ops record.

Each differentiable op call leaves a `Node` on its output: the input tensors and a
`backprop(grad_out) -> grads_in` closure from the backend kernel. `backward` walks the
graph in reverse topological order, reduces broadcast gradients back to each input's
shape (the one place that policy lives) and accumulates `.grad` on leaves.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from .tensor import Tensor

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


class no_grad:
    """Context manager (and decorator) in which ops record no graph: for inference and updates."""

    def __enter__(self):
        self._previous = is_grad_enabled()
        _state.enabled = False
        return self

    def __exit__(self, *exc):
        _state.enabled = self._previous
        return False

    def __call__(self, fn):
        mode = type(self)        # no_grad or enable_grad, whichever decorates

        def wrapper(*args, **kwargs):
            with mode():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapped")
        wrapper.__doc__ = fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Re-enable graph recording inside a `no_grad` block."""

    def __enter__(self):
        self._previous = is_grad_enabled()
        _state.enabled = True
        return self


class Node:
    """How a tensor was made: its inputs and the closure mapping grad_out to input grads."""

    __slots__ = ("inputs", "backprop", "op")

    def __init__(self, inputs: Sequence["Tensor"], backprop: Callable, op: str):
        self.inputs = tuple(inputs)
        self.backprop = backprop
        self.op = op


def _topological_order(root: "Tensor") -> list["Tensor"]:
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in tensor._node.inputs:
                if parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
    return order


def unbroadcast(backend, grad, shape: tuple):
    """Sum `grad` over the axes along which an input of `shape` was broadcast."""
    grad_shape = backend.shape(grad)
    if grad_shape == shape:
        return grad
    lead = len(grad_shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad_shape[lead + i] != 1
    )
    if axes:
        grad = backend.run("sum", grad, axis=axes, keepdims=False)
    if backend.shape(grad) != shape:
        grad = backend.run("reshape", grad, shape=shape)
    return grad


def _owner(array):
    """The array whose memory `array` uses (a view's base; NumPy/CuPy-style `.base`), else itself."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _copy(backend, array):
    """A fresh array equal to `array`, computed on the backend (so it stays on its device)."""
    return backend.run("mul", array, backend.full((), 1.0, backend.dtype(array)))


def backward(root: "Tensor", grad) -> None:
    """Accumulate d(root)/d(leaf) * grad into `.grad` of every leaf that requires grad."""
    from .tensor import Tensor

    backend = root.backend
    grads = {id(root): grad}
    handed_out = {id(_owner(grad))}     # buffers the caller or a leaf's .grad already holds
    for tensor in reversed(_topological_order(root)):
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        node = tensor._node
        if node is None:
            if tensor.requires_grad:
                if tensor.grad is None:
                    if id(_owner(g)) in handed_out:
                        g = _copy(backend, g)
                    handed_out.add(id(_owner(g)))
                    tensor.grad = Tensor._wrap(g, backend)
                else:
                    tensor.grad = Tensor._wrap(backend.run("add", tensor.grad.data, g), backend)
            continue
        input_grads = node.backprop(g)
        for parent, pg in zip(node.inputs, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            pg = unbroadcast(backend, pg, parent.shape)
            if backend.dtype(pg) != parent.dtype:
                pg = backend.run("cast", pg, dtype=parent.dtype)
            previous = grads.get(id(parent))
            grads[id(parent)] = pg if previous is None else backend.run("add", previous, pg)
