"""Training stand-in for the science integration test (the model room's train_member is not
written yet): a tiny random DPA3 model per member, seeded, saved where training would save it."""

from __future__ import annotations

from pathlib import Path


def train_member(config, data, init_model, member, iteration, workdir):
    from dpa3_al.model import ModelConfig, build_model, save_model

    model = build_model(ModelConfig.tiny(type_map=list(config.get("type_map", ["Cu"]))),
                        seed=100 * iteration + member)
    path = Path(workdir) / "model.pt"
    save_model(model, path)
    (Path(workdir) / "lcurve.csv").write_text("step,loss\n")
    return path
