"""``seg-train``: train CGNet or ContextNet from a YAML recipe; every value can be overridden on the command line.

    seg-train --config configs/cgnet_camvid.yaml [--epochs 300] [--lr 0.002] [--out runs/x]
    seg-train --config configs/cgnet_camvid.yaml --resume runs/x/last.pt
    torchrun --nproc-per-node 4 -m seg_node.training.trainer --config ...   (DistributedDataParallel)

A checkpoint is written every epoch (model, optimizer, scheduler, epoch, RNG
states) and on Ctrl-C; ``--resume`` continues exactly where it stopped. The
best checkpoint by val mIoU is kept as ``best.pt``; ``history.csv`` and
``curves.png`` record loss, learning rate, throughput and val mIoU. With
``--export weights/<name>.safetensors`` the best (or last) weights are written
with their JSON at the end.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from ..datasets import (
    Augmentation,
    DatasetSpec,
    TrainingSet,
    camvid,
    cityscapes,
    enet_class_weights,
    image_folder,
    label_histogram,
    mean_std,
)
from ..errors import SegNodeError
from ..evaluation.evaluate import ModelPredictor, evaluate
from ..models import build_model
from ..plots import plot_training_curves
from ..weights import WeightsInfo, save_weights

# Every key is a command-line option (--crop-size "[360, 360]"); YAML recipes in configs/ set them.
DEFAULTS: dict[str, Any] = {
    "model": "cgnet",
    "variant": None,
    "dropout": None,
    "dataset": "camvid",  # camvid | cityscapes | folder
    "data": "../shared/datasets/camvid",
    "train_list": ["train.txt"],  # CamVid list files, or Cityscapes split names
    "val_list": "val.txt",  # empty: no validation
    "classes": None,  # class table for the folder format
    "input_size": [360, 480],  # (height, width) the weights are meant to run at
    "crop_size": [360, 360],
    "batch_size": 8,
    "epochs": 100,
    "optimizer": "adam",  # adam | rmsprop
    "lr": 1.0e-3,
    "betas": [0.9, 0.999],
    "momentum": 0.9,
    "rms_decay": 0.9,
    "eps": 1.0e-8,
    "weight_decay": 5.0e-4,
    "poly_power": 0.9,
    "scale_range": [0.5, 2.0],
    "mirror": True,
    "color_jitter": 0.0,
    "class_weighting": "enet",  # enet (1/ln(1.10+p)) | none
    "aux_weight": 0.0,  # ContextNet's auxiliary loss on the deep branch
    "workers": 2,
    "seed": 1,
    "val_every": 1,
    "amp": True,  # CUDA only: bfloat16 autocast
    "channels_last": True,  # CUDA only
    "threads": None,  # CPU threads for PyTorch
    "device": None,  # default: cuda if available
    "out": "runs/train",
    "max_steps": None,  # stop after this many optimizer steps (smoke tests)
    "export": None,  # weights/<name>.safetensors written at the end
}


class TrainingError(SegNodeError, RuntimeError):
    """A recipe or checkpoint that cannot be used."""


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    config = dict(DEFAULTS)
    if path:
        recipe = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(recipe) - set(DEFAULTS)
        if unknown:
            raise TrainingError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        config.update(recipe)
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", help="YAML recipe (configs/*.yaml)")
    parser.add_argument("--resume", help="checkpoint to continue from (its recipe is used; options still override)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=yaml.safe_load, help=f"default {value!r}")
    return parser


def dataset_spec(config: dict[str, Any], lists: str | list[str]) -> DatasetSpec:
    kind = config["dataset"]
    if kind == "camvid":
        return camvid(config["data"], lists)
    if kind == "cityscapes":
        names = [lists] if isinstance(lists, str) else lists
        specs = [cityscapes(config["data"], name) for name in names]
        specs[0].pairs = [pair for spec in specs for pair in spec.pairs]
        return specs[0]
    if kind == "folder":
        root = Path(config["data"])
        return image_folder(root / "images", root / "labels", config["classes"])
    raise TrainingError(f"unknown dataset {kind!r}; use camvid, cityscapes or folder")


def model_from_config(config: dict[str, Any], num_classes: int, training: bool) -> nn.Module:
    """The recipe's network; in training, ContextNet gets the auxiliary head its aux loss needs."""
    extra: dict[str, Any] = {"dropout": config["dropout"]} if config.get("dropout") is not None else {}
    if training and config["model"] == "contextnet" and config["aux_weight"]:
        extra["aux_classifier"] = True
    return build_model(config["model"], num_classes, variant=config["variant"], **extra)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise TrainingError(f"cannot read checkpoint {path}: {error}") from error


