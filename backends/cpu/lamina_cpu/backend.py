"""The CPU backend: the reference NumPy kernels, with compiled kernels for the hot paths."""
from __future__ import annotations

import numpy as np

from lamina.reference import ReferenceBackend


class CpuBackend(ReferenceBackend):
    name = "cpu"
    description = "NumPy arrays, BLAS matmul and Cython kernels (OpenMP where built with it)"

    def asarray(self, data, dtype):
        return np.array(data, dtype=dtype, copy=True, order="C")
