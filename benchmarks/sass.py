"""What the CUDA backend's matrix product and persistent recurrences compile to, without a GPU: NVVM's PTX, ptxas's register and
spill counts, and the instruction mix of the innermost loop in the SASS.

    pip install "numba-cuda[cu12]"            # NVVM and ptxas (no driver or GPU needed)
    pip download --no-deps nvidia-cuda-cuobjdump && unzip the wheel   # cuobjdump, for the SASS
    CUOBJDUMP=/path/to/cuobjdump python benchmarks/sass.py [--cc 9.0]

The innermost loop is the one holding the first fused multiply-add; on a GPU each of its instructions
takes an issue slot, so the share of FFMA/DFMA bounds the fraction of peak the product can reach.
Run with NUMBA_ENABLE_CUDASIM unset (the simulator compiles nothing).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from types import SimpleNamespace
from pathlib import Path

import numpy as np

INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def tool(name: str, env: str) -> str | None:
    """The tool's path: $env, PATH, or the nvidia-cuda-nvcc wheel's bin folder."""
    if os.environ.get(env):
        return os.environ[env]
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia.cuda_nvcc as nvcc

        candidate = Path(list(nvcc.__path__)[0]) / "bin" / name
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


def opcode(text: str) -> str:
    words = text.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")[0]


def functions(sass: str) -> dict[str, str]:
    """cuobjdump's SASS split per function (a relocatable object holds the runtime's helpers too)."""
    parts = re.split(r"Function : (\S+)", sass)
    return dict(zip(parts[1::2], parts[2::2]))


def loops_around_fma(sass: str) -> list[tuple[int, int]]:
    """(start, end) addresses of the backward-branching loops that hold a fused multiply-add, smallest first."""
    code = [(int(address, 16), text.strip()) for address, text in INSTRUCTION.findall(sass)]
    fma = [address for address, text in code if opcode(text) in ("FFMA", "DFMA")]
    loops = []
    for address, text in code:
        target = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", text)
        if opcode(text) == "BRA" and target and target.group(1):
            start = int(target.group(1), 16)
            if any(start <= at <= address for at in fma):
                loops.append((address - start, start, address))
    return [(start, end) for _, start, end in sorted(loops)]


def instructions(sass: str, start: int, end: int) -> list[str]:
    return [text.strip() for address, text in INSTRUCTION.findall(sass) if start <= int(address, 16) <= end]


def _innermost(sass: str) -> tuple[int, int]:
    """(start, end) of the innermost loop doing the most fused multiply-adds a pass: of the backward-branching
    loops around one, those holding no other such loop (a loop unrolled by hand leaves a remainder loop beside
    it), the one with the most."""
    loops = loops_around_fma(sass)
    leaves = [(start, end) for start, end in loops
              if not any(start <= s and e <= end and (s, e) != (start, end) for s, e in loops)]
    return max(leaves, key=lambda loop: sum(opcode(text) in ("FFMA", "DFMA") for text in instructions(sass, *loop)))


def innermost_loop(sass: str) -> list[str]:
    """The instructions of that innermost loop (`_innermost`)."""
    return instructions(sass, *_innermost(sass))


def loop_around_innermost(sass: str) -> list[str] | None:
    """The instructions of the smallest loop strictly around the innermost one, or None."""
    inner = _innermost(sass)
    outer = [(start, end) for start, end in loops_around_fma(sass)
             if start <= inner[0] and inner[1] <= end and (start, end) != inner]
    return instructions(sass, *outer[0]) if outer else None


def compile_report(name: str, kernel, signature: tuple, cc: tuple, ptxas: str, cuobjdump: str | None,
                   relocatable: bool = False, slice_fma: int | None = None) -> list[str]:
    """ptxas's register and spill counts for `kernel` compiled for `signature`, the PTX's shared loads, and the
    instruction mix of its innermost FMA loop. `relocatable` kernels (grid sync) call the device runtime, linked
    at load time, so ptxas compiles them with -c. For a matrix product, `slice_fma` (BK·TM·TN) adds what a
    thread runs per slice of K: the innermost loop when it is the slice, else that loop as many times as the
    slice needs plus the loop around it."""
    from numba import cuda

    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc,
                              launch_bounds=kernel.targetoptions.get("launch_bounds"))
    with tempfile.TemporaryDirectory() as folder:
        source, binary = Path(folder) / "kernel.ptx", Path(folder) / "kernel.cubin"
        source.write_text(ptx)
        info = subprocess.run([ptxas, "-v", *(["-c"] if relocatable else []), f"-arch=sm_{cc[0]}{cc[1]}", str(source),
                               "-o", str(binary)], capture_output=True, text=True, check=True).stderr
        usage = "; ".join(line.split(":", 1)[-1].strip() for line in info.splitlines()
                          if ("registers" in line or "spill" in line) and "cuda_sm" not in line)
        lines = [f"{name}: {usage}",
                 f"  PTX shared loads: {ptx.count('ld.shared.v4')} v4, {ptx.count('ld.shared.v2')} v2, "
                 f"{len(re.findall(r'ld.shared.f(?:32|64)', ptx))} scalar"]
        if cuobjdump:
            sass = subprocess.run([cuobjdump, "-sass", str(binary)], capture_output=True, text=True,
                                  check=True).stdout
            body = next(text for function, text in functions(sass).items() if kernel.py_func.__name__ in function)
            loop = innermost_loop(body)
            mix = Counter(opcode(text) for text in loop)
            fma = mix["FFMA"] + mix["DFMA"]
            lines.append(f"  innermost loop: {len(loop)} instructions, {fma} FMA ({fma / len(loop):.0%}); "
                         + ", ".join(f"{op} {n}" for op, n in mix.most_common()))
            outer = loop_around_innermost(body)
            if outer and not slice_fma:
                lines.append(f"  loop around it: {len(outer) - len(loop)} instructions besides the innermost loop's")
            if slice_fma:
                per_slice = len(loop) if fma == slice_fma else \
                    len(loop) * slice_fma // fma + (len(outer) - len(loop) if outer else 0)
                lines.append(f"  per slice of K: {per_slice} instructions for {slice_fma} FMA "
                             f"({slice_fma / per_slice:.0%})")
    return lines


def report(dtype, tiling, trans_a: bool, trans_b: bool, cc: tuple, ptxas: str, cuobjdump: str | None,
           epilogue: str = "store", a_loader=None) -> str:
    import numba
    from numba import types

    from lamina_cuda.kernels.matmul import gemm_kernel

    from lamina_cuda.kernels.matmul import dense_loader

    kernel = gemm_kernel(np.dtype(dtype), tiling, trans_a, trans_b, epilogue, a_loader or dense_loader)
    array = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    offsets = types.Array(types.int64, 1, "C")
    signature = (array, array, array, array, types.int64, types.int64, types.int64, offsets, offsets,
                 types.UniTuple(types.int64, 1))
    name = f"{np.dtype(dtype)} {'Aᵀ' if trans_a else 'A'}·{'Bᵀ' if trans_b else 'B'}" \
           f"{'' if epilogue == 'store' else f', epilogue {epilogue}'}{f', {a_loader.__name__}' if a_loader else ''}, " \
           f"tiling {tiling}"
    return "\n".join(compile_report(name, kernel, signature, cc, ptxas, cuobjdump,
                                    slice_fma=tiling.BK * tiling.TM * tiling.TN))


def report_convolution(dtype, tiling, cc: tuple, ptxas: str, cuobjdump: str | None) -> str:
    """conv2d's implicit products: the forward (A = im2col(x), + bias) and dW (A = im2col(x)ᵀ)."""
    import numba
    from numba import types

    from lamina_cuda.kernels.convolution import im2col_loader
    from lamina_cuda.kernels.matmul import gemm_kernel

    array = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    offsets = types.Array(types.int64, 1, "C")
    signature = (array, array, array, array, types.int64, types.int64, types.int64, offsets, offsets,
                 types.UniTuple(types.int64, 9))
    lines = []
    for name, trans_a, epilogue in (("forward, im2col(x)·W + b", False, "bias"), ("dW, im2col(x)ᵀ·G", True, "store")):
        kernel = gemm_kernel(np.dtype(dtype), tiling, trans_a, False, epilogue, im2col_loader)
        lines += compile_report(f"{np.dtype(dtype)} conv2d {name}, tiling {tiling}", kernel, signature, cc, ptxas,
                                cuobjdump, slice_fma=tiling.BK * tiling.TM * tiling.TN)
    return "\n".join(lines)


