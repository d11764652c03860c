"""seg-replay: segment every image of a rosbag2 recording and report speed and accuracy.

    seg-replay BAG --image-topic T [--label-topic L] [--weights W] [--backend B] [--out DIR] [--realtime]
    seg-replay RECORDING --image-topic T --label-topic L --prediction-topic /seg_node/<camera>/label

The frames go through the node's engine and FramePipeline (no ROS needed).
DIR receives report.json, report.md with PNG plots, and segmented/: a bag in
the input's storage with the input images, the truth labels and the node's
outputs at the original stamps. With --prediction-topic the predictions are
those of a running node, recorded with its inputs and the labels, and
nothing is run. A bag that breaks off half-way or holds damaged chunks gives
a report of what was read, a warning, and exit status 1; so do damaged images
or labels (refused and counted, never scored), and a replay that segmented
or scored nothing. Exit status 2: a usage error (unknown topic, bad option).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine import create_engine
from ..evaluation.replay import check_bag, replay
from ..evaluation.report import fmt
from ..metrics import format_iou_table
from ..weights import find_weights, read_info
from . import EXIT_FAILURE, HelpFormatter, entry_point
from .engine_flags import add_engine_arguments, engine_config_from_args

ENGINE_FLAGS = ("backend", "precision", "device", "network_size", "threads", "engine_cache_dir", "cuda_graphs",
                "int8_calibration_dir")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-replay", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--label-topic", help="truth labels (mono8 Image or PNG CompressedImage), same stamps")
    parser.add_argument("--prediction-topic",
                        help="score the node's recorded label topic instead of running the engine "
                             "(--weights names the classes)")
    parser.add_argument("--weights", default="", help="weights .safetensors or a shipped name; empty: cgnet_camvid")
    parser.add_argument("--out", type=Path, default=Path("out/replay"), help="output folder")
    parser.add_argument("--realtime", action="store_true", help="replay at the recorded rate (drops as on the car)")
    parser.add_argument("--no-bag", action="store_true", help="skip writing the segmented bag")
    add_engine_arguments(parser, ENGINE_FLAGS)
    return parser


def print_summary(report: dict[str, Any]) -> None:
    frames, fps, latency = report["frames"], report["fps"], report["latency_ms"]
    print(
        f"{report['model']} on {report['backend']}: {frames['processed']}/{frames['read']} frames, "
        f"engine {fmt(fps['engine'])} fps, end to end {fmt(fps['end_to_end'])} fps, latency p50/p95/p99 "
        f"{fmt(latency['p50'])}/{fmt(latency['p95'])}/{fmt(latency['p99'])} ms, "
        f"dropped in real time: {frames['dropped_realtime']}"
    )
    if report["accuracy"] is not None:
        print(format_iou_table(report["accuracy"]))
    for problem in ([report["read_error"]] if report["read_error"] else []) + report["warnings"]:
        print(f"warning: {problem}", file=sys.stderr)
    for problem in report["errors"][:5]:
        print(f"problem: {problem}", file=sys.stderr)
    if len(report["errors"]) > 5:
        print(f"... {len(report['errors']) - 5} more problems in report.md", file=sys.stderr)


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    weights = find_weights(args.weights)
    check_bag(args.bag, args.image_topic, args.label_topic, args.prediction_topic)
    engine = info = None
    if args.prediction_topic:
        info = read_info(weights)
    else:
        engine = create_engine(weights, engine_config_from_args(args))
    try:
        report = replay(args.bag, args.image_topic, engine, args.out, label_topic=args.label_topic,
                        prediction_topic=args.prediction_topic, info=info, realtime=args.realtime,
                        write_bag=not args.no_bag, weights=weights)
    finally:
        if engine is not None:
            engine.close()
    print_summary(report)
    print(f"wrote {args.out}/report.json, report.md" + (", segmented/" if "segmented_bag" in report["outputs"] else ""))
    for failure in report["failures"]:  # damaged input, refused and counted, or nothing segmented or scored
        print(f"seg-replay: {failure}", file=sys.stderr)
    return EXIT_FAILURE if report["failures"] else 0


main = entry_point("seg-replay", _main)


if __name__ == "__main__":
    sys.exit(main())
