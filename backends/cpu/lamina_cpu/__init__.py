"""Lamina's CPU backend: NumPy arrays, BLAS matrix products and Cython kernels for the hot paths."""
