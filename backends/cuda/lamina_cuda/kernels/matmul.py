"""The matrix product C = op(A)·op(B), op = identity or transpose, batched with broadcasting.

A block computes a BM×BN tile of C, stepping through K in slices of BK. Each slice of A and B goes
through registers into one of two shared buffers while the threads multiply the other (one barrier
per slice). Each thread accumulates a TM×TN sub-tile in registers: its rows are TM/V runs of V
consecutive rows (V elements = 16 bytes), the runs a block-width apart, and so are its columns, so
each step of k reads its fragments with 128-bit shared loads free of bank conflicts. The shared rows
are padded by V elements, which keeps the stores of slices read along k free of conflicts too.
The tile sizes are a `Tiling`; a GPU and the simulator use different ones (the simulator runs each
thread as a Python thread).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda, uint32, uint64

from .. import device
from .elementwise import add, fill
from .geometry import device_vector

#: bytes one shared load reads per thread (ld.shared.v4 of float32, v2 of float64)
VECTOR_BYTES = 16
#: how a product's tile is written (see `gemm_kernel`)
EPILOGUES = ("store", "bias", "bias_gradient")


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


#: per dtype, the GPU's tilings from the most work per thread to the least
GPU_TILINGS = {np.dtype(np.float32): (Tiling(128, 128, 8, 8, 8), Tiling(128, 64, 8, 8, 4), Tiling(64, 128, 8, 4, 8),
                                      Tiling(64, 64, 8, 4, 4), Tiling(32, 32, 8, 4, 4)),
               np.dtype(np.float64): (Tiling(64, 64, 8, 4, 4), Tiling(32, 32, 8, 4, 4))}
OTHER_TILINGS = (Tiling(64, 64, 8, 4, 4), Tiling(32, 32, 8, 4, 4))
SIMULATOR_TILING = Tiling(16, 16, 8, 4, 4)     # few threads: the simulator runs each as a Python thread
#: the share of a grid's tiles that must hold results for a tiling to be taken without comparison
USEFUL_SHARE = 0.75


def blocks(tiling: Tiling, M: int, N: int, batches: int = 1) -> int:
    """Blocks of the launch grid for an (M, N) result over `batches`."""
    return -(-M // tiling.BM) * -(-N // tiling.BN) * batches


def useful_share(tiling: Tiling, M: int, N: int) -> float:
    """M·N over the area of the tiles covering it (the rest is padding computed for nothing)."""
    return M * N / (-(-M // tiling.BM) * tiling.BM * -(-N // tiling.BN) * tiling.BN)


def tiling_for(dtype, M: int | None = None, N: int | None = None, batches: int = 1) -> Tiling:
    """The tiling for an (M, N) product. Of the tilings whose grid covers every multiprocessor: the
    first (most work per thread) whose tiles are at least USEFUL_SHARE results, else the least padded;
    if none covers them, the smallest (a small product is bound by latency, not by arithmetic: more,
    smaller blocks finish it sooner). Without a shape, the first."""
    if device.simulator():
        return SIMULATOR_TILING
    tilings = GPU_TILINGS.get(np.dtype(dtype), OTHER_TILINGS)
    if M is None or N is None:
        return tilings[0]
    covering = [t for t in tilings if blocks(t, M, N, batches) >= device.multiprocessors()]
    if not covering:
        return tilings[-1]
    return next((t for t in covering if useful_share(t, M, N) >= USEFUL_SHARE),
                max(covering, key=lambda t: useful_share(t, M, N)))


class SliceLoader(NamedTuple):
    """Device functions moving one BK×width slice of an operand, global → registers → shared, for `gemm_kernel`.

    begin(state, x0, first, extent, K, tid, geometry) sets up a thread's `state` (a local int32 array of shape
    `state`) for the operand of batch origin x0, whose rows first… of `extent` the block covers; then
    load(x, state, x0, first, k0, extent, K, tid, staged, geometry) reads the slice at k0 (called for k0 = 0, BK,
    2·BK, … in turn) into `loads` registers, 0 outside the operand, and store(staged, tid, shared, buffer) puts
    them in shared memory, as As[buffer, k, i]. `geometry` is a tuple of ints a loader may read."""
    loads: int
    state: tuple
    begin: object
    load: object
    store: object


def slice_origin(width: int, BK: int, k_contiguous: bool):
    """Device function: (i, kk) of a thread's first element in a slice. Consecutive threads take consecutive
    addresses of a (width, K) row-major operand when `k_contiguous`, else of a (K, width) one."""
    @cuda.jit(device=True, inline=True)
    def origin(tid):
        if k_contiguous:
            return tid // BK, tid % BK
        return tid % width, tid // width

    return origin


def slice_steps(width: int, BK: int, T: int, k_contiguous: bool) -> tuple[int, int, int]:
    """(loads per thread, rows of the operand between them, steps of k between them)."""
    return (width * BK // T,) + ((T // BK, 0) if k_contiguous else (0, T // width))


def slice_store(width: int, BK: int, T: int, k_contiguous: bool):
    """Device function putting a thread's staged elements of a slice in shared memory."""
    LOADS, ROW_STEP, K_STEP = slice_steps(width, BK, T, k_contiguous)
    origin = slice_origin(width, BK, k_contiguous)

    @cuda.jit(device=True, inline=True)
    def store(staged, tid, shared, buffer):
        i, kk = origin(tid)
        for l in range(LOADS):
            shared[buffer, uint64(kk + l * K_STEP), uint64(i + l * ROW_STEP)] = staged[l]

    return store


