"""The CUDA backend's device memory pool (lamina_cuda.memory): size classes, reuse of freed blocks,
release on out-of-memory, and the Numba EMM plugin around it. The plugin runs in a child process
without Numba's simulator (Numba's driver classes do not exist under it), over a fake raw allocator,
so no GPU is needed; tests/test_cuda_backend.py runs the backend itself."""
import os
import subprocess
import sys
import textwrap

import pytest

from lamina_cuda import memory
from lamina_cuda.memory import MIN_BLOCK, BlockCache, block_size


class OutOfMemory(Exception):
    code = 2          # CUDA_ERROR_OUT_OF_MEMORY


class FakeDevice:
    """A raw allocator with `capacity` bytes: handles are consecutive integers."""

    def __init__(self, capacity=1 << 20):
        self.capacity, self.live, self.next_handle, self.calls = capacity, {}, 1, []

    def allocate(self, size):
        self.calls.append(("allocate", size))
        if sum(self.live.values()) + size > self.capacity:
            raise OutOfMemory("CUDA_ERROR_OUT_OF_MEMORY")
        handle, self.next_handle = self.next_handle, self.next_handle + 1
        self.live[handle] = size
        return handle

    def release(self, handle):
        self.calls.append(("release", handle))
        del self.live[handle]


@pytest.mark.parametrize("nbytes, size", [(0, MIN_BLOCK), (1, MIN_BLOCK), (512, 512), (513, 640), (640, 640),
                                          (641, 768), (1000, 1024), (1025, 1280), (3 << 20, 3 << 20),
                                          ((3 << 20) + 1, (7 << 20) // 2)])
def test_block_sizes_are_at_most_a_quarter_larger(nbytes, size):
    assert block_size(nbytes) == size
    assert nbytes <= size <= max(MIN_BLOCK, nbytes * 1.25)


def test_a_freed_block_serves_the_next_request_of_its_class():
    device = FakeDevice()
    cache = BlockCache(device.allocate, device.release)
    size, first = cache.take(1000)
    assert size == 1024 and cache.stats() == {"used_bytes": 1024, "free_bytes": 0, "allocations": 1, "reuses": 0}
    cache.give(size, first)
    assert cache.take(1020) == (1024, first)                   # same class: reused, no raw allocation
    assert cache.take(1020)[1] != first                         # the block is taken: a new one
    assert cache.take(5000)[0] == 5120                          # another class never reuses it
    assert cache.stats() == {"used_bytes": 1024 * 2 + 5120, "free_bytes": 0, "allocations": 3, "reuses": 1}


def test_out_of_memory_releases_free_blocks_and_retries():
    device = FakeDevice(capacity=4096)
    cache = BlockCache(device.allocate, device.release)
    blocks = [cache.take(1024) for _ in range(4)]
    for size, handle in blocks[:3]:
        cache.give(size, handle)
    size, handle = cache.take(3000)                             # 3072: the free 1024s must go first
    assert size == 3072 and cache.free_bytes == 0 and sorted(device.live.values()) == [1024, 3072]
    with pytest.raises(OutOfMemory):                            # nothing left to release: the error stands
        cache.take(1024)


def test_release_free_hands_blocks_back_to_the_device():
    device = FakeDevice()
    cache = BlockCache(device.allocate, device.release)
    kept, returned = cache.take(100), cache.take(100)
    cache.give(*returned)
    cache.release_free()
    assert list(device.live) == [kept[1]] and cache.free_bytes == 0 and cache.used_bytes == MIN_BLOCK


def test_errors_other_than_out_of_memory_are_not_retried():
    def broken(size):
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE")
    cache = BlockCache(broken, lambda handle: None)
    with pytest.raises(RuntimeError, match="INVALID_VALUE"):
        cache.take(10)


def test_is_out_of_memory():
    assert memory.is_out_of_memory(OutOfMemory())
    assert memory.is_out_of_memory(RuntimeError("[CUresult.CUDA_ERROR_OUT_OF_MEMORY] cuMemAlloc failed"))
    assert not memory.is_out_of_memory(RuntimeError("CUDA_ERROR_INVALID_VALUE"))


def test_the_simulator_has_no_pool():
    assert memory.install() is False and memory.stats() == {}
    memory.empty_cache()                                        # nothing to do, no error


PLUGIN_CHECK = textwrap.dedent("""
    import gc, logging
    from numba import cuda
    from numba.cuda.cudadrv import driver
    from lamina_cuda import memory
    from test_cuda_memory import FakeDevice

    driver._logger = logging.getLogger("numba.cuda.cudadrv.driver")    # set when a real driver initialises
    Manager = memory._manager_class()
    cuda.set_memory_manager(Manager)                   # Numba checks the plugin's interface version
    class Context:                                     # the manager keeps a weak proxy of its context
        pass
    context = Context()
    manager = Manager(context=context)
    device = FakeDevice()
    manager.cache = memory.BlockCache(device.allocate, device.release)
    manager.initialize()                               # keeps the cache it has

    owned = manager.memalloc(1000)
    first = int(owned.handle)
    assert owned.size == 1000 and manager.cache.used_bytes == 1024
    del owned; gc.collect()                            # the array's last reference dies: the block returns
    assert manager.cache.stats() == {"used_bytes": 0, "free_bytes": 1024, "allocations": 1, "reuses": 0}
    again = manager.memalloc(900)
    assert int(again.handle) == first and manager.cache.reuses == 1 and device.calls == [("allocate", 1024)]

    with manager.defer_cleanup():                      # held back while Numba defers cleanup
        del again; gc.collect()
        assert manager.cache.free_bytes == 0
    manager.deallocations.clear()
    assert manager.cache.free_bytes == 1024

    manager.reset()                                    # free blocks go back to the device
    assert device.live == {} and manager.cache is None
    print("plugin ok")
""")


def run_without_simulator(code: str, **environment) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "LAMINA_CUDA_MEMORY_POOL")}
    env.update(environment, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_numba_plugin_reuses_blocks_outside_the_simulator():
    assert "plugin ok" in run_without_simulator(PLUGIN_CHECK)


INSTALLED = ("import lamina_cuda.device; from numba.cuda.cudadrv import driver; "
             "driver._ensure_memory_manager(); print(driver._memory_manager.__name__)")    # Numba's, if none set


@pytest.mark.parametrize("setting, manager", [(None, "PooledMemoryManager"), ("0", "NumbaCUDAMemoryManager"),
                                              ("off", "NumbaCUDAMemoryManager")])
def test_importing_the_backend_installs_the_pool_unless_told_not_to(setting, manager):
    """Installed when lamina_cuda.device is imported (before any context exists); no GPU is needed for that."""
    environment = {} if setting is None else {"LAMINA_CUDA_MEMORY_POOL": setting}
    assert run_without_simulator(INSTALLED, **environment).split()[-1] == manager
