"""The hand-written kernels of cfn_fast, installed as ``cfn_fast.kernels``.

* ``cfn_cpu``: the Cython + OpenMP CPU kernels, compiled by setup.py from ``cpu/cfn_cpu.pyx``
  (in the repository ``cfn_fast/kernels`` is a relative symlink to this folder, so an in-place
  build puts the extension here and ``PYTHONPATH=.`` imports it as ``cfn_fast.kernels.cfn_cpu``);
* ``cfn_shard``: the kernels of one shard's split step in sharded training (``cpu/cfn_shard.pyx``, used by
  :mod:`cfn_fast.backends.cpu_shard`);
* ``cuda``: CUDA C sources (package data), compiled by CuPy's NVRTC on the first GPU use
  (:mod:`cfn_fast.backends.cuda_module`).
"""
