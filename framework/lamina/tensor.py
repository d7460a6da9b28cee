"""`Tensor`: one backend's array plus what autograd needs (requires_grad, grad, the node)."""
from __future__ import annotations

import numbers

import numpy as np

from . import autograd
from .dtypes import get_default_dtype, to_dtype
from .errors import BackendError, LaminaError


class Tensor:
    """An n-dimensional array on a backend, with reverse-mode autograd.

    Build one with `lamina.tensor(data, requires_grad=False, dtype=None)`.
    """

    __slots__ = ("data", "backend", "requires_grad", "grad", "_node", "__weakref__")
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, backend=None):
        from .backend import get_backend

        self.backend = backend if backend is not None else get_backend()
        if isinstance(data, Tensor):
            data = data.numpy()
        dtype = _infer_dtype(data, dtype)
        self.data = self.backend.asarray(data, dtype)
        if requires_grad and self.dtype.kind != "f":
            raise LaminaError(f"only floating tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node = None

    @classmethod
    def _wrap(cls, array, backend, requires_grad: bool = False) -> "Tensor":
        """A tensor around an array the backend already owns (no copy, no checks)."""
        tensor = object.__new__(cls)
        tensor.data = array
        tensor.backend = backend
        tensor.requires_grad = requires_grad
        tensor.grad = None
        tensor._node = None
        return tensor

    # ---- properties -------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.backend.shape(self.data)

    @property
    def dtype(self) -> np.dtype:
        return self.backend.dtype(self.data)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied to the host if the backend is not the CPU)."""
        return self.backend.to_numpy(self.data)

    def item(self):
        if self.size != 1:
            raise LaminaError(f"item(): expected a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=20)
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.dtype}{extra}, backend={self.backend.name!r})"

    def __float__(self) -> float:
        return float(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    # ---- autograd ---------------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Accumulate gradients of this tensor into `.grad` of the leaves it depends on."""
        if not self.requires_grad:
            raise LaminaError("backward(): this tensor does not require grad "
                              "(no input had requires_grad=True, or it was made under no_grad)")
        if grad is None:
            if self.size != 1:
                raise LaminaError(f"backward(): grad can be omitted only for a scalar, got shape {self.shape}")
            grad = self.backend.full(self.shape, 1.0, self.dtype)
        else:
            grad = _as_tensor(grad, self).data
        autograd.backward(self, grad)

    def detach(self) -> "Tensor":
        return Tensor._wrap(self.data, self.backend)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self.requires_grad = requires_grad
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # ---- ops --------------------------------------------------------------------------
    def __add__(self, other): return _call("add", self, _as_tensor(other, self))
    def __radd__(self, other): return _call("add", _as_tensor(other, self), self)
    def __sub__(self, other): return _call("sub", self, _as_tensor(other, self))
    def __rsub__(self, other): return _call("sub", _as_tensor(other, self), self)
    def __mul__(self, other): return _call("mul", self, _as_tensor(other, self))
    def __rmul__(self, other): return _call("mul", _as_tensor(other, self), self)
    def __truediv__(self, other): return _call("div", self, _as_tensor(other, self))
    def __rtruediv__(self, other): return _call("div", _as_tensor(other, self), self)
    def __matmul__(self, other): return _call("matmul", self, _as_tensor(other, self))
    def __rmatmul__(self, other): return _call("matmul", _as_tensor(other, self), self)
    def __neg__(self): return _call("neg", self)
    def __gt__(self, other): return _call("greater", self, _as_tensor(other, self))
    def __lt__(self, other): return _call("greater", _as_tensor(other, self), self)

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Real):
            raise LaminaError(f"power: the exponent must be a Python number, got {type(exponent).__name__}")
        return _call("power", self, exponent=float(exponent))

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.numpy()
        elif isinstance(index, tuple):
            index = tuple(i.numpy() if isinstance(i, Tensor) else i for i in index)
        return _call("getitem", self, index=index)

    def sum(self, axis=None, keepdims: bool = False):
        return _call("sum", self, axis=_axis(axis), keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return _call("mean", self, axis=_axis(axis), keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False):
        return _call("max", self, axis=_axis(axis), keepdims=keepdims)

    def exp(self): return _call("exp", self)
    def log(self): return _call("log", self)
    def tanh(self): return _call("tanh", self)
    def sigmoid(self): return _call("sigmoid", self)
    def relu(self): return _call("relu", self)
    def clip(self, low, high): return _call("clip", self, low=low, high=high)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _call("reshape", self, shape=tuple(int(s) for s in shape))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _call("transpose", self, axes=tuple(axes) if axes else None)

    @property
    def T(self):
        return self.transpose()

    def astype(self, dtype) -> "Tensor":
        dtype = to_dtype(dtype)
        if dtype == self.dtype:
            return self
        return _call("cast", self, dtype=dtype)


def _call(name, *inputs, **attrs):
    from .ops import call

    return call(name, *inputs, **attrs)


def _axis(axis):
    """Reduction axes as the ops take them: None, an int or a tuple of ints (lists and NumPy ints too)."""
    if axis is None or isinstance(axis, int):
        return axis
    if isinstance(axis, np.integer):
        return int(axis)
    return tuple(int(a) for a in axis)


def _infer_dtype(data, dtype) -> np.dtype:
    if dtype is not None:
        return to_dtype(dtype)
    kind = np.asarray(data).dtype.kind if not hasattr(data, "dtype") else np.dtype(data.dtype).kind
    if kind in "iub":
        return np.dtype(np.int64) if kind != "b" else np.dtype(np.bool_)
    return get_default_dtype()


def _as_tensor(value, like: Tensor) -> Tensor:
    """`value` as a tensor on `like`'s backend; plain numbers take `like`'s dtype."""
    if isinstance(value, Tensor):
        if value.backend is not like.backend:
            raise BackendError(f"cannot mix tensors of backends {like.backend.name!r} and "
                               f"{value.backend.name!r} in one op; move one with lamina.tensor(t.numpy())")
        return value
    if isinstance(value, numbers.Number) or (isinstance(value, np.ndarray) and value.dtype.kind in "iuf"):
        dtype = like.dtype if like.dtype.kind == "f" else None
        return Tensor(value, dtype=dtype, backend=like.backend)
    return Tensor(value, backend=like.backend)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new tensor on the current backend. Floats take the default dtype unless `dtype` is given;
    integers stay int64 (labels, indices)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


class Parameter(Tensor):
    """A trainable tensor owned by a layer (requires_grad unless frozen)."""

    __slots__ = ()

    def __init__(self, data, dtype=None, backend=None):
        super().__init__(data, requires_grad=True, dtype=dtype, backend=backend)
