"""Training (``dpa3_al.model.train``): ``trainer.train`` is the entry point (the workflow step is ``dpa3_al.steps.train_member``).

- ``config``: ``TrainConfig``, the typed ``train:`` section; ``io``: the files a run writes next to
  its model (checkpoint, lcurve), atomically; ``summary``: ``train_summary.json``;
- ``data``: labeled systems (deepmd npy, extended XYZ, what ASE/dpdata read); ``batching``: batches
  and the seeded sampler;
- ``loss`` (energy/force/virial loss), ``lr`` (learning-rate schedule), ``loop`` (validation,
  progress, the convergence verdict);
- ``stats`` (energy bias and env-matrix statistics), ``finetune`` (fine-tune / init-model start);
- ``committee`` (N members, one after another or in parallel processes), ``evaluate`` (``dpa3-al test``).
"""
