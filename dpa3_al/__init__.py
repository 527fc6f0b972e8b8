"""dpa3-al: workflow-managed active learning for DPA3 interatomic potentials.

Rooms (see docs/architecture.md):
  dpa3_al.model      the DPA3 model core (PyTorch): descriptor, fitting, forces, training, calculators
  dpa3_al            configs, datasets, exploration, selection, labelers, scheduling, reports, CLI
  dpa3_al.workflows  dflow OPs, the concurrent-learning loop, engines (local / Argo / HPC)
"""

__version__ = "0.1.0"
