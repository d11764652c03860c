"""What BatchNorm recalibration does to training checkpoints, scored on each one's validation list.

    python tools/batchnorm_recalibration.py runs/cgnet_drives/best.pt runs/cgnet_drives/last.pt [--json bn.json]

A maintainers' tool, not installed with the package: run it from the checkout, with seg_node importable
(the virtual environment's editable install, or a sourced colcon workspace).

The trainer recalibrates only at a run's end (``bn_recalibration``), so a run's history holds one
before/after pair. This gives the pair for any checkpoint, mid-run ones included: it resumes the
checkpoint as ``seg-train --resume`` would, scores the weights on the recipe's ``val_list`` (for the
CamVid recipes the unseen drive 0006R0), recomputes the BatchNorm statistics over the training lists
exactly as the trainer's last epoch does, and scores them again. Nothing is written beside the
checkpoint. Prints a table and, with ``--json``, writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seg_node.cli import HelpFormatter, entry_point
from seg_node.errors import UsageError
from seg_node.training.checkpoint import config_of, load_checkpoint
from seg_node.training.lineage import split_name
from seg_node.training.trainer import Trainer


def measure(checkpoint_path: Path, threads: int) -> dict[str, Any]:
    """One checkpoint's validation mIoU (%) before and after its BatchNorm statistics are recomputed."""
    config = config_of(load_checkpoint(checkpoint_path))
    if not config.val_list:
        raise UsageError(f"{checkpoint_path} trained without a validation list: there is nothing to score it on")
    config = config.updated(threads=threads, workers=0, out=str(checkpoint_path.parent))
    trainer = Trainer(config, resume=str(checkpoint_path))
    before = trainer.recalibrate_batchnorm(validated=True)
    after = trainer.validate()
    return {
        "checkpoint": str(checkpoint_path),
        "epoch": trainer.progress.epoch,
        "val_list": config.val_list,
        "before": round(100 * before, 2),
        "after": round(100 * after, 2),
        "change": round(100 * (after - before), 2),
    }


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchnorm_recalibration.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="seg-train checkpoints (last.pt, best.pt)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.checkpoints if not path.is_file()]
    if missing:
        raise UsageError(f"no such checkpoint: {', '.join(missing)}")
    rows = [measure(path, args.threads) for path in args.checkpoints]
    print("| checkpoint | epoch | scored on | mIoU before | after | change |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['checkpoint']} | {row['epoch']} | {split_name(row['val_list'])} | {row['before']:.2f}% | "
              f"{row['after']:.2f}% | {row['change']:+.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


main = entry_point("batchnorm_recalibration.py", _main)


if __name__ == "__main__":
    sys.exit(main())
