"""seg-demo (make demo): the real system over DDS on the bundled recording, then the figures.

A player publishes the recording's camera images at their recorded rate, the
node segments them and a recorder stores the node's outputs and
/diagnostics; at the end the outputs are scored against the recording's
truth (mIoU), and --out receives overlay PNGs, demo.mp4, report.json and
report.md with plots.

    seg-demo                                   # CGNet on the bundled recording
    seg-demo --model contextnet --backend onnxruntime
    seg-demo --bag my_drive --image-topic /front/image_raw --label-topic /front/labels
    seg-demo --camera-topic /camera/image_raw --duration 30   # a live camera instead of the player
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from ..metrics import format_iou_table, percent
from ..models import MODELS
from ..ros_tools.demo import DEFAULT_BAG, DEFAULT_IMAGE_TOPIC, DEFAULT_LABEL_TOPIC, DemoOptions, run_demo
from . import HelpFormatter, entry_point
from .engine_flags import add_engine_arguments

# the engine options the node takes as parameters
ENGINE_FLAGS = ("backend", "precision", "device", "network_size", "threads")


def parser() -> argparse.ArgumentParser:
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(prog="seg-demo", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", choices=tuple(MODELS), default=defaults.model, help="shipped CamVid weights")
    parser.add_argument("--weights", type=Path, help="a weights file instead of --model's")
    parser.add_argument("--bag", type=Path, default=DEFAULT_BAG, help="recording to play")
    parser.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="camera topic of the recording")
    parser.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC, help="truth labels; '' for none")
    parser.add_argument("--first", type=int, default=defaults.first, help="first image of the recording to play")
    parser.add_argument("--count", type=int, help="number of images to play; unset: all")
    parser.add_argument("--camera-topic", help="segment a live camera topic instead of playing a bag")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds to run with --camera-topic")
    parser.add_argument("--expected-fps", type=float, default=defaults.expected_fps,
                        help="the node warns below this output rate")
    parser.add_argument("--idle", type=float, default=defaults.idle, help="seconds without outputs that end the run")
    parser.add_argument("--startup-timeout", type=float, default=defaults.startup_timeout,
                        help="seconds for the node to come up")
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID of the run; unset: a random one in 100..200")
    parser.add_argument("--out", type=Path, default=defaults.out, help="output folder")
    add_engine_arguments(parser, ENGINE_FLAGS)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(DemoOptions) if hasattr(args, f.name)}
    if args.domain_id is None:
        del values["domain_id"]  # DemoOptions picks one
    options = DemoOptions(**values, engine={name: getattr(args, name) for name in ENGINE_FLAGS})
    started = time.monotonic()
    report = run_demo(options)
    frames, latency = report["frames"], report["latency_over_dds_ms"]
    print(
        f"seg-demo: {frames['segmented']} of {frames['published'] or 'the camera'} frames segmented in "
        f"{time.monotonic() - started:.0f} s; latency over DDS p50 {latency['p50'] or 0:.0f} ms"
    )
    if report["accuracy"] is not None:
        print(format_iou_table(report["accuracy"]))
        print(f"seg-demo: mIoU {percent(report['accuracy']['miou'])}% on {frames['scored']} frames "
              f"({report['weights_training']['note']})")
    print(f"seg-demo: wrote {args.out}/report.md, report.json, {report['files'].get('video', 'no video')}, overlays/")
    return 0


main = entry_point("seg-demo", _main)


if __name__ == "__main__":
    sys.exit(main())
