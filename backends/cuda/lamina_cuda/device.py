"""The device: whether Numba CUDA can run here (a GPU, or Numba's simulator), launch sizes,
and allocation that turns an out-of-memory failure into an error saying what was asked and
what is free.

Numba's simulator (`NUMBA_ENABLE_CUDASIM=1`, read when numba is first imported) runs each
CUDA thread as a Python thread. The kernels are the same there; only the launch sizes differ:
a few threads striding over the data instead of one thread per element.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from lamina.errors import BackendError

from . import memory

memory.install()        # the pool becomes Numba's allocator before any CUDA context exists

#: threads per block of the one-dimensional (elementwise, strided) kernels on a GPU
THREADS = 256
#: the simulator's launch: one block of a few threads, each striding over many elements
SIMULATOR_THREADS = 8


def simulator() -> bool:
    """Whether numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1 at import)."""
    return bool(numba.config.ENABLE_CUDASIM)


def availability() -> tuple[bool, str]:
    """(available, why not): a CUDA GPU numba can use, or the simulator."""
    if simulator():
        return True, ""
    try:
        if cuda.is_available():
            return True, ""
        cuda.current_context()          # raises with the driver's reason
    except Exception as err:            # CudaSupportError, CudaAPIError, a broken driver install
        reason = " ".join(str(err).split()).rstrip(" :")
        return False, f"no usable CUDA GPU ({reason}); set NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's simulator"
    return False, "numba finds no CUDA GPU; set NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's simulator"


def describe() -> str:
    """The device in words, for `lamina backends`."""
    if simulator():
        return "Numba CUDA kernels (simulator: NUMBA_ENABLE_CUDASIM=1)"
    try:
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else device.name
        return f"Numba CUDA kernels on {name} (compute capability {device.compute_capability[0]}.{device.compute_capability[1]})"
    except Exception:
        return "Numba CUDA kernels"


@functools.lru_cache(maxsize=None)
def multiprocessors() -> int:
    """Streaming multiprocessors of the current GPU."""
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def launch_1d(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over n items."""
    if simulator():
        return 1, SIMULATOR_THREADS
    return max(1, min(math.ceil(n / THREADS), 65535)), THREADS


def cooperative_blocks(kernel, args, threads: int, shared_bytes: int) -> int:
    """The most blocks of `threads` that can be resident together running `kernel` on `args` (the size limit of
    a grid that synchronises); 1 in the simulator, which runs a cooperative grid as one block."""
    if simulator():
        return 1
    compiled = kernel.compile(tuple(kernel.typeof_pyval(arg) for arg in args))
    return int(compiled.max_cooperative_grid_blocks(threads, shared_bytes))


# ---- memory ---------------------------------------------------------------------------------------

def empty(shape, dtype):
    """An uninitialised device array; an out-of-memory failure becomes a BackendError with the sizes."""
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    try:
        return cuda.device_array(shape, dtype=dtype)
    except Exception as err:
        raise _memory_error(err, shape, dtype) from err


def to_device(array: np.ndarray):
    array = np.asarray(array, order="C")         # (ascontiguousarray would make 0-d arrays 1-d)
    try:
        return cuda.to_device(array)
    except Exception as err:
        raise _memory_error(err, array.shape, array.dtype) from err


def is_device_array(value) -> bool:
    """Whether `value` is a Numba device array (the simulator's fake ones included)."""
    return hasattr(value, "copy_to_host") and hasattr(value, "shape")


def memory_info() -> tuple[int, int]:
    """(free, total) bytes of device memory."""
    free, total = cuda.current_context().get_memory_info()
    return free, total


def _memory_error(err: Exception, shape, dtype) -> Exception:
    """A BackendError naming the request and the free memory if `err` is CUDA's out-of-memory error, else `err`."""
    if not memory.is_out_of_memory(err):
        return err
    asked = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    try:
        free, total = memory_info()
        state = f"{_bytes(free)} of {_bytes(total)} free"
    except Exception:
        state = "free memory unknown"
    return BackendError(f"cuda: out of device memory allocating an array of shape {tuple(shape)} and dtype "
                        f"{np.dtype(dtype)} ({_bytes(asked)}); {state}")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
