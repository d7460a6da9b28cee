"""OpenBLAS's idle threads spin for 2^28 TSC cycles (about 0.1 s) after each product before they sleep.
On a machine with few cores they take the CPU from the OpenMP loops of the kernels that run next: on
2 cores an LSTM forward took 40 ms alone and 129 ms right after one 512×512 float32 product. With
OPENBLAS_THREAD_TIMEOUT=18 (2^18 cycles, about 0.1 ms) it took 43 ms after the product, and products
run back to back or between Python work were as fast as before (docs/performance.md).

OpenBLAS reads the variable when it loads, so this module runs before anything imports NumPy (it is
`lamina`'s first import); a value already in the environment is kept.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")