class ListSampler(Sampler[int]):
    """A fixed order of indices: one epoch's shuffled order, less the batches already done before a resume."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def rng_state() -> dict[str, Any]:
    # Only torch's generators are used during training (dropout); augmentation is seeded per sample.
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


class Trainer:
    def __init__(self, config: dict[str, Any], resume: str | None = None) -> None:
        self.config = config
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        device = config["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and self.distributed:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        self.device = torch.device(device)
        if config["threads"]:
            torch.set_num_threads(int(config["threads"]))
        self.out = Path(config["out"])
        self.out.mkdir(parents=True, exist_ok=True)

        checkpoint = load_checkpoint(resume) if resume else None
        self.train_spec = dataset_spec(config, config["train_list"])
        self.val_spec = dataset_spec(config, config["val_list"]) if config["val_list"] else None
        if checkpoint is not None:
            self.mean, self.std = tuple(checkpoint["mean"]), tuple(checkpoint["std"])
            class_weights = checkpoint["class_weights"]
        else:
            self.mean, self.std = mean_std(self.train_spec)
            class_weights = (
                enet_class_weights(label_histogram(self.train_spec)).tolist()
                if config["class_weighting"] == "enet"
                else None
            )
        self.class_weights = class_weights

        torch.manual_seed(config["seed"])
        model = model_from_config(config, self.train_spec.num_classes, training=True)
        self.cuda = self.device.type == "cuda"
        if self.distributed and self.cuda:  # SyncBatchNorm runs on CUDA only
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        if self.cuda and config["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.network = (
            nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device] if self.cuda else None)
            if self.distributed
            else self.model
        )

        augmentation = Augmentation(
            tuple(config["crop_size"]),
            tuple(config["scale_range"]),
            bool(config["mirror"]),
            float(config["color_jitter"]),
        )
        self.dataset = TrainingSet(self.train_spec, augmentation, self.mean, self.std, config["seed"])
        self.sampler = DistributedSampler(
            self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=config["seed"], drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // config["batch_size"]
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(self.dataset)} images make no batch of {config['batch_size']} per process")
        self.total_steps = self.steps_per_epoch * int(config["epochs"])
        self.optimizer = self._optimizer()
        power = float(config["poly_power"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1 - step / self.total_steps) ** power
        )
        weight = torch.tensor(class_weights, device=self.device) if class_weights is not None else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=self.train_spec.ignore_index)

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_miou, self.history = -1.0, []
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.epoch, self.step_in_epoch = checkpoint["epoch"], checkpoint["step_in_epoch"]
            self.global_step, self.best_miou = checkpoint["global_step"], checkpoint["best_miou"]
            self.history = checkpoint["history"]
            set_rng_state(checkpoint["rng"])

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c["optimizer"] == "adam":
            return torch.optim.Adam(
                self.model.parameters(),
                lr=c["lr"],
                betas=tuple(c["betas"]),
                eps=c["eps"],
                weight_decay=c["weight_decay"],
            )
        if c["optimizer"] == "rmsprop":
            return torch.optim.RMSprop(
                self.model.parameters(),
                lr=c["lr"],
                alpha=c["rms_decay"],
                momentum=c["momentum"],
                eps=c["eps"],
                weight_decay=c["weight_decay"],
            )
        raise TrainingError(f"unknown optimizer {c['optimizer']!r}; use adam or rmsprop")

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and bool(self.config["amp"])):
            output = self.network(images)
        if isinstance(output, tuple):
            logits, aux = output
            return self.criterion(logits.float(), labels) + self.config["aux_weight"] * self.criterion(
                aux.float(), labels
            )
        return self.criterion(output.float(), labels)

    def _loader(self) -> DataLoader:
        self.dataset.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        batch = self.config["batch_size"]
        indices = list(self.sampler)[self.step_in_epoch * batch : self.steps_per_epoch * batch]
        return DataLoader(
            self.dataset,
            batch_size=batch,
            sampler=ListSampler(indices),
            num_workers=int(self.config["workers"]),
            pin_memory=self.cuda,
            drop_last=True,
            # a private generator: worker seeds must not consume the global RNG that dropout uses
            generator=torch.Generator().manual_seed(self.config["seed"] + self.epoch),
        )

    def checkpoint(self, path: Path) -> None:
        if self.rank != 0:
            return
        state = {
            "config": self.config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_miou": self.best_miou,
            "history": self.history,
            "rng": rng_state(),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_weights": self.class_weights,
            "classes": [(c.id, c.name, list(c.color)) for c in self.train_spec.classes],
            "ignore_index": self.train_spec.ignore_index,
            "dataset": self.train_spec.name,
        }
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)

    def validate(self) -> float | None:
        if self.val_spec is None or self.rank != 0:
            return None
        predictor = ModelPredictor(self.model, self.mean, self.std, self.device)
        return evaluate(predictor, self.val_spec).matrix.miou()

    def run(self) -> None:
        max_steps = self.config["max_steps"]
        try:
            while self.epoch < self.config["epochs"]:
                if not self._train_epoch(max_steps):
                    break
        except KeyboardInterrupt:
            self.checkpoint(self.out / "last.pt")
            if self.rank == 0:
                print(f"\ninterrupted: saved {self.out / 'last.pt'}; continue with --resume {self.out / 'last.pt'}")
            raise SystemExit(130) from None
        finally:
            if self.distributed:
                dist.destroy_process_group()

    def _train_epoch(self, max_steps: int | None) -> bool:
        """One epoch (or what is left of it); False when ``max_steps`` ended the run."""
        self.network.train()
        loader = self._loader()
        losses, images_seen, start = [], 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.config['epochs']}", disable=self.rank != 0, unit="batch")
        for images, labels in bar:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.cuda and self.config["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(images, labels)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {self.global_step}; lower --lr")
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.global_step += 1
            self.step_in_epoch += 1
            losses.append(loss.item())
            images_seen += images.shape[0] * self.world
            rate = images_seen / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}", img_s=f"{rate:.1f}")
            if max_steps is not None and self.global_step >= max_steps:
                self.checkpoint(self.out / "last.pt")
                return False
        self._end_epoch(float(np.mean(losses)) if losses else math.nan, images_seen / (time.perf_counter() - start))
        return True

    def _end_epoch(self, loss: float, images_per_s: float) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        val_every = int(self.config["val_every"])
        last = self.epoch == self.config["epochs"]
        miou = self.validate() if val_every > 0 and (self.epoch % val_every == 0 or last) else None
        row = {
            "epoch": self.epoch,
            "step": self.global_step,
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_s": images_per_s,
            "val_miou": miou,
        }
        self.history.append(row)
        if miou is not None and miou > self.best_miou:
            self.best_miou = miou
            self.checkpoint(self.out / "best.pt")
        self.checkpoint(self.out / "last.pt")
        if self.rank == 0:
            self._write_history()
            shown = "" if miou is None else f", val mIoU {100 * miou:.2f}% (best {100 * self.best_miou:.2f}%)"
            print(f"epoch {self.epoch}: loss {loss:.4f}{shown}", flush=True)

    def _write_history(self) -> None:
        with open(self.out / "history.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)
        plot_training_curves(
            self.history, self.out / "curves.png", title=f"{self.config['model']} on {self.train_spec.name}"
        )


def weights_info_from_checkpoint(checkpoint: dict[str, Any], model: nn.Module) -> WeightsInfo:
    from ..weights import SegClass

    config = checkpoint["config"]
    lists = config["train_list"] if isinstance(config["train_list"], list) else [config["train_list"]]
    splits = [Path(str(name)).stem for name in lists]
    saw_val = any("val" in split for split in splits)
    history = checkpoint["history"]
    val_mious = [row["val_miou"] for row in history if row["val_miou"] is not None]
    return WeightsInfo(
        architecture=model.name,
        variant=model.variant,
        classes=[SegClass(i, name, tuple(color)) for i, name, color in checkpoint["classes"]],
        mean=tuple(checkpoint["mean"]),
        std=tuple(checkpoint["std"]),
        input_size=tuple(config["input_size"]),
        dataset=checkpoint["dataset"],
        splits=splits,
        ignore_index=checkpoint["ignore_index"],
        # a val mIoU only from weights that never saw val
        val_miou=None if saw_val or not val_mious else float(checkpoint["best_miou"]),
        epochs=int(checkpoint["epoch"]),
        commit=git_commit(),
        training={
            k: config[k]
            for k in (
                "optimizer",
                "lr",
                "batch_size",
                "crop_size",
                "epochs",
                "poly_power",
                "weight_decay",
                "aux_weight",
            )
        }
        | {"steps": checkpoint["global_step"], "best_epoch_by_val": _best_epoch(history)},
    )


def _best_epoch(history: list[dict[str, Any]]) -> int | None:
    scored = [row for row in history if row["val_miou"] is not None]
    return max(scored, key=lambda row: row["val_miou"])["epoch"] if scored else None


def export_checkpoint(checkpoint_path: str | Path, weights_path: str | Path) -> Path:
    """Write the weights of a training checkpoint as ``<name>.safetensors`` plus ``<name>.json``."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint["config"]
    model = model_from_config(config, len(checkpoint["classes"]), training=False)
    state = {k: v for k, v in checkpoint["model"].items() if not k.startswith("aux_")}
    model.load_state_dict(state)
    return save_weights(model, weights_info_from_checkpoint(checkpoint, model), weights_path)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> None:
    # Ctrl-C, kill and docker stop all save a checkpoint, also where a launching shell ignored SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    if args.resume:
        if not Path(args.resume).is_file():
            raise SystemExit(f"seg-train: checkpoint {args.resume} does not exist")
        saved = load_checkpoint(args.resume)["config"]
        config = {**saved, **{k: v for k, v in overrides.items() if v is not None}}
    else:
        config = load_config(args.config, overrides)
    try:
        trainer = Trainer(config, resume=args.resume)
        if trainer.rank == 0:
            print(
                f"training {config['model']} on {len(trainer.dataset)} images, {trainer.steps_per_epoch} steps/epoch, "
                f"{config['epochs']} epochs on {trainer.device}; out {trainer.out}",
                flush=True,
            )
        trainer.run()
    except TrainingError as error:
        raise SystemExit(f"seg-train: {error}") from error
    if config["export"] and trainer.rank == 0:
        best = trainer.out / "best.pt"
        source = best if best.is_file() else trainer.out / "last.pt"
        path = export_checkpoint(source, config["export"])
        print(f"exported {source} -> {path} (+ {path.with_suffix('.json').name})")


if __name__ == "__main__":
    sys.exit(main())
