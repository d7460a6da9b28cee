"""What the CUDA backend's matrix product compiles to, without a GPU: NVVM's PTX, ptxas's register and
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


def innermost_loop(sass: str) -> list[str]:
    """The instructions of the smallest backward-branching loop around the first FMA."""
    code = [(int(address, 16), text.strip()) for address, text in INSTRUCTION.findall(sass)]
    first = min(address for address, text in code if opcode(text) in ("FFMA", "DFMA"))
    loops = []
    for address, text in code:
        target = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", text)
        if opcode(text) == "BRA" and target and target.group(1):
            start = int(target.group(1), 16)
            if start <= first <= address:
                loops.append((address - start, start, address))
    _, start, end = min(loops)
    return [text for address, text in code if start <= address <= end]


def report(dtype, tiling, trans_a: bool, trans_b: bool, cc: tuple, ptxas: str, cuobjdump: str | None) -> str:
    import numba
    from numba import cuda, types

    from lamina_cuda.kernels.matmul import gemm_kernel

    kernel = gemm_kernel(np.dtype(dtype), tiling, trans_a, trans_b)
    array = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    offsets = types.Array(types.int64, 1, "C")
    signature = (array, array, array, types.int64, types.int64, types.int64, offsets, offsets)
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc,
                              launch_bounds=kernel.targetoptions.get("launch_bounds"))
    with tempfile.TemporaryDirectory() as folder:
        source, binary = Path(folder) / "gemm.ptx", Path(folder) / "gemm.cubin"
        source.write_text(ptx)
        info = subprocess.run([ptxas, "-v", f"-arch=sm_{cc[0]}{cc[1]}", str(source), "-o", str(binary)],
                              capture_output=True, text=True, check=True).stderr
        usage = "; ".join(line.split(":", 1)[-1].strip() for line in info.splitlines()
                         if "registers" in line or "spill" in line)
        name = f"{np.dtype(dtype)} {'Aᵀ' if trans_a else 'A'}·{'Bᵀ' if trans_b else 'B'}, tiling {tiling}"
        lines = [f"{name}: {usage}",
                 f"  PTX shared loads: {ptx.count('ld.shared.v4')} v4, {ptx.count('ld.shared.v2')} v2, "
                 f"{len(re.findall(r'ld.shared.f(?:32|64)', ptx))} scalar"]
        if cuobjdump:
            sass = subprocess.run([cuobjdump, "-sass", str(binary)], capture_output=True, text=True,
                                  check=True).stdout
            loop = innermost_loop(sass)
            mix = Counter(opcode(text) for text in loop)
            fma = mix["FFMA"] + mix["DFMA"]
            lines.append(f"  innermost loop: {len(loop)} instructions, {fma} FMA ({fma / len(loop):.0%}); "
                         + ", ".join(f"{op} {n}" for op, n in mix.most_common()))
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
    from lamina_cuda.kernels.matmul import GPU_TILINGS

    for dtype, tilings in GPU_TILINGS.items():             # every transposition of the largest tiling,
        for tiling in tilings:                              # the plain product of the others
            pairs = ((False, False), (True, False), (False, True), (True, True)) if tiling == tilings[0] else \
                ((False, False),)
            for trans_a, trans_b in pairs:
                print(report(dtype, tiling, trans_a, trans_b, cc, ptxas, cuobjdump))
    if cuobjdump is None:
        print("(cuobjdump not found, so no SASS: set CUOBJDUMP)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
