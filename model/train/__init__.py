"""Training (``dpa3_al.model.train``): data, loss, learning rate, the training loop, committees,
fine-tuning, statistics and evaluation. ``trainer.train`` / ``trainer.train_member`` are the
entry points; ``config.TrainConfig`` is the typed ``train:`` section.
"""