def dense_loader(width: int, BK: int, T: int, k_contiguous: bool) -> SliceLoader:
    """The `SliceLoader` of an operand in memory: (width, K) row-major when `k_contiguous` (A, or Bᵀ stored),
    else (K, width), from flat element x0 of x. A thread's loads lie a fixed step apart: T/BK rows of the
    operand, or T/width rows of K. It needs no state."""
    return _stored_loader(width, BK, T, k_contiguous, ones_row=False)


def ones_row_loader(width: int, BK: int, T: int, k_contiguous: bool) -> SliceLoader:
    """The `SliceLoader` of A with a last row of ones appended: of its `extent` rows the first extent − 1 are the
    operand, stored as `dense_loader` reads it (A = Xᵀ of a stored X when not `k_contiguous`). The product's
    last row is then 1ᵀ·B, the column sums of B: a dense layer's [dW; db] = [X | 1]ᵀ·G at once."""
    return _stored_loader(width, BK, T, k_contiguous, ones_row=True)


def _stored_loader(width: int, BK: int, T: int, k_contiguous: bool, ones_row: bool) -> SliceLoader:
    LOADS, ROW_STEP, K_STEP = slice_steps(width, BK, T, k_contiguous)
    origin = slice_origin(width, BK, k_contiguous)
    APPENDED = 1 if ones_row else 0

    @cuda.jit(device=True, inline=True)
    def begin(state, x0, first, extent, K, tid, geometry):
        return

    @cuda.jit(device=True, inline=True)
    def load(x, state, x0, first, k0, extent, K, tid, staged, geometry):
        i, kk = origin(tid)
        gi, gk, rows = first + i, k0 + kk, extent - APPENDED          # rows stored
        if k_contiguous:
            at, step = x0 + gi * K + gk, ROW_STEP * K
        else:
            at, step = x0 + gk * rows + gi, K_STEP * rows
        for l in range(LOADS):
            if gi + l * ROW_STEP < rows and gk + l * K_STEP < K:
                staged[l] = x[uint64(at + l * step)]        # unsigned: no negative-index wraparound
            elif ones_row and gi + l * ROW_STEP == rows and gk + l * K_STEP < K:
                staged[l] = 1
            else:
                staged[l] = 0

    return SliceLoader(LOADS, (1,), begin, load, slice_store(width, BK, T, k_contiguous))


