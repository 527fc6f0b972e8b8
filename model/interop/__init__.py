"""deepmd-kit interoperability (``dpa3_al.model.interop``): reading its checkpoints."""
