"""The device memory pool: blocks freed by dead arrays are kept by size class and handed to the next
arrays of that class, so a training step draws on the pool instead of calling cuMemAlloc and cuMemFree
(which waits for the device) for every intermediate array.

It is Numba's external memory manager (an EMM plugin, `PooledMemoryManager`), installed by
`install()` before the CUDA context exists; `LAMINA_CUDA_MEMORY_POOL=0`, or a manager named in
`NUMBA_CUDA_MEMORY_MANAGER`, keeps it out. Every kernel and copy of the backend runs on the default
stream, so work already queued on a block that is handed out again runs before the new owner's work.
Returned blocks go through Numba's deferred-deallocation queue, which `defer_cleanup` holds back as for
Numba's own allocator. Under the simulator there is no device memory to pool: `install` does nothing.
"""
from __future__ import annotations

import os
import weakref

#: the smallest block, and the granularity of small requests
MIN_BLOCK = 512
#: size classes per doubling above MIN_BLOCK: a block is at most 1/4 larger than the request
CLASSES_PER_DOUBLING = 4


def block_size(nbytes: int) -> int:
    """The size class of a request: MIN_BLOCK, or 2ᵏ·(1 + j/4) for the smallest such size ≥ nbytes."""
    if nbytes <= MIN_BLOCK:
        return MIN_BLOCK
    step = max(1, (1 << (int(nbytes - 1).bit_length() - 1)) // CLASSES_PER_DOUBLING)
    return -(-nbytes // step) * step


def is_out_of_memory(err: Exception) -> bool:
    """Whether `err` is the CUDA driver's CUDA_ERROR_OUT_OF_MEMORY (code 2)."""
    code = getattr(err, "code", None)
    return (code is not None and int(code) == 2) or "OUT_OF_MEMORY" in str(err)


class BlockCache:
    """Free device blocks by size class over a raw allocator.

    `take(nbytes)` returns (size class, handle), reusing a free block of the class or allocating one;
    when the device is out of memory it releases every free block and tries once more. `give` returns
    a block; `release_free` hands the free blocks back to the device."""

    def __init__(self, allocate, release):
        self._allocate, self._release = allocate, release
        self._free: dict[int, list] = {}
        self.free_bytes = 0          # in free blocks, held for reuse
        self.used_bytes = 0          # in blocks handed out
        self.allocations = 0         # raw allocations made
        self.reuses = 0              # requests served from a free block

    def take(self, nbytes: int):
        size = block_size(nbytes)
        blocks = self._free.get(size)
        if blocks:
            handle = blocks.pop()
            self.free_bytes -= size
            self.reuses += 1
        else:
            try:
                handle = self._allocate(size)
            except Exception as err:
                if not (is_out_of_memory(err) and self.free_bytes):
                    raise
                self.release_free()
                handle = self._allocate(size)
            self.allocations += 1
        self.used_bytes += size
        return size, handle

    def give(self, size: int, handle) -> None:
        self._free.setdefault(size, []).append(handle)
        self.free_bytes += size
        self.used_bytes -= size

    def release_free(self) -> None:
        for blocks in self._free.values():
            for handle in blocks:
                self._release(handle)
        self._free.clear()
        self.free_bytes = 0

    def stats(self) -> dict:
        return {"used_bytes": self.used_bytes, "free_bytes": self.free_bytes,
                "allocations": self.allocations, "reuses": self.reuses}


def _manager_class():
    """The EMM plugin class (built on first use: Numba's driver classes do not exist under the simulator)."""
    from numba import cuda
    from numba.cuda.cudadrv import driver as numba_driver

    class PooledMemoryManager(cuda.GetIpcHandleMixin, cuda.HostOnlyCUDAMemoryManager):
        """Numba's on-device allocations through a `BlockCache` over cuMemAlloc / cuMemFree."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cache = None

        def initialize(self):
            if self.cache is None:
                driver = numba_driver.driver
                self.cache = BlockCache(driver.cuMemAlloc, driver.cuMemFree)

        def memalloc(self, size):
            block, pointer = self.cache.take(size)
            key = int(pointer)
            allocations, deallocations, cache = self.allocations, self.deallocations, self.cache

            def give_back(handle):
                cache.give(block, handle)

            def finalize():
                allocations.pop(key, None)
                deallocations.add_item(give_back, pointer, block)

            memory = numba_driver.AutoFreePointer(weakref.proxy(self.context), pointer, size, finalizer=finalize)
            allocations[key] = memory
            return memory.own()

        def get_memory_info(self):
            free, total = numba_driver.driver.cuMemGetInfo()
            return cuda.MemoryInfo(free=free, total=total)

        def reset(self):
            super().reset()
            if self.cache is not None:
                self.cache.release_free()
            self.cache = None

        @property
        def interface_version(self):
            return 1

    return PooledMemoryManager


_installed = None


def install() -> bool:
    """Make the pool Numba's memory manager (see the module docstring); whether it is installed."""
    global _installed
    import numba

    if _installed is not None:
        return _installed
    wanted = os.environ.get("LAMINA_CUDA_MEMORY_POOL", "1").strip().lower() not in ("0", "false", "no", "off")
    _installed = bool(wanted and not numba.config.ENABLE_CUDASIM and numba.config.CUDA_MEMORY_MANAGER == "default")
    if _installed:
        from numba import cuda

        cuda.set_memory_manager(_manager_class())
    return _installed


def _current_manager():
    from numba import cuda

    manager = cuda.current_context().memory_manager
    return manager if getattr(manager, "cache", None) is not None else None


def stats() -> dict:
    """The pool's counters (bytes used and held free, raw allocations, reuses), or {} without the pool."""
    if not _installed:
        return {}
    manager = _current_manager()
    return manager.cache.stats() if manager else {}


def empty_cache() -> None:
    """Hand the pool's free blocks back to the device (as torch.cuda.empty_cache)."""
    if not _installed:
        return
    manager = _current_manager()
    if manager:
        manager.deallocations.clear()          # blocks of arrays already dead return to the pool first
        manager.cache.release_free()
