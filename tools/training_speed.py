"""Training throughput of the original trainer against the current one, in one run, steps interleaved.

    python tools/training_speed.py [--config configs/cgnet_camvid.yaml] [--steps 2] [--compile] [--json speed.json]

A maintainers' tool, not installed with the package: run it from the checkout, with seg_node importable
(the virtual environment's editable install, or a sourced colcon workspace).

``original``: each sample read from disk (cv2.imread) and augmented by resizing the whole image
before cropping, NCHW tensors, no device-side augmentation, every layer through ATen, and malloc's
default of returning freed memory to the kernel. ``current``: the images decoded once into memory,
crops computed directly (``augment_crop``), channels-last tensors (on CUDA: the data set on the
device, augmented there, bfloat16 autocast), CGNet's CPU training kernels (``training.cpu_training``)
and freed memory kept (``host_memory``, CPU only). Both train the same model from the same initial weights with
the same batch and crop. Each path runs in a process of its own, because keeping freed memory is a
setting of the whole process; their steps alternate, one process computing at a time, so that a
machine's changing load hits both alike. ``--compile`` adds ``compiled``: the current path with the
network compiled by ``torch.compile`` (its compiling happens in the warm-up steps and is reported
apart). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import torch
from torch import nn
from torch.utils.data import DataLoader

from seg_node.datasets import DatasetSpec
from seg_node.training.augment import Augmentation
from seg_node.training.config import TrainingConfig, TrainingError, load_config, model_from_config
from seg_node.training.cpu_training import use_cpu_training_kernels
from seg_node.training.data import ImageCache, TrainingSet, dataset_spec, normalize
from seg_node.training.device_augment import DeviceBatches
from seg_node.training.host_memory import keep_freed_memory


class TimedPath:
    """One data path with its own copy of the model and optimizer; ``step()`` times one optimizer step."""

    def __init__(
        self, config: TrainingConfig, source: DatasetSpec | ImageCache, device: torch.device, current: bool,
        compiled: bool = False,
    ) -> None:
        self.config, self.device, self.current = config, device, current
        self.cuda = device.type == "cuda"
        self.channels_last = current and config.channels_last
        augmentation = Augmentation.of(config)
        torch.manual_seed(config.seed)
        model = model_from_config(config, source.num_classes, training=True)
        use_cpu_training_kernels(model, current and config.cpu_training_kernels)
        model = model.to(device).train()
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.network = torch.compile(self.model) if compiled else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.criterion = nn.CrossEntropyLoss(ignore_index=source.ignore_index)
        self.mean = torch.tensor((124.0, 117.0, 104.0), device=device)
        self.std = torch.tensor((60.0, 60.0, 60.0), device=device)
        self.batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
        if current and self.cuda and isinstance(source, ImageCache):
            device_batches = DeviceBatches(
                source, augmentation, self.mean.tolist(), self.std.tolist(), config.seed, device, self.channels_last
            )
            indices = list(torch.randperm(len(source), generator=torch.Generator().manual_seed(0)))
            self.batches = device_batches.batches([int(i) for i in indices] * 100, config.batch_size)
        else:
            dataset = TrainingSet(source, augmentation, config.seed, fast=current)
            loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                shuffle=True,
                num_workers=config.workers,
                drop_last=True,
                generator=torch.Generator().manual_seed(0),
            )
            self.batches = self._normalized(loader)
        self.times: list[float] = []

    def _normalized(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            for images, labels in loader:
                images = normalize(images.to(self.device), self.mean, self.std, self.channels_last)
                yield images, labels.to(self.device)

    def step(self) -> float:
        start = time.perf_counter()
        images, labels = next(self.batches)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.current and self.cuda and self.config.amp):
            output = self.network(images)
        logits = output[0] if isinstance(output, tuple) else output
        self.criterion(logits.float(), labels).backward()
        self.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.times.append(elapsed)
        return elapsed

    def images_per_s(self, warmup: int) -> float:
        timed = self.times[warmup:]
        return self.config.batch_size / statistics.mean(timed)


def data_only_rate(source: DatasetSpec | ImageCache, config: TrainingConfig, fast: bool, samples: int) -> float:
    """Augmented samples per second of the data path alone, in this process."""
    augmentation = Augmentation.of(config)
    dataset = TrainingSet(source, augmentation, config.seed, fast=fast)
    start = time.perf_counter()
    for index in range(samples):
        dataset[index % len(dataset)]
    return samples / (time.perf_counter() - start)


def _receive(connection: Connection) -> str | int:
    try:
        return connection.recv()
    except EOFError:  # the benchmark ended early: stop with it
        return "stop"


def _serve_path(connection: Connection, name: str, config: TrainingConfig, compiled: bool) -> None:
    """A path's process: builds it, then answers "step" with a step's seconds and a warm-up count with its row."""
    cv2.setNumThreads(1)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    current = name != "original"
    if current and device.type == "cpu" and config.keep_freed_memory:
        keep_freed_memory()
    spec = dataset_spec(config, config.train_list)
    source = ImageCache(spec, show_progress=False) if current else spec
    path = TimedPath(config, source, device, current, compiled)
    connection.send({"device": str(device), "threads": torch.get_num_threads()})
    while (request := _receive(connection)) != "stop":
        if request == "step":
            connection.send(path.step())
        else:
            warmup = request
            connection.send({
                "images_per_s": path.images_per_s(warmup),
                "step_s": [round(t, 3) for t in path.times[warmup:]],
                "warmup_s": round(sum(path.times[:warmup]), 1),  # with compiling, for the compiled path
                "data_only_images_per_s": data_only_rate(source, config, current, 16),
            })


def describe_processor(device: torch.device) -> str:
    """The chip the paths ran on, for the JSON: processors of one name (the project's "AMD EPYC") differ in
    generation and vector units, and the speed-ups with them."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    flags = set(fields.get("flags", "").split())
    widest = next((name for name, flag in (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2"))
                   if flag in flags), "no AVX2")
    return (f"{fields.get('model name', platform.machine())}, family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}, {widest}, {os.cpu_count()} cores")


def benchmark(config: TrainingConfig, steps: int, warmup: int, compiled: bool = False) -> dict:
    names = ["original", "current"] + (["compiled"] if compiled else [])
    context = multiprocessing.get_context("spawn")  # a fresh process per path, with malloc's defaults
    connections, processes = {}, []
    for name in names:
        ours, theirs = context.Pipe()
        # not a daemon: a path's data loader starts processes of its own
        process = context.Process(target=_serve_path, args=(theirs, name, config, name == "compiled"))
        process.start()
        connections[name] = ours
        processes.append(process)

    def ask(name: str, request: str | int | None = None) -> Any:
        try:
            if request is not None:
                connections[name].send(request)
            return connections[name].recv()
        except (EOFError, BrokenPipeError) as error:
            raise TrainingError(f"the {name} path's process ended early; its error is printed above") from error

    try:
        setup = {name: ask(name) for name in names}
        for number in range(warmup + steps):
            for name in names:
                print(f"step {number + 1}/{warmup + steps} {name}: {ask(name, 'step'):.2f} s", flush=True)
        rows = {name: ask(name, warmup) for name in names}
        for connection in connections.values():
            connection.send("stop")
    finally:
        for connection in connections.values():
            connection.close()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return {
        "model": config.model,
        "variant": config.variant,
        "batch_size": config.batch_size,
        "crop_size": list(config.crop_size),
        "device": setup["current"]["device"],
        "processor": describe_processor(torch.device(setup["current"]["device"])),
        "threads": setup["current"]["threads"],
        "workers": config.workers,
        "steps": steps,
        "warmup": warmup,
        "paths": rows,
        "speedup": {name: row["images_per_s"] / rows["original"]["images_per_s"] for name, row in rows.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe (default: the built-in defaults, CGNet on CamVid)")
    parser.add_argument("--variant", help="model variant, e.g. M3N21")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[360, 360], metavar=("H", "W"))
    parser.add_argument("--workers", type=int, help="data loader processes (default: the recipe's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, help="CPU threads per path (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per path first")
    parser.add_argument("--compile", action="store_true", help="also time the current path under torch.compile")
    parser.add_argument("--json", type=Path, default=Path("runs/speed.json"))
    args = parser.parse_args(argv)
    overrides = {"batch_size": args.batch_size, "crop_size": args.crop, "workers": args.workers,
                 "variant": args.variant, "device": args.device, "threads": args.threads}
    config = load_config(args.config, overrides)
    result = benchmark(config, args.steps, max(args.warmup, 1 if args.compile else 0), args.compile)
    shown = f"{config.model} {config.variant or '(default variant)'}, batch {config.batch_size}"
    print(f"\n{shown}, crop {config.crop_size[0]}x{config.crop_size[1]}, {result['device']} "
          f"({result['processor']})")
    print(f"{'path':<10} {'images/s':>9} {'vs original':>12} {'warm-up s':>10} {'data only images/s':>19}")
    for name, row in result["paths"].items():
        print(f"{name:<10} {row['images_per_s']:>9.2f} {result['speedup'][name]:>11.2f}x {row['warmup_s']:>10.1f} "
              f"{row['data_only_images_per_s']:>19.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