def report_persistent(cell: str, dtype, cc: tuple, ptxas: str, cuobjdump: str | None, staged: bool = True) -> str:
    """The persistent kernels (kernels/persistent.py) of `cell` (the LSTM without peepholes). Their cell functions
    are device functions, which Numba compiles for the current device: without a GPU, one of compute capability
    `cc` stands in."""
    import numba
    import numba.cuda.dispatcher
    from numba import types

    from lamina_cuda.kernels import persistent, recurrent

    numba.cuda.dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    forward, backward = persistent.kernels(np.dtype(dtype), recurrent.CELLS[cell][2], *recurrent.CELLS[cell][:2],
                                           staged)
    array, flags = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C"), types.Array(types.uint8, 1, "C")
    i64, boolean = types.int64, types.boolean
    b_a, C, extra = (array if cell == "gru" else flags, array if cell == "lstm" else flags,
                     array if cell == "gru" else flags)
    forward_signature = (array, array, b_a, flags, boolean, array, C, extra, flags, boolean, i64, i64, i64, array, i64,
                         boolean, i64, i64, i64)
    backward_signature = (array, array, array, C, extra, flags, boolean, array, array, array, array, array, flags,
                          boolean, i64, i64, i64, i64, boolean, i64, i64)
    lines = []
    for direction, kernel, signature in (("forward", forward, forward_signature),
                                         ("backward", backward, backward_signature)):
        where = "" if staged else ", weights in global memory"
        lines += compile_report(f"{np.dtype(dtype)} persistent {cell} {direction}{where}", kernel, signature, cc,
                                ptxas, cuobjdump, relocatable=True)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cc", default="9.0", help="compute capability to compile for (default 9.0, H100/H200)")
    args = parser.parse_args()
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("benchmarks/sass.py compiles for a real GPU: unset NUMBA_ENABLE_CUDASIM", file=sys.stderr)
        return 2
    ptxas = tool("ptxas", "PTXAS")
    if ptxas is None:
        print("ptxas not found: pip install 'numba-cuda[cu12]' (or set PTXAS)", file=sys.stderr)
        return 2
    cuobjdump = tool("cuobjdump", "CUOBJDUMP")
    cc = tuple(int(part) for part in args.cc.split("."))
    from lamina_cuda.kernels.matmul import GPU_TILINGS, ones_row_loader

    for dtype, tilings in GPU_TILINGS.items():             # every transposition of the largest tiling,
        for tiling in tilings:                              # the plain product of the others
            pairs = ((False, False), (True, False), (False, True), (True, True)) if tiling == tilings[0] else \
                ((False, False),)
            for trans_a, trans_b in pairs:
                print(report(dtype, tiling, trans_a, trans_b, cc, ptxas, cuobjdump))
        print(report(dtype, tilings[0], False, False, cc, ptxas, cuobjdump, epilogue="bias"))   # dense
        print(report(dtype, tilings[0], True, False, cc, ptxas, cuobjdump, epilogue="bias_gradient",
                     a_loader=ones_row_loader))                                             # dense dW, db
        for tiling in tilings[:2]:
            print(report_convolution(dtype, tiling, cc, ptxas, cuobjdump))
    for cell in ("rnn", "gru", "lstm"):
        for dtype in GPU_TILINGS:
            print(report_persistent(cell, dtype, cc, ptxas, cuobjdump))
    print(report_persistent("lstm", np.float32, cc, ptxas, cuobjdump, staged=False))
    if cuobjdump is None:
        print("(cuobjdump not found, so no SASS: set CUOBJDUMP)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
