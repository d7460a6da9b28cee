"""The backend interface and the selection of the current backend.

A backend is a named compute engine: it says whether it is available, moves data to and
from NumPy, allocates, draws seeded random numbers, and supplies kernels for ops (methods
marked `@kernel("op_name")`, plus kernels plugins register for it). Backends are found
only through the plugin manager; this module imports none by name.
"""
from __future__ import annotations

import abc
import contextvars
import inspect
from typing import Callable

import numpy as np

from .errors import BackendError, close_matches


def kernel(op_name: str) -> Callable:
    """Mark a Backend method as the kernel of op `op_name`: `(self, *arrays, **attrs) -> (out, backprop)`."""

    def mark(fn):
        fn._lamina_kernel = op_name
        return fn

    return mark


class Backend(abc.ABC):
    """Base class of every backend. Subclasses set `name` and implement the abstract methods
    plus a `@kernel` for each primitive op (see `lamina.ops.PRIMITIVE_OPS`)."""

    name: str = ""
    description: str = ""

    def __init__(self, seed: int | None = None):
        self.kernels: dict[str, Callable] = {}
        #: ops whose kernel takes `needs_input_grad` (see `add_kernel`)
        self.kernels_taking_input_mask: set[str] = set()
        for klass in reversed(type(self).__mro__):
            for attr, value in vars(klass).items():
                op_name = getattr(value, "_lamina_kernel", None)
                if op_name is not None:
                    self.add_kernel(op_name, getattr(self, attr))
        self.manual_seed(seed)

    # ---- availability ----------------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason it is not). Override to probe hardware or drivers."""
        return True, ""

    # ---- data movement and allocation ---------------------------------------------------
    @abc.abstractmethod
    def asarray(self, data, dtype: np.dtype):
        """A backend array holding `data` (NumPy array, nested lists or scalar) as `dtype`."""

    @abc.abstractmethod
    def to_numpy(self, array) -> np.ndarray:
        """The array's values as a NumPy array on the host."""

    def shape(self, array) -> tuple:
        return tuple(array.shape)

    def dtype(self, array) -> np.dtype:
        return np.dtype(array.dtype)

    def full(self, shape, value, dtype):
        return self.asarray(np.full(shape, value, dtype=dtype), dtype)

    def zeros(self, shape, dtype):
        return self.full(shape, 0.0, dtype)

    # ---- randomness (seeded per backend; override to draw on the device) -------------------
    def manual_seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)

    def rng_state(self):
        """The generator's state as JSON-able data (checkpoints store it so resumed runs match)."""
        return self._rng.bit_generator.state

    def set_rng_state(self, state) -> None:
        self._rng.bit_generator.state = state

    def random_normal(self, shape, dtype, scale: float = 1.0):
        return self.asarray(self._rng.standard_normal(shape) * scale, dtype)

    def random_uniform(self, shape, dtype, low: float = 0.0, high: float = 1.0):
        return self.asarray(self._rng.uniform(low, high, shape), dtype)

    # ---- kernels ---------------------------------------------------------------------------
    def add_kernel(self, op_name: str, fn: Callable) -> None:
        """Install a kernel `fn(*arrays, **attrs) -> (out, backprop)` (used by plugins). A kernel with a
        keyword parameter `needs_input_grad` is told, when autograd records it, which inputs require
        grad (one bool each), so that its backprop may return None for the others and skip their work."""
        self.kernels[op_name] = fn
        if _takes_input_mask(fn):
            self.kernels_taking_input_mask.add(op_name)
        else:
            self.kernels_taking_input_mask.discard(op_name)

    def run(self, op_name: str, *arrays, **attrs):
        """Forward of a kernel on raw arrays, without autograd (for framework internals)."""
        try:
            fn = self.kernels[op_name]
        except KeyError:
            raise BackendError(f"backend {self.name!r} has no kernel for primitive op {op_name!r}") from None
        return fn(*arrays, **attrs)[0]

    def missing_primitives(self) -> list[str]:
        from .ops import PRIMITIVE, all_ops

        return sorted(n for n, op in all_ops().items() if op.kind == PRIMITIVE and n not in self.kernels)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _takes_input_mask(fn: Callable) -> bool:
    try:
        return "needs_input_grad" in inspect.signature(fn).parameters
    except (TypeError, ValueError):      # a builtin or extension function without a signature
        return False


# ---- selection ------------------------------------------------------------------------------
_instances: dict[str, Backend] = {}
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("lamina_backend", default=None)
_seed: int | None = None


def backend_names() -> list[str]:
    from .plugins import get_manager

    return sorted(get_manager().backends)


def load_backend(name: str) -> Backend:
    """The (cached) instance of backend `name`; a clear BackendError if unknown or unavailable."""
    if name in _instances:
        return _instances[name]
    from .plugins import get_manager

    manager = get_manager()
    entry = manager.backends.get(name)
    if entry is None:
        raise BackendError(f"unknown backend {name!r}.{close_matches(name, manager.backends)} "
                           f"Available: {_describe(manager)}")
    available, reason = entry.factory.availability()
    if not available:
        raise BackendError(f"backend {name!r} (from plugin {entry.plugin!r}) is not available: {reason}. "
                           f"Available: {_describe(manager)}")
    instance = entry.factory(seed=_seed)
    for op_name, fn in manager.kernels.get(name, {}).items():
        instance.add_kernel(op_name, fn)
    _instances[name] = instance
    return instance


def _describe(manager) -> str:
    parts = []
    for name, entry in sorted(manager.backends.items()):
        ok, reason = entry.factory.availability()
        parts.append(name if ok else f"{name} (unavailable: {reason})")
    return ", ".join(parts) or "none"


def get_backend() -> Backend:
    """The current backend: the innermost `use_backend`, else the configured one (`lamina config`)."""
    name = _current.get()
    if name is None:
        from .config import resolve

        name = resolve().backend.value
    return load_backend(name)


class use_backend:
    """Select the backend for new tensors and layers: `lamina.use_backend("cpu")`, or as
    `with lamina.use_backend("cuda"): ...` to select it only inside the block."""

    def __init__(self, name: str):
        load_backend(name)              # fail now, with the reason, if it cannot be used
        self.name = name
        self._token = _current.set(name)

    def __enter__(self):
        return load_backend(self.name)

    def __exit__(self, *exc):
        _current.reset(self._token)
        return False


def manual_seed(seed: int) -> None:
    """Seed the random generator of every backend loaded now or later."""
    global _seed
    _seed = seed
    for instance in _instances.values():
        instance.manual_seed(seed)
