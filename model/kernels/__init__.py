"""Behind the seam: how the model's operations run fast and lean (``dpa3_al.model.kernels``).

The model's spine (model/energy.py -> descriptor.py -> repflow.py) states *what* is computed;
this package holds *how* it runs on a CPU within memory. Every operation has two paths: the C++
kernels (fast; CPU, float32/float64, built once per machine and checked on a probe) and the plain
torch formulas (CUDA, no C++ compiler, a failed probe, or ``DPA3_AL_COMPILE=0``), same numbers to
rounding.

- ``ops``: memory-lean autograd operations (scatter sums, activation times weight, outer
  products) that pick the C++ kernel or the plain torch formula;
- ``cpp`` + ``csrc/kernels.cpp``: the C++ kernels and their loader (build, cache, probe);
- ``layout``: the centre-by-centre triple layout the per-triple kernel relies on (graph.py builds it);
- ``recompute``: recomputation that also works for second derivatives (force training, low memory);
- ``memory``: peak-memory estimates; ``runtime``: allocator settings.

Modules here import from the model only its bottom: model/activation_math.py (the plain
activation formulas) and, for ``memory``, model/graph.py's ``Batch``/``Graph``.
"""
