"""Compiled Cython + OpenMP kernels (built from kernels/cpu/*.pyx by setup.py)."""
