"""Behind the seam: how the model's operations run fast and lean (``dpa3_al.model.kernels``).

The model's spine (model/repflow.py, descriptor.py, energy.py) states *what* is computed;
this package holds *how* it runs on a CPU within memory:

- ``ops``: memory-lean autograd operations (scatter sums, activation times weight, outer
  products) that pick the C++ kernel or the plain torch formula;
- ``cpp`` + ``csrc/kernels.cpp``: the hand-written C++ kernels (built once per machine);
- ``compiled``: torch.compile'd elementwise kernels;
- ``recompute``: recomputation that also works for second derivatives (force training);
- ``memory``: peak-memory estimates; ``runtime``: allocator settings.
"""
