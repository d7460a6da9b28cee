"""The default floating dtype: float32 unless set otherwise (gradient checks use float64)."""
from __future__ import annotations

import numpy as np

from .errors import LaminaError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_default = np.dtype(np.float32)


def to_dtype(dtype) -> np.dtype:
    """Normalise "float64", np.float64, np.dtype(...) to an np.dtype."""
    try:
        return np.dtype(dtype)
    except TypeError as err:
        raise LaminaError(f"unknown dtype {dtype!r}; expected e.g. 'float32' or 'float64'") from err


def get_default_dtype() -> np.dtype:
    return _default


class set_default_dtype:
    """Set the default float dtype; also a context manager that restores the previous one.

    >>> with lamina.set_default_dtype("float64"):
    ...     layer = lamina.nn.Dense(3, 2)   # float64 parameters
    """

    def __init__(self, dtype):
        global _default
        dtype = to_dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise LaminaError(f"set_default_dtype: expected float32 or float64, got {dtype}")
        self._previous = _default
        _default = dtype

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _default
        _default = self._previous
        return False
