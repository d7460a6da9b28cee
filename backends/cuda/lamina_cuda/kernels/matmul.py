"""The matrix product C = op(A)·op(B), op = identity or transpose, batched with broadcasting.

A block computes a BM×BN tile of C, stepping through K in slices of BK: each slice of A and B is
staged in shared memory, and each thread accumulates a TM×TN sub-tile in registers (rows and
columns strided by the thread grid, so reads of the shared tiles are free of bank conflicts and
the writes of C coalesce). The tile sizes are a `Tiling`; a GPU and the simulator use different
ones (the simulator runs each thread as a Python thread).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from .. import device
from .elementwise import fill
from .geometry import device_vector


@dataclass(frozen=True)
class Tiling:
    BM: int
    BN: int
    BK: int
    TM: int
    TN: int

    @property
    def threads(self) -> int:
        return (self.BM // self.TM) * (self.BN // self.TN)


GPU_TILINGS = {np.dtype(np.float32): Tiling(128, 128, 8, 8, 8), np.dtype(np.float64): Tiling(64, 64, 8, 4, 4)}
SIMULATOR_TILING = Tiling(32, 32, 8, 8, 8)     # few fat blocks: the simulator runs threads as Python threads


def tiling_for(dtype) -> Tiling:
    if device.simulator():
        return SIMULATOR_TILING
    return GPU_TILINGS.get(np.dtype(dtype), Tiling(64, 64, 8, 4, 4))


@lru_cache(maxsize=None)
def gemm_kernel(dtype: np.dtype, tiling: Tiling):
    """The compiled kernel for one dtype and tiling (see the module docstring)."""
    BM, BN, BK, TM, TN = tiling.BM, tiling.BN, tiling.BK, tiling.TM, tiling.TN
    TY, TX, T = BM // TM, BN // TN, tiling.threads
    A_LOADS, B_LOADS = BM * BK // T, BK * BN // T
    if A_LOADS * T != BM * BK or B_LOADS * T != BK * BN:
        raise ValueError(f"tiling {tiling}: each tile must split evenly over {T} threads")
    element = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def kernel(a, b, c, M, N, K, a_offsets, b_offsets, trans_a, trans_b):
        As = cuda.shared.array((BK, BM), element)
        Bs = cuda.shared.array((BK, BN), element)
        acc = cuda.local.array((TM, TN), element)
        a_reg = cuda.local.array(TM, element)
        b_reg = cuda.local.array(TN, element)
        tid = cuda.threadIdx.x
        ty, tx = tid // TX, tid % TX
        z = cuda.blockIdx.z
        row0, col0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        a0, b0, c0 = a_offsets[z], b_offsets[z], z * M * N
        for r in range(TM):
            for q in range(TN):
                acc[r, q] = 0
        for k0 in range(0, K, BK):
            for load in range(A_LOADS):
                index = tid + load * T
                if trans_a:                     # A stored (K, M): consecutive threads read consecutive i
                    i, kk = index % BM, index // BM
                else:                           # A stored (M, K): consecutive threads read consecutive k
                    i, kk = index // BK, index % BK
                gi, gk = row0 + i, k0 + kk
                if gi < M and gk < K:
                    As[kk, i] = a[a0 + gk * M + gi] if trans_a else a[a0 + gi * K + gk]
                else:
                    As[kk, i] = 0
            for load in range(B_LOADS):
                index = tid + load * T
                if trans_b:                     # B stored (N, K)
                    j, kk = index // BK, index % BK
                else:                           # B stored (K, N)
                    j, kk = index % BN, index // BN
                gj, gk = col0 + j, k0 + kk
                if gj < N and gk < K:
                    Bs[kk, j] = b[b0 + gj * K + gk] if trans_b else b[b0 + gk * N + gj]
                else:
                    Bs[kk, j] = 0
            cuda.syncthreads()
            for kk in range(BK):
                for r in range(TM):
                    a_reg[r] = As[kk, ty + r * TY]
                for q in range(TN):
                    b_reg[q] = Bs[kk, tx + q * TX]
                for r in range(TM):
                    for q in range(TN):
                        acc[r, q] += a_reg[r] * b_reg[q]
            cuda.syncthreads()
        for r in range(TM):
            gi = row0 + ty + r * TY
            if gi < M:
                for q in range(TN):
                    gj = col0 + tx + q * TX
                    if gj < N:
                        c[c0 + gi * N + gj] = acc[r, q]

    return kernel


@lru_cache(maxsize=1024)
def _batch_offsets(batch_shape: tuple, operand_batch: tuple, matrix_size: int):
    """Device vector: the offset of each (broadcast) batch's matrix in an operand."""
    count = int(np.prod(operand_batch, dtype=np.int64))
    index = np.broadcast_to(np.arange(count, dtype=np.int64).reshape(operand_batch), batch_shape)
    return device_vector(tuple(int(v) * matrix_size for v in index.ravel()))


def gemm(a, b, trans_a: bool = False, trans_b: bool = False, tiling: Tiling | None = None):
    """op(a) @ op(b) over the broadcast batch axes; op transposes the last two axes where asked."""
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    M, K = (a_shape[-1], a_shape[-2]) if trans_a else (a_shape[-2], a_shape[-1])
    N = b_shape[-2] if trans_b else b_shape[-1]
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    count = int(np.prod(batch, dtype=np.int64))
    out = device.empty(batch + (M, N), np.result_type(a.dtype, b.dtype))
    if out.size == 0:
        return out
    if K == 0:
        return fill(out, 0)
    tiling = tiling or tiling_for(out.dtype)
    a_offsets = _batch_offsets(batch, a_shape[:-2], M * K)
    b_offsets = _batch_offsets(batch, b_shape[:-2], K * N)
    grid = ((N + tiling.BN - 1) // tiling.BN, (M + tiling.BM - 1) // tiling.BM, count)
    gemm_kernel(np.dtype(out.dtype), tiling)[grid, tiling.threads](
        a.reshape(a.size), b.reshape(b.size), out.reshape(out.size), M, N, K, a_offsets, b_offsets,
        bool(trans_a), bool(trans_b))
    return out
