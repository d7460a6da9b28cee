"""A whole recurrence (RNN, GRU with reset_after, LSTM: §5.1–5.5) in one cooperative launch per direction:
a persistent kernel.

The step-by-step recurrence launches two kernels per step (the product z_a = a<t-1>·W_a, then the cells), so
a short step costs mostly launch overhead. Here every block stays resident for the whole sequence. Block b owns
the hidden units of chunks b, b + blocks, … (chunk c = units [c·J, c·J + J)) and keeps in shared memory the
gates·J columns of W_a its units' gates need (backward: the J rows of W_a that dZa·W_aᵀ needs for them). At each
step it forms its units' z_a for every example, S threads per (example, unit) pair each summing an interleaved
1/S of the inner dimension, reduced through shared memory, and runs the cells of `recurrent.py`; `grid.sync()`
orders the steps. A block reads back only its own units' states and the previous step's values, so the grid
barrier is the only ordering needed. When there are more chunks than resident blocks a block restages the
weights of each chunk it owns at every step: correct, only slower. Weights too large for a block's shared
memory are packed per chunk once per call and read from global memory, where the L2 cache keeps them.

The launch is cooperative (every block resident at once), so the grid is at most what the occupancy allows.
The simulator runs a cooperative grid as one block, which then owns every chunk.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache

import numba
import numpy as np
from numba import cuda, uint64
from numba.cuda.cudadrv.driver import CudaAPIError, LinkerError

from .. import device

#: threads per block of the persistent kernels on a GPU
THREADS = 256
#: dynamic shared memory a block may use without opting in to more: weights beyond it are read from global memory
SHARED_LIMIT = 48 * 1024
#: terms of a sum per pass of its loop (written out: NVVM would keep a counter test per term)
UNROLL = 4
#: set to 0 to run every recurrence step by step
ENVIRONMENT = "LAMINA_CUDA_PERSISTENT_RNN"


@dataclass(frozen=True)
class Plan:
    """J hidden units per chunk, the threads of a block, S threads per (example, unit) pair, and whether each
    block keeps its chunk's weights in shared memory (`staged`) or reads them, packed per chunk, from global
    memory (where the L2 cache keeps them between steps)."""
    units: int
    threads: int
    segments: int
    itemsize: int
    n: int
    gates: int
    staged: bool = True

    @property
    def chunks(self) -> int:
        return -(-self.n // self.units)

    @property
    def weight_bytes(self) -> int:
        """A chunk's weights: gates·n·J elements."""
        return self.gates * self.n * self.units * self.itemsize

    @property
    def shared_bytes(self) -> int:
        """The block's weights when staged, and the partial sums (gates per thread)."""
        return (self.weight_bytes if self.staged else 0) + self.gates * self.threads * self.itemsize


