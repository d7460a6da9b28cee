"""Lamina's CUDA backend: Numba CUDA kernels, registered through the entry-point group `lamina`."""
__version__ = "0.1.0"
