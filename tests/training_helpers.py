"""A tiny training recipe for the trainer's tests: ContextNet on a few CamVid frames (``tiny_camvid``)."""

from __future__ import annotations

from pathlib import Path

from seg_node.training.config import TrainingConfig


def tiny_config(tmp_path: Path, tiny_camvid: dict[str, str], **overrides) -> TrainingConfig:
    settings = dict(
        model="contextnet",
        dropout=0.1,
        aux_weight=0.4,
        data=tiny_camvid["data"],
        train_list=[tiny_camvid["train"]],
        val_list="",
        crop_size=[64, 64],
        batch_size=2,
        epochs=2,
        workers=0,
        out=str(tmp_path / "run"),
        optimizer="rmsprop",
        lr=0.01,
        eps=1.0,
        class_weighting="enet",
    )
    return TrainingConfig(**(settings | overrides))