def plan(dtype: np.dtype, m: int, n: int, gates: int, units: int | None = None,
         staged: bool | None = None) -> Plan | None:
    """How to run a recurrence of m examples, n hidden units and `gates` gates (RNN 1, GRU 3, LSTM 4)
    persistently, or None when it should go step by step (LAMINA_CUDA_PERSISTENT_RNN=0). By default J spreads
    the units over the GPU's multiprocessors (all of them in one chunk in the simulator) and the weights are
    staged in shared memory when they fit there; `units` and `staged` force them."""
    if os.environ.get(ENVIRONMENT, "1") == "0":
        return None
    threads = device.SIMULATOR_THREADS if device.simulator() else THREADS
    if units is None:
        units = n if device.simulator() else math.ceil(n / device.multiprocessors())
    units = max(1, min(units, n))
    segments = max(1, min(threads // (m * units), n))
    chosen = Plan(units, threads, segments, np.dtype(dtype).itemsize, n, gates)
    if staged is None:
        staged = chosen.shared_bytes <= SHARED_LIMIT
    return replace(chosen, staged=staged)


@cuda.jit(device=True, inline=True)
def _division(n, J, S):
    """(slots, slot, s, chunks, keeps): the block's groups of S threads (one per (example, unit) pair at a time),
    this thread's group and segment, the chunks of J units, and whether each block owns one chunk at most (so
    keeps its weights for the whole sequence)."""
    chunks = (n + J - 1) // J
    return cuda.blockDim.x // S, cuda.threadIdx.x // S, cuda.threadIdx.x % S, chunks, chunks <= cuda.gridDim.x


@cuda.jit(device=True, inline=True)
def _pair(base, slot, slots, units, m):
    """(i, jj, active): the example and unit of this thread's group in the pass over pairs base, base + 1, …"""
    pair = base + slot
    return pair // units, pair % units, slot < slots and pair < m * units


@lru_cache(maxsize=None)
def kernels(dtype: np.dtype, gates: int, cell, cell_backward, staged: bool = True):
    """(forward, backward) persistent kernels for `dtype` around a cell of `recurrent.py` with `gates` gates.
    Staged, they copy their chunk's weights from W_a into shared memory; otherwise W_a is `weights`' packing
    (the columns forward, the rows backward), read from global memory in the same per-chunk layout."""
    element = numba.from_dtype(np.dtype(dtype))
    U = uint64(UNROLL)

    @cuda.jit(device=True, inline=True)
    def add_term(z, H, h, weights, w):
        """z[q] += a<t-1>[i, k]·W_a[k, q·n + j] for every gate q: the unit's gates lie side by side in `weights`."""
        a = H[h]
        for q in range(gates):
            z[q] += a * weights[w + uint64(q)]

    @cuda.jit
    def forward(XW, W_a, b_a, P, peep, H, C, extra, mask, masked, T, m, n, out, width, y_on, final_col, J, S):
        """All T steps: z_a[i, q·n + j] = Σ_k a<t-1>[i, k]·W_a[k, q·n + j] for the block's units j, then the cells."""
        shared = cuda.shared.array(0, element)
        chunk_size = gates * n * J
        weights = shared[:chunk_size if staged else 0]  # [k][jj][q]: a unit's gates side by side
        partial = shared[chunk_size if staged else 0:]  # [thread][q]: the sums, then the cell's z_a
        z = cuda.local.array(gates, element)
        grid = cuda.cg.this_grid()
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        slots, slot, s, chunks, keeps = _division(n, J, S)
        G, mn = gates * n, m * n
        S1, W1 = uint64(S), uint64(S * gates * J)
        for t in range(T):
            for c in range(cuda.blockIdx.x, chunks, cuda.gridDim.x):
                j0 = c * J
                units = min(J, n - j0)
                if not staged:
                    weights = W_a[c * chunk_size:(c + 1) * chunk_size]
                elif t == 0 or not keeps:
                    cuda.syncthreads()          # the previous chunk's products are done with the weights
                    for e in range(tid, gates * n * units, threads):
                        q, rest = e // (n * units), e % (n * units)
                        k, jj = rest // units, rest % units
                        weights[(k * J + jj) * gates + q] = W_a[k * G + q * n + j0 + jj]
                    cuda.syncthreads()
                for base in range(0, m * units, slots):
                    i, jj, active = _pair(base, slot, slots, units, m)
                    for q in range(gates):
                        z[q] = 0
                    if active:                  # unsigned indices: no negative-index wraparound to test
                        h, w = uint64(t * mn + i * n + s), uint64((s * J + jj) * gates)
                        terms = uint64((n - s + S - 1) // S)          # k = s, s + S, …
                        for _ in range(terms // U):
                            for u in range(UNROLL):
                                add_term(z, H, h + uint64(u) * S1, weights, w + uint64(u) * W1)
                            h += U * S1
                            w += U * W1
                        for _ in range(terms % U):
                            add_term(z, H, h, weights, w)
                            h += S1
                            w += W1
                    for q in range(gates):
                        partial[gates * tid + q] = z[q]
                    if S > 1:                   # (alone, a thread only reads back its own sums)
                        cuda.syncthreads()
                    if active and s == 0:
                        for r in range(1, S):
                            for q in range(gates):
                                partial[gates * tid + q] += partial[gates * (tid + r) + q]
                        cell(XW, partial, gates * tid, 1, b_a, P, peep, H, C, extra, mask, masked, t, T, m, n, out,
                             width, y_on, final_col, i, j0 + jj)
                    if S > 1:
                        cuda.syncthreads()
            grid.sync()

    @cuda.jit
    def backward(gates_, W_a, H, C, extra, P, peep, dh, dc, dZ, dZa, g, mask, masked, T, m, n, width, y_on, J, S):
        """All T steps backwards: back[i, j] = Σ_col dZa[t+1][i, col]·W_a[j, col] for the block's units j, then the
        cells' backward (back = 0 at the last step). `gates_` are the forward's activated gates."""
        shared = cuda.shared.array(0, element)
        chunk_size = gates * n * J
        weights = shared[:chunk_size if staged else 0]  # [col][jj]
        partial = shared[chunk_size if staged else 0:]  # [thread]
        grid = cuda.cg.this_grid()
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        slots, slot, s, chunks, keeps = _division(n, J, S)
        G = gates * n
        S1, W1 = uint64(S), uint64(S * J)
        for step in range(T):
            t = T - 1 - step
            for c in range(cuda.blockIdx.x, chunks, cuda.gridDim.x):
                j0 = c * J
                units = min(J, n - j0)
                if not staged:
                    weights = W_a[c * chunk_size:(c + 1) * chunk_size]
                elif step == 0 or not keeps:
                    cuda.syncthreads()
                    for e in range(tid, G * units, threads):
                        jj, col = e // G, e % G
                        weights[col * J + jj] = W_a[(j0 + jj) * G + col]
                    cuda.syncthreads()
                for base in range(0, m * units, slots):
                    i, jj, active = _pair(base, slot, slots, units, m)
                    back = element(0)
                    if active and step > 0:
                        d, w = uint64(((t + 1) * m + i) * G + s), uint64(s * J + jj)
                        terms = uint64((G - s + S - 1) // S)          # columns s, s + S, …
                        for _ in range(terms // U):
                            for u in range(UNROLL):
                                back += dZa[d + uint64(u) * S1] * weights[w + uint64(u) * W1]
                            d += U * S1
                            w += U * W1
                        for _ in range(terms % U):
                            back += dZa[d] * weights[w]
                            d += S1
                            w += W1
                    partial[tid] = back
                    if S > 1:
                        cuda.syncthreads()
                    if active and s == 0:
                        for r in range(1, S):
                            back += partial[tid + r]
                        cell_backward(gates_, H, C, extra, P, peep, dh, back, dc, dZ, dZa, g, mask, masked, t, T, m,
                                      n, width, y_on, i, j0 + jj)
                    if S > 1:
                        cuda.syncthreads()
            grid.sync()

    return forward, backward


@cuda.jit
def _pack(W_a, packed, n, G, J, by_rows):
    """packed[c][k][jj][q] = W_a[k, q·n + c·J + jj] (the forward's columns, by_rows False) or
    packed[c][col][jj] = W_a[c·J + jj, col] (the backward's rows); 0 past the last unit."""
    gates = G // n
    for e in range(cuda.grid(1), packed.size, cuda.gridsize(1)):
        if by_rows:
            jj, rest = e % J, e // J
            c, col = rest // G, rest % G
        else:
            q, rest = e % gates, e // gates
            jj, rest = rest % J, rest // J
            c, k = rest // n, rest % n
        j = c * J + jj
        if j >= n:
            packed[e] = 0
        elif by_rows:
            packed[e] = W_a[j * G + col]
        else:
            packed[e] = W_a[k * G + q * n + j]


def weights(chosen: Plan, W_a, by_rows: bool):
    """What the kernels read as W_a: the weights themselves (flat) when staged, else packed per chunk."""
    flat = W_a.reshape(W_a.size)
    if chosen.staged:
        return flat
    packed = device.empty((chosen.chunks * chosen.weight_bytes // chosen.itemsize,), W_a.dtype)
    blocks, threads = device.launch_1d(packed.size)
    _pack[blocks, threads](flat, packed, chosen.n, chosen.gates * chosen.n, chosen.units, by_rows)
    return packed


#: why the cooperative kernels cannot be built or launched here, once that is known (then every call says False)
_unusable: list[str] = []


def launch(kernel, chosen: Plan, *args) -> bool:
    """`kernel` on as many blocks as there are chunks, at most as many as can be resident together; True when it
    ran. False, after one warning, when the cooperative kernel cannot be linked or launched here (a grid sync
    needs the CUDA device runtime, libcudadevrt, at link time): the caller then goes step by step."""
    if _unusable:
        return False
    args = args + (chosen.units, chosen.segments)
    try:
        resident = device.cooperative_blocks(kernel, args, chosen.threads, chosen.shared_bytes)
        kernel[min(chosen.chunks, resident), chosen.threads, 0, chosen.shared_bytes](*args)
    except (LinkerError, CudaAPIError, OSError) as err:
        _unusable.append(f"{type(err).__name__}: {err}")
        warnings.warn(f"lamina-cuda: the persistent recurrent kernels cannot run here ({_unusable[0]}); "
                      f"recurrences run step by step", RuntimeWarning, stacklevel=2)
        return False
    return True
