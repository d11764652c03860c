"""``seg-campaign``: the papers' CamVid schedules for both models, each on train (the train-only twin) and on
train + val, side by side on one GPU within a budget of seconds: probe, fitted schedule, training, export and a
report of three files (``seg_node.training.campaign``; how to run it on a lent GPU: ``docs/gpu/training.md``).

    seg-campaign --budget 420 --out /tmp/campaign --report $OUT
    seg-campaign --models cgnet --epochs cgnet=800 --budget 540

Exit status 0 when every run finished its schedule, 1 otherwise (the report says which and why).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..training.campaign import MODELS, campaign
from . import EXIT_FAILURE, HelpFormatter, entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-campaign", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", type=lambda text: text.split(","), default=",".join(MODELS),
                        help="the models, comma-separated")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for everything, start to report")
    parser.add_argument("--out", default="runs/campaign", help="the runs (checkpoints, logs) and weights/")
    parser.add_argument("--report", help="where campaign.json, .md and .tar.gz go; unset: OUT")
    parser.add_argument("--data", default="../shared/datasets/camvid", help="CamVid root")
    parser.add_argument("--train-list", default="train.txt", help="the training list (the twin's split)")
    parser.add_argument("--val-list", default="val.txt", help="the validation list, added for train + val")
    parser.add_argument("--configs", default="configs", help="folder of the <model>_camvid.yaml recipes")
    parser.add_argument("--device", help="cuda, cuda:N or cpu; unset: seg-train's (cuda if available)")
    parser.add_argument("--threads-per-run", type=int, default=max(1, (os.cpu_count() or 4) // 4),
                        help="CPU threads of each training process")
    parser.add_argument("--epochs", action="append", default=[], metavar="MODEL=N",
                        help="a model's epochs instead of those that fit (repeatable)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a seg-train option for every run, e.g. batch-size=16 (repeatable)")
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    settings = build_parser().parse_args(argv)
    unknown = [model for model in settings.models if model not in MODELS]
    if unknown:
        raise UsageError(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    malformed = [item for item in settings.epochs + settings.override if "=" not in item]
    if malformed:
        raise UsageError(f"--epochs and --override take NAME=VALUE, not {malformed}")
    settings.train_program = [sys.executable, "-m", "seg_node.cli.train"]  # works without an installed script too
    report = campaign(settings)
    print(Path(settings.report or settings.out, "campaign.md").read_text(), flush=True)
    return 0 if all(run["outcome"] == "finished" for run in report["runs"].values()) else EXIT_FAILURE


main = entry_point("seg-campaign", _main)


if __name__ == "__main__":
    sys.exit(main())
