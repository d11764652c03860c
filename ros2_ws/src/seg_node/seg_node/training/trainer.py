"""The Trainer: CGNet or ContextNet on a data set, with exact resume, validation and throughput logging.

A checkpoint (model, optimizer, scheduler, epoch, RNG states) is written at the end of an epoch, at
most every ``CHECKPOINT_EVERY_S`` seconds (on a GPU a CamVid epoch is a matter of seconds, and writing
the checkpoint and plotting the curves after each would take a large share of them), and always after a
validation, after the last epoch and on Ctrl-C; resuming continues exactly where it stopped. The
best checkpoint by val mIoU is kept as ``best.pt``; ``history.csv`` (every epoch) and ``curves.png``
record loss, learning rate, images/s and val mIoU.

Data paths: the training images are decoded once into memory (``cache_gb``). On the CPU, data
loader processes crop them (``augment_crop``) and the network runs channels-last. On CUDA, the
cached data set lives on the device and is augmented there (``device_augment``), with bfloat16
autocast and channels-last.
"""

from __future__ import annotations

import csv
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..datasets import DatasetSpec, enet_class_weights, label_histogram, mean_std
from ..engine.graph import Preprocess
from ..evaluation.evaluate import evaluate_model, weights_info_for
from ..plots import plot_training_curves
from ..progress import progress_bar
from .augment import Augmentation
from .batchnorm import recalibrate_batchnorm
from .checkpoint import (
    DataStats,
    Progress,
    load_checkpoint,
    load_initial_weights,
    restore,
    save_checkpoint,
    stats_of,
    training_state,
)
from .config import TrainingConfig, TrainingError, model_from_config
from .cpu_training import use_cpu_training_kernels
from .cutmix import cut_mix, mixing_rng
from .data import ImageCache, ListSampler, TrainingSet, dataset_spec, normalize, whole_frames
from .device_augment import DeviceBatches
from .distillation import Teacher, distillation_loss
from .host_memory import keep_freed_memory
from .lineage import describe_hardware, earlier_stages, split_name, split_names
from .losses import SegmentationLoss

LOG_EVERY = 10  # steps between progress-bar updates (each one reads the loss back from the device)
CHECKPOINT_EVERY_S = 30.0  # at most this often, at an epoch's end, last.pt and curves.png are written again


def setup_distributed(config: TrainingConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and distributed:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return rank, world, torch.device(device)


def dataset_statistics(source: DatasetSpec | ImageCache, config: TrainingConfig) -> DataStats:
    """Mean and standard deviation of the training images and, for ``class_weighting: enet``, class weights."""
    mean, std = mean_std(source)
    weights = enet_class_weights(label_histogram(source)).tolist() if config.class_weighting == "enet" else None
    return DataStats(mean, std, weights)


def build_optimizer(
    config: TrainingConfig, model: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The recipe's optimizer and its poly schedule, stepped once per iteration."""
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.RMSprop(
            model.parameters(),
            lr=config.lr,
            alpha=config.rms_decay,
            momentum=config.momentum,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )
    power = config.poly_power
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps) ** power)
    return optimizer, scheduler