@lru_cache(maxsize=None)
def gemm_kernel(dtype: np.dtype, tiling: Tiling, trans_a: bool, trans_b: bool, epilogue: str = "store",
                a_loader=dense_loader):
    """The compiled kernel for one dtype, tiling and pair of transpositions (see the module docstring);
    `epilogue` says how a tile is written: "store" as it is, "bias" adding bias[j] to every row (a dense layer's
    Z = X·W + b in one pass), "bias_gradient" the product's last row into `bias` and the others into C (with
    `ones_row_loader`, a dense layer's dW and db from one product, as cuBLASLt's BGRADB epilogue);
    `a_loader` makes the `SliceLoader` of A (a product whose A is computed as it is read, as a convolution's
    columns, passes its own).

    Launch it on grid (⌈N/BN⌉, ⌈M/BM⌉, batches) with `tiling.threads` threads:
    kernel(a, b, c, bias, M, N, K, a_offsets, b_offsets, geometry), the operands flat, bias a vector of N per batch
    (any array of the dtype when unused), the offsets per batch and `geometry` a tuple of ints for A's loader."""
    if epilogue not in EPILOGUES:
        raise ValueError(f"gemm_kernel: epilogue must be one of {', '.join(EPILOGUES)}, got {epilogue!r}")
    ADD_BIAS, SPLIT = epilogue == "bias", epilogue == "bias_gradient"
    BM, BN, BK, TM, TN = tiling.BM, tiling.BN, tiling.BK, tiling.TM, tiling.TN
    TY, TX, T = BM // TM, BN // TN, tiling.threads
    V = math.gcd(max(1, VECTOR_BYTES // np.dtype(dtype).itemsize), TM, TN)     # elements per run
    if T % BK or T % BM or T % BN or BK & (BK - 1):
        raise ValueError(f"tiling {tiling}: its {T} threads must be a multiple of BK, BM and BN, and BK a power of two")
    ROW_RUNS, COLUMN_RUNS = TM // V, TN // V
    A, B = a_loader(BM, BK, T, k_contiguous=not trans_a), dense_loader(BN, BK, T, k_contiguous=trans_b)
    A_LOADS, B_LOADS, A_STATE, B_STATE = A.loads, B.loads, A.state, B.state
    begin_a, load_a, store_a, begin_b, load_b, store_b = A.begin, A.load, A.store, B.begin, B.load, B.store
    element = numba.from_dtype(np.dtype(dtype))
    simulated = device.simulator()
    ALIGN = None if simulated else VECTOR_BYTES         # the simulator refuses an alignment
    options = {} if simulated else {"launch_bounds": (T, 2)}
    A_SHARED, B_SHARED = (2, BK, BM + V), (2, BK, BN + V)   # two buffers, rows padded by a vector

    @cuda.jit(device=True, inline=True)
    def step(As, Bs, buffer, k, rows, columns, acc, a_frag, b_frag):
        for run in range(ROW_RUNS):
            for v in range(V):
                a_frag[run * V + v] = As[buffer, k, rows + uint32(run * TY * V + v)]
        for run in range(COLUMN_RUNS):
            for v in range(V):
                b_frag[run * V + v] = Bs[buffer, k, columns + uint32(run * TX * V + v)]
        for r in range(TM):
            for q in range(TN):
                acc[r, q] += a_frag[r] * b_frag[q]

    multiply_slice = _unrolled(step, BK)

    @cuda.jit(**options)
    def kernel(a, b, c, bias, M, N, K, a_offsets, b_offsets, geometry):
        As = cuda.shared.array(A_SHARED, element, alignment=ALIGN)
        Bs = cuda.shared.array(B_SHARED, element, alignment=ALIGN)
        acc = cuda.local.array((TM, TN), element)
        a_frag = cuda.local.array(TM, element)
        b_frag = cuda.local.array(TN, element)
        a_staged = cuda.local.array(A_LOADS, element)
        b_staged = cuda.local.array(B_LOADS, element)
        a_state = cuda.local.array(A_STATE, numba.int32)
        b_state = cuda.local.array(B_STATE, numba.int32)
        tid = cuda.threadIdx.x
        rows, columns = uint32((tid // TX) * V), uint32((tid % TX) * V)    # the first of each run
        z = cuda.blockIdx.z
        row0, col0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        a0, b0 = a_offsets[z], b_offsets[z]
        for r in range(TM):
            for q in range(TN):
                acc[r, q] = 0
        begin_a(a_state, a0, row0, M, K, tid, geometry)
        begin_b(b_state, b0, col0, N, K, tid, geometry)
        load_a(a, a_state, a0, row0, 0, M, K, tid, a_staged, geometry)
        load_b(b, b_state, b0, col0, 0, N, K, tid, b_staged, geometry)
        store_a(a_staged, tid, As, uint32(0))
        store_b(b_staged, tid, Bs, uint32(0))
        cuda.syncthreads()
        slices = (K + BK - 1) // BK
        for s in range(slices):
            buffer = uint32(s & 1)
            more = s + 1 < slices
            if more:                                    # the next slice's global loads overlap the products
                load_a(a, a_state, a0, row0, (s + 1) * BK, M, K, tid, a_staged, geometry)
                load_b(b, b_state, b0, col0, (s + 1) * BK, N, K, tid, b_staged, geometry)
            multiply_slice(As, Bs, buffer, uint32(0), rows, columns, acc, a_frag, b_frag)
            if more:
                store_a(a_staged, tid, As, uint32(1) - buffer)
                store_b(b_staged, tid, Bs, uint32(1) - buffer)
            cuda.syncthreads()
        c0 = z * (M - 1) * N if SPLIT else z * M * N
        for r in range(TM):
            gi = row0 + rows + (r // V) * TY * V + r % V
            if gi < M:
                for q in range(TN):
                    gj = col0 + columns + (q // V) * TX * V + q % V
                    if gj < N:
                        if SPLIT and gi == M - 1:
                            bias[z * N + gj] = acc[r, q]
                        else:
                            c[c0 + gi * N + gj] = acc[r, q] + bias[gj] if ADD_BIAS else acc[r, q]

    return kernel


def _unrolled(step, count: int):
    """A device function f(As, Bs, buffer, k0, rows, columns, acc, a_frag, b_frag) running `step` for
    k = k0 … k0 + count − 1, written out as `count` inlined calls (count a power of two): NVVM unrolls no more
    than two steps of a loop over k by itself, and the loop's bookkeeping then costs 16 instructions a pair."""
    if count == 1:
        return step
    half = _unrolled(step, count // 2)
    HALF = uint32(count // 2)

    @cuda.jit(device=True, inline=True)
    def both(As, Bs, buffer, k0, rows, columns, acc, a_frag, b_frag):
        half(As, Bs, buffer, k0, rows, columns, acc, a_frag, b_frag)
        half(As, Bs, buffer, k0 + HALF, rows, columns, acc, a_frag, b_frag)
    return both


@lru_cache(maxsize=1024)
def _batch_offsets(batch_shape: tuple, operand_batch: tuple, matrix_size: int):
    """Device vector: the offset of each (broadcast) batch's matrix in an operand."""
    count = int(np.prod(operand_batch, dtype=np.int64))
    index = np.broadcast_to(np.arange(count, dtype=np.int64).reshape(operand_batch), batch_shape)
    return device_vector(tuple(int(v) * matrix_size for v in index.ravel()))


@lru_cache(maxsize=4096)
def _gemm_shapes(a_shape: tuple, b_shape: tuple, a_dtype, b_dtype, trans_a: bool, trans_b: bool):
    """(out shape, out dtype, K, a_offsets, b_offsets) of `gemm` for operands of these shapes and dtypes."""
    M, K = (a_shape[-1], a_shape[-2]) if trans_a else (a_shape[-2], a_shape[-1])
    N = b_shape[-2] if trans_b else b_shape[-1]
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    return (batch + (M, N), np.result_type(a_dtype, b_dtype), K, _batch_offsets(batch, a_shape[:-2], M * K),
            _batch_offsets(batch, b_shape[:-2], K * N))


def gemm(a, b, trans_a: bool = False, trans_b: bool = False, tiling: Tiling | None = None, bias=None):
    """op(a) @ op(b) [+ bias] over the broadcast batch axes; op transposes the last two axes where asked, and
    `bias`, a vector of N of the result's dtype, is added to every row as the product is written."""
    shape, dtype, K, a_offsets, b_offsets = _gemm_shapes(tuple(a.shape), tuple(b.shape), a.dtype, b.dtype,
                                                         bool(trans_a), bool(trans_b))
    return product(a.reshape(a.size), b.reshape(b.size), device.empty(shape, dtype), K, a_offsets, b_offsets,
                   trans_a, trans_b, tiling, bias)


@lru_cache(maxsize=4096)
def _launch(dtype, M: int, N: int, count: int, trans_a: bool, trans_b: bool, epilogue: str, a_loader,
            tiling: Tiling | None):
    """(kernel, grid, threads) of `product` for this problem (the tiling chosen by `tiling_for` unless given)."""
    tiling = tiling or tiling_for(dtype, M, N, count)
    return (gemm_kernel(np.dtype(dtype), tiling, trans_a, trans_b, epilogue, a_loader),
            (-(-N // tiling.BN), -(-M // tiling.BM), count), tiling.threads)


def product(a, b, out, K: int, a_offsets, b_offsets, trans_a: bool = False, trans_b: bool = False,
            tiling: Tiling | None = None, bias=None, a_loader=dense_loader, geometry: tuple = (), last_row=None):
    """Writes op(A)·op(B) [+ bias] of every batch into `out` (batches, …, M, N) and returns it: a and b flat,
    batch z's operands at a_offsets[z] and b_offsets[z] (device vectors, as each loader reads them), A read by
    `a_loader` with `geometry` (see `gemm_kernel`). With `last_row` (a vector of N, one batch) the product has
    M + 1 rows and its last goes there. The one launch of every matrix product of the backend."""
    if out.size == 0 and last_row is None:
        return out
    M, N = out.shape[-2:]
    count = out.size // (M * N) if out.size else 1
    for name, vector in (("bias", bias), ("last_row", last_row)):
        if vector is not None and (vector.shape != (N,) or vector.dtype != out.dtype):
            raise ValueError(f"gemm: {name} must be a vector of {N} {out.dtype}, got shape {tuple(vector.shape)} "
                             f"and dtype {vector.dtype}")
    if last_row is not None and (bias is not None or count != 1):
        raise ValueError("gemm: last_row takes the last row of one product without a bias")
    if K == 0:                                          # empty sums: 0 (+ bias)
        if out.size:
            fill(out, 0)
            if bias is not None:
                add(out, bias, out=out)
        if last_row is not None:
            fill(last_row, 0)
        return out
    epilogue = "bias_gradient" if last_row is not None else "store" if bias is None else "bias"
    rows = M + 1 if last_row is not None else M
    kernel, grid, threads = _launch(out.dtype, rows, N, count, bool(trans_a), bool(trans_b), epilogue, a_loader,
                                    tiling)
    flat = out.reshape(out.size)
    kernel[grid, threads](a, b, flat, last_row if last_row is not None else flat if bias is None else bias, rows, N, K,
                          a_offsets, b_offsets, geometry or (0,))
    return out


def with_bias(run, b, n: int, dtype):
    """run(bias) for a product of N = n columns and result `dtype`, + b: b joins the product's epilogue when it is
    a vector of n of that dtype, else (any other broadcastable shape or dtype) the elementwise kernel adds it."""
    fused = b is not None and tuple(b.shape) == (n,) and b.dtype == dtype
    z = run(b if fused else None)
    return z if b is None or fused else add(z, b, out=z)


def affine(x, W, b=None):
    """x·W + b for x (M, K), W (K, N), b fused into the product where it can be (`with_bias`)."""
    return with_bias(lambda bias: gemm(x, W, bias=bias), b, W.shape[1], np.result_type(x.dtype, W.dtype))


def weight_and_bias_gradients(x, g):
    """(dW, db) = (xᵀ·g, Σ_rows g) for x (rows, n_in), g (rows, N): the one product [x | 1]ᵀ·g of n_in + 1 rows, its
    last row written to db."""
    dtype = np.result_type(x.dtype, g.dtype)
    dW, db = device.empty((x.shape[1], g.shape[1]), dtype), device.empty((g.shape[1],), dtype)
    zero = device_vector((0,))
    product(x.reshape(x.size), g.reshape(g.size), dW, x.shape[0], zero, zero, trans_a=True, a_loader=ones_row_loader,
            last_row=db)
    return dW, db
