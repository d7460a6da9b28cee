"""Builds the core distribution: framework/lamina and the Cython CPU backend backends/cpu/lamina_cpu.

The Cython kernels use OpenMP `prange` when the compiler supports `-fopenmp`; otherwise they
are built without it (the same code then runs serially).
"""
import os
import sys
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CPU_PACKAGE = Path("backends/cpu/lamina_cpu")
KERNEL_MODULES = sorted(p.stem for p in CPU_PACKAGE.glob("_*.pyx"))


def compiler_has_openmp(compiler) -> bool:
    """Try to compile and link a tiny OpenMP program with this compiler."""
    if os.environ.get("LAMINA_NO_OPENMP"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "omp_probe.c")
        source.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objects = compiler.compile([str(source)], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, "omp_probe", output_dir=tmp, extra_postargs=["-fopenmp"])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        openmp = compiler_has_openmp(self.compiler)
        print(f"lamina: building the CPU kernels {'with' if openmp else 'without'} OpenMP", file=sys.stderr)
        for ext in self.extensions:
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


extensions = [
    Extension(f"lamina_cpu.{name}", [str(CPU_PACKAGE / f"{name}.pyx")],
              include_dirs=[numpy.get_include(), str(CPU_PACKAGE)], depends=[str(p) for p in CPU_PACKAGE.glob("*.h")],
              extra_compile_args=["-O3"], define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
    for name in KERNEL_MODULES
]

setup(
    package_dir={"lamina": "framework/lamina", "lamina_cpu": "backends/cpu/lamina_cpu"},
    packages=["lamina", "lamina.nn", "lamina.ops", "lamina.optim", "lamina.recipes", "lamina.testing",
              "lamina.hparams", "lamina_cpu"],
    package_data={"lamina.recipes": ["*.toml"], "lamina_cpu": ["*.pyx", "*.pxd", "*.h"]},
    ext_modules=cythonize(extensions, language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                                               "initializedcheck": False}),
    cmdclass={"build_ext": BuildExt},
)