class Trainer:
    def __init__(
        self, config: TrainingConfig, resume: str | None = None, stop_requested: threading.Event | None = None
    ) -> None:
        """``stop_requested``: set by a signal handler; the run stops as on Ctrl-C at the next step (a
        KeyboardInterrupt raised inside a garbage collector's callback is printed and dropped by Python)."""
        self.config = config
        self.stop_requested = stop_requested or threading.Event()
        self._set_up_process()
        checkpoint = load_checkpoint(resume) if resume else None

        self.train_spec = dataset_spec(config, config.train_list)
        self.val_spec = dataset_spec(config, config.val_list) if config.val_list else None
        fits = ImageCache.fits(self.train_spec, config.cache_gb)
        self.source = ImageCache(self.train_spec, show_progress=self.rank == 0) if fits else self.train_spec
        self.stats = stats_of(checkpoint) if checkpoint else dataset_statistics(self.source, config)

        torch.manual_seed(config.seed)
        self.model, self.eager_network = self._build_model()
        # compiled lazily, at the first step; validation and checkpoints use the plain model
        self.network = torch.compile(self.eager_network) if config.compile else self.eager_network
        self.provenance = self._provenance(checkpoint)
        if config.init and checkpoint is None:
            self._start_from_initial_weights()
        self._build_data()
        self.teacher = self._build_teacher()
        if self.teacher is not None:
            self.provenance["teacher"] = self.teacher.provenance()
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer, self.scheduler = build_optimizer(config, self.model, self.total_steps)
        self.criterion = self._build_loss()
        # validated, saved in best.pt and exported in place of the trained weights when kept
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema_decay else None
        )
        self.progress = (
            restore(checkpoint, self.model, self.optimizer, self.scheduler, self.ema) if checkpoint else Progress()
        )
        self._saved_at = time.perf_counter()

    def _set_up_process(self) -> None:
        """This process's place in the run (rank, device), its threads and allocator, and the output folder."""
        config = self.config
        self.rank, self.world, self.device = setup_distributed(config)
        self.distributed, self.cuda = self.world > 1, self.device.type == "cuda"
        if config.threads:
            torch.set_num_threads(config.threads)
        cv2.setNumThreads(1)  # one per data loader process; the network gets the cores
        if config.keep_freed_memory and not self.cuda:
            keep_freed_memory()
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def _provenance(self, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        """What the exported JSON says the weights went through (training.lineage): the resumed run's, plus
        this machine."""
        previous, here = checkpoint or {}, describe_hardware(self.device)
        hardware = list(previous.get("hardware", []))
        return {
            "earlier_stages": previous.get("earlier_stages", []),
            "hardware": hardware if here in hardware else [*hardware, here],
        }

    def _start_from_initial_weights(self) -> None:
        """Load ``config.init`` into the model, with the input normalisation its features expect."""
        config = self.config
        info = load_initial_weights(self.model, config.init)
        self.stats.mean, self.stats.std = info.mean, info.std  # the weights' features expect their inputs
        self.provenance["earlier_stages"] = earlier_stages(info)
        if self.provenance["earlier_stages"][-1].get("seed") == config.seed and self.rank == 0:
            print(
                f"note: {Path(config.init).name}'s last stage trained with seed {config.seed} too, so this run "
                "draws the same crops, flips and order again; --seed with another number draws new ones",
                flush=True,
            )

    def _build_teacher(self) -> Teacher | None:
        """The distillation teacher of ``config.teacher``, if any."""
        c = self.config
        if not c.teacher:
            return None
        return Teacher(c.teacher, self.train_spec.num_classes, self.mean, self.std, self.device, c.channels_last,
                       shares=c.teacher_shares, flip=c.teacher_flip)

    def _build_loss(self) -> SegmentationLoss:
        c = self.config
        weight = self.stats.class_weights
        return SegmentationLoss(
            torch.tensor(weight, device=self.device) if weight is not None else None,
            self.train_spec.ignore_index,
            c.lovasz_weight,
            c.ohem_threshold,
            c.ohem_min_kept,
        )

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.stats.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.stats.std)

    def _build_model(self) -> tuple[nn.Module, nn.Module]:
        """The model (what checkpoints hold) and the network that trains it (DDP-wrapped if distributed)."""
        model = model_from_config(self.config, self.train_spec.num_classes, training=True)
        if self.distributed and self.cuda:  # SyncBatchNorm runs on CUDA only
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.config.cpu_training_kernels:  # they run only on CPU tensors
            use_cpu_training_kernels(model)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if not self.distributed:
            return model, model
        return model, nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if self.cuda else None)

    def _build_data(self) -> None:
        c = self.config
        augmentation = Augmentation.of(c)
        self.dataset = TrainingSet(self.source, augmentation, c.seed)
        self.sampler = DistributedSampler(
            self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=c.seed, drop_last=True
        )
        self.steps_per_epoch = len(self.sampler) // c.batch_size
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(self.dataset)} images make no batch of {c.batch_size} per process")
        self.device_batches = None
        if self.cuda and isinstance(self.source, ImageCache):
            self.device_batches = DeviceBatches(
                self.source, augmentation, self.mean, self.std, c.seed, self.device, c.channels_last
            )
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device)
        self._std = torch.tensor(self.std, dtype=torch.float32, device=self.device)

    def _epoch_indices(self) -> list[int]:
        """This process's sample order for the current epoch, less the batches done before a resume."""
        self.sampler.set_epoch(self.progress.epoch)
        batch = self.config.batch_size
        return list(self.sampler)[self.progress.step_in_epoch * batch : self.steps_per_epoch * batch]

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised image batches and labels on the device, for the rest of the current epoch."""
        indices = self._epoch_indices()
        if self.device_batches is not None:
            self.device_batches.set_epoch(self.progress.epoch)
            yield from self.device_batches.batches(indices, self.config.batch_size)
            return
        self.dataset.set_epoch(self.progress.epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=ListSampler(indices),
            num_workers=self.config.workers,
            pin_memory=self.cuda,
            drop_last=True,
            # a private generator: worker seeds must not consume the global RNG that dropout uses
            generator=torch.Generator().manual_seed(self.config.seed + self.progress.epoch),
        )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            yield normalize(images, self._mean, self._std, self.config.channels_last), labels.to(self.device)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and c.amp):
            output = self._forward(images)
            logits, aux = output if isinstance(output, tuple) else (output, None)
            teacher_logits = self.teacher(images, logits.shape[2:]) if self.teacher is not None else None
        loss = self.criterion(logits.float(), labels)
        if aux is not None:
            loss = loss + c.aux_weight * self.criterion(aux.float(), labels)
        if teacher_logits is not None:
            distilled = distillation_loss(
                logits.float(), teacher_logits.float(), labels, self.train_spec.ignore_index, c.distill_temperature
            )
            loss = loss + c.distill_weight * distilled
        return loss

    def _forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        try:
            return self.network(images)
        except Exception as error:
            from torch._dynamo.exc import TorchDynamoException  # here, not on every step

            # no C++ compiler, an operator Inductor cannot lower, ...: anything else is not compiling's fault
            if self.network is self.eager_network or not isinstance(error, TorchDynamoException):
                raise
            if self.rank == 0:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                print(f"\ntorch.compile failed ({reason[:300]}); training goes on uncompiled", flush=True)
            self.network = self.eager_network
            return self.network(images)

    def checkpoint(self, path: Path) -> None:
        if self.rank == 0:
            state = training_state(
                self.config, self.model, self.optimizer, self.scheduler, self.progress, self.stats, self.train_spec,
                self.provenance, self.ema,
            )
            save_checkpoint(state, path)

    def validate(self) -> float | None:
        """Val mIoU of the current weights (their average, if kept) through the node's engine: the one place the
        trainer uses evaluation."""
        if self.val_spec is None or self.rank != 0:
            return None
        model = self.ema.module if self.ema is not None else self.model
        return evaluate_model(model, (self.mean, self.std), self.val_spec, self.device).matrix.miou()

    def run(self) -> None:
        """Train to the last epoch (or ``max_steps``); Ctrl-C saves ``last.pt`` and raises KeyboardInterrupt."""
        self._run_started = time.perf_counter()
        try:
            while self.progress.epoch < self.config.epochs:
                if not self._train_epoch(self.config.max_steps):
                    break
        except KeyboardInterrupt:
            self.checkpoint(self.out / "last.pt")
            if self.rank == 0:
                print(f"\ninterrupted: saved {self.out / 'last.pt'}; continue with --resume {self.out / 'last.pt'}")
            raise
        finally:
            if self.distributed:
                dist.destroy_process_group()

    def _train_epoch(self, max_steps: int | None) -> bool:
        """One epoch (or what is left of it); False when ``max_steps`` ended the run."""
        self.network.train()
        p = self.progress
        loss_sum, steps, images_seen = torch.zeros((), device=self.device), 0, 0
        start = time.perf_counter()
        total = self.steps_per_epoch - p.step_in_epoch
        bar = progress_bar(
            self._batches(), total=total, desc=f"epoch {p.epoch + 1}/{self.config.epochs}", disable=self.rank != 0
        )
        for images, labels in bar:
            if self.stop_requested.is_set():
                raise KeyboardInterrupt("stop requested")
            if self.config.cutmix:
                rng = mixing_rng(self.config.seed, p.global_step, self.rank)
                images, labels = cut_mix(images, labels, self.config.cutmix, rng)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(images, labels)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            p.global_step += 1
            p.step_in_epoch += 1
            loss_sum += loss.detach()
            steps += 1
            images_seen += images.shape[0] * self.world
            stop = max_steps is not None and p.global_step >= max_steps
            if steps % LOG_EVERY == 0 or steps == total or stop:
                self._check_and_show(bar, loss, loss_sum / steps, images_seen / (time.perf_counter() - start))
            if stop:
                self.checkpoint(self.out / "last.pt")
                return False
        loss = float(loss_sum / steps) if steps else math.nan
        self._end_epoch(loss, images_seen / (time.perf_counter() - start))
        return True

    def _check_and_show(self, bar: tqdm, loss: torch.Tensor, mean_loss: torch.Tensor, rate: float) -> None:
        value = float(loss.detach())
        if not math.isfinite(value) or not math.isfinite(float(mean_loss)):
            raise TrainingError(f"loss became {value} by step {self.progress.global_step}; lower --lr")
        # shown with the next redraw: a forced one here would defeat the bar's calm mode in logs
        bar.set_postfix(
            loss=f"{value:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}", img_s=f"{rate:.1f}", refresh=False
        )

    def _end_epoch(self, loss: float, images_per_s: float) -> None:
        p = self.progress
        p.epoch += 1
        p.step_in_epoch = 0
        val_every = self.config.val_every
        last = p.epoch == self.config.epochs
        recalibrated = last and self.config.bn_recalibration
        before_recalibration = self.recalibrate_batchnorm(validated=val_every > 0) if recalibrated else None
        miou = self.validate() if val_every > 0 and (p.epoch % val_every == 0 or last) else None
        row = {
            "epoch": p.epoch,
            "step": p.global_step,
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_s": images_per_s,
            # wall-clock seconds since this process began training, at the end of this epoch's validation
            "time_s": round(time.perf_counter() - self._run_started, 3),
            "val_miou": miou,
        }
        if recalibrated:
            row["val_miou_before_bn_recalibration"] = before_recalibration
        p.history.append(row)
        if miou is not None and miou > p.best_miou:
            p.best_miou = miou
            self.checkpoint(self.out / "best.pt")
        due = last or miou is not None or time.perf_counter() - self._saved_at >= CHECKPOINT_EVERY_S
        if due:
            self.checkpoint(self.out / "last.pt")
            self._saved_at = time.perf_counter()
        if self.rank == 0:
            self._write_history(plot=due)
            shown = "" if miou is None else f", val mIoU {100 * miou:.2f}% (best {100 * p.best_miou:.2f}%)"
            print(f"epoch {p.epoch}: loss {loss:.4f}, {images_per_s:.2f} images/s{shown}", flush=True)

    def recalibrate_batchnorm(self, validated: bool) -> float | None:
        """The final weights' BatchNorm statistics recomputed over the training images (training.batchnorm);
        returns the val mIoU they had before, when the run validates."""
        before = self.validate() if validated else None
        c = self.config
        model = self.ema.module if self.ema is not None else self.model
        preprocess = Preprocess(weights_info_for(model, self.mean, self.std), c.input_size).to(self.device)
        seen = recalibrate_batchnorm(model, whole_frames(self.source, preprocess, c.batch_size, self.device))
        if self.rank == 0:
            shown = "" if before is None else f"; val mIoU before: {100 * before:.2f}%"
            height, width = c.input_size
            print(f"BatchNorm statistics recomputed over {seen} training images at {height}x{width}{shown}", flush=True)
        return before

    def _write_history(self, plot: bool) -> None:
        with open(self.out / "history.csv", "w", newline="") as stream:
            # every row's columns: a run resumed from an older checkpoint has rows without time_s
            columns = list(dict.fromkeys(key for row in self.progress.history for key in row))
            writer = csv.DictWriter(stream, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.progress.history)
        if plot:
            # the split names the weights card records (its stages' splits and chosen_on)
            trained_on = " + ".join(split_names(self.config.train_list))
            plot_training_curves(self.progress.history, self.out / "curves.png",
                                 title=f"{self.config.model} trained on {trained_on}",
                                 scored_on=split_name(self.config.val_list))
