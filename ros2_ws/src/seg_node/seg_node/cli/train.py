"""``seg-train``: train CGNet or ContextNet from a YAML recipe; every value can be overridden on the command line.

    seg-train --config configs/cgnet_camvid.yaml [--epochs 300] [--lr 0.002] [--out runs/x]
    seg-train --config configs/cgnet_camvid.yaml --init weights/cgnet_camvid.safetensors   (warm start)
    seg-train --resume runs/x/last.pt [--epochs 900]
    torchrun --nproc-per-node 4 -m seg_node.cli.train --config ...   (DistributedDataParallel)

A checkpoint is written at the end of an epoch (at most every 30 s), after each validation and
the last epoch, and on Ctrl-C; ``--resume`` continues exactly where it stopped. ``history.csv``
and ``curves.png`` record loss, learning rate, images/s and val mIoU.
With ``--export weights/<name>.safetensors`` the best (or last) weights are written with their
JSON at the end. Option values are YAML: ``--crop-size "[360, 360]"``, ``--val-list "''"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..errors import UsageError
from ..training.checkpoint import config_of, export_checkpoint, load_checkpoint
from ..training.config import TrainingConfig, load_config
from ..training.trainer import Trainer
from . import HelpFormatter, entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-train", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", help="YAML recipe (configs/*.yaml)")
    parser.add_argument("--resume", help="checkpoint to continue from (its recipe is used; options still override)")
    defaults = TrainingConfig()
    for item in dataclasses.fields(TrainingConfig):
        default = getattr(defaults, item.name)
        shown = list(default) if isinstance(default, tuple) else default
        parser.add_argument(
            f"--{item.name.replace('_', '-')}",
            dest=item.name,
            type=yaml.safe_load,
            default=argparse.SUPPRESS,  # only the options given override the recipe
            help=f"{item.metadata['help']} (default: {shown!r})",
        )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    overrides = {k: v for k, v in vars(args).items() if k in TrainingConfig.keys()}
    if not args.resume:
        return load_config(args.config, overrides)
    if args.config:
        raise UsageError("--resume continues with the checkpoint's recipe; leave out --config")
    if not Path(args.resume).is_file():
        raise UsageError(f"checkpoint {args.resume} does not exist")
    return config_of(load_checkpoint(args.resume)).updated(**overrides)


STOP_REQUESTED = threading.Event()


def _interrupt(signum: int, _frame: object) -> None:
    # The flag as well as the exception: Python drops an exception raised while a weakref or __del__
    # callback runs (a run went on after one Ctrl-C that landed in validation); the trainer checks the
    # flag before every step.
    STOP_REQUESTED.set()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C, kill and docker stop all save a checkpoint, also where a launching shell ignored SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    trainer = Trainer(config, resume=args.resume, stop_requested=STOP_REQUESTED)
    if trainer.rank == 0:
        print(
            f"training {config.model} on {len(trainer.dataset)} images, {trainer.steps_per_epoch} steps/epoch, "
            f"{config.epochs} epochs on {trainer.device}; out {trainer.out}",
            flush=True,
        )
    trainer.run()
    if config.export and trainer.rank == 0:
        best = trainer.out / "best.pt"
        source = best if best.is_file() else trainer.out / "last.pt"
        path = export_checkpoint(source, config.export)
        print(f"exported {source} -> {path} (+ {path.with_suffix('.json').name})")
    return 0


main = entry_point("seg-train", _main)


if __name__ == "__main__":
    sys.exit(main())
