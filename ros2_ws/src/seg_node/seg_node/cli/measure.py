"""seg_node's capacity between processes, as on the car: ``python -m seg_node.cli.measure {node,dds}``.

node: seg_node in its own process fed CamVid frames (resized to each --frame-size) at --rate, or flat out
with --rate 0; in the same run the engine alone (taking turns with the node, --rounds), rclpy's own floor
and the raw floor (processes answering each frame with a prepared label and no other work, with Python
messages and with serialized bytes as the node does) and the node's stage costs. Prints a markdown table
(fps, node/engine, the node's own ms per frame = 1/node - 1/engine, the floors, own/floor, the stage
split) and --json the rows.

    python -m seg_node.cli.measure node --rate 0
    python -m seg_node.cli.measure node --rate 0 --frame-size 480x360 1280x720 1920x1080 2048x1024 \\
        --outputs label all --weights contextnet_camvid --network-size 96 128 --json out/capacity.json
    python -m seg_node.cli.measure node --rate 0 --frame-size 1920x1080 --network-label-floor
    python -m seg_node.cli.measure dds --size 2048 1024 --compare

dds: best-effort WxH rgb8 frames between two processes, with the package's Fast DDS profile and
(--compare) without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..engine.options import MAX_NETWORK_SIDE, MIN_NETWORK_SIDE
from ..ros_tools.dds import DdsSettings, measure_dds
from ..ros_tools.measure import OUTPUT_SETS, NodeMeasureSettings, format_table, measure_node
from . import HelpFormatter, entry_point
from .engine_flags import add_engine_arguments, engine_config_from_args

PROG = "seg-measure"
NODE_ENGINE_OPTIONS = ("backend", "device", "precision", "threads", "network_size")


def frame_size(text: str) -> tuple[int, int]:
    """A camera frame size WIDTHxHEIGHT (argparse type), e.g. 1920x1080."""
    try:
        width, height = (int(value) for value in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is not WIDTHxHEIGHT, e.g. 1920x1080") from error
    if not MIN_NETWORK_SIDE <= min(width, height) <= max(width, height) <= MAX_NETWORK_SIDE:
        raise argparse.ArgumentTypeError(f"frame size {text!r}: each side must be {MIN_NETWORK_SIDE} to "
                                         f"{MAX_NETWORK_SIDE} pixels")
    return width, height


def positive_int(text: str) -> int:
    """A count of at least 1, for argparse."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    defaults = NodeMeasureSettings()
    root = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    modes = root.add_subparsers(dest="mode", required=True)
    node = modes.add_parser("node", help="the node's capacity: fps, own cost, floor, stages",
                            formatter_class=HelpFormatter)
    node.add_argument("--camvid", type=Path, default=defaults.camvid, help="the CamVid folder")
    node.add_argument("--frames", type=int, default=defaults.frames, help="distinct CamVid val frames to cycle")
    node.add_argument("--frame-size", type=frame_size, nargs="+", metavar="WxH",
                      help="camera frame sizes, e.g. 480x360 1920x1080; unset: CamVid's own 480x360")
    node.add_argument("--rate", type=float, default=defaults.rate,
                      help="frames offered per second; 0: flat out, a new frame as soon as one of --in-flight is done")
    node.add_argument("--in-flight", type=int, default=defaults.in_flight,
                      help="flat out: frames awaiting their label at a time")
    node.add_argument("--seconds", type=float, default=defaults.seconds,
                      help="seconds measured per row, split over the rounds")
    node.add_argument("--rounds", type=positive_int, default=defaults.rounds,
                      help="rounds in which the engine alone and the node take turns; a row is the median one")
    node.add_argument("--warmup", type=float, default=defaults.warmup, help="seconds published before measuring")
    node.add_argument("--weights", default=defaults.weights, help="weights file or shipped name; '': cgnet_camvid")
    node.add_argument("--outputs", nargs="+", choices=tuple(OUTPUT_SETS), default=list(defaults.outputs),
                      help="subscribed outputs per row: label, or all (label, colour mask, overlay)")
    node.add_argument("--no-baseline", dest="baseline", action="store_false",
                      help="skip the engine alone and the stage costs (default: off)")
    node.add_argument("--no-floor", dest="floor", action="store_false",
                      help="skip rclpy's floor and the raw floor (default: off)")
    node.add_argument("--network-label-floor", action="store_true",
                      help="also the floor of publishing the label at network resolution + CameraInfo")
    add_engine_arguments(node, NODE_ENGINE_OPTIONS)
    dds = modes.add_parser("dds", help="delivery of large best-effort images between two processes",
                           formatter_class=HelpFormatter)
    dds.add_argument("--compare", action="store_true", help="also without the profile (Fast DDS defaults)")
    dds_defaults = DdsSettings()
    dds.add_argument("--size", type=int, nargs=2, default=dds_defaults.size, metavar=("W", "H"), help="frame size")
    dds.add_argument("--rate", type=float, default=dds_defaults.rate, help="frames per second")
    dds.add_argument("--count", type=int, default=dds_defaults.count, help="frames sent")
    for sub in (node, dds):
        sub.add_argument("--json", type=Path, help="also write the results here")
    return root


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.mode == "dds":
        settings = DdsSettings(size=tuple(args.size), rate=args.rate, count=args.count)
        results = [measure_dds(settings, profile=True)]
        results += [measure_dds(settings, profile=False)] if args.compare else []
        print(json.dumps(results, indent=2))
    else:
        settings = NodeMeasureSettings(
            camvid=args.camvid, frames=args.frames, frame_sizes=tuple(args.frame_size or ()), rate=args.rate,
            in_flight=args.in_flight, seconds=args.seconds, rounds=args.rounds, warmup=args.warmup,
            weights=args.weights,
            engine=engine_config_from_args(args), outputs=tuple(dict.fromkeys(args.outputs)),
            baseline=args.baseline, floor=args.floor, network_label_floor=args.network_label_floor)
        results = measure_node(settings)
        print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{PROG}: wrote {args.json}")
    return 0


main = entry_point(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
