"""``python -m seg_node.cli.bag_player BAG --topic T``: publish a recording's camera images at the recorded rate.

A small ``ros2 bag play`` for machines without the ros2 CLI (the demo's player). It waits until a
subscriber is matched (the node, which subscribes only once its engine is built), then publishes each
image when its recorded time comes. With ``--restamp`` (the default) every header gets the time of
publication, so the node's latency figures mean what they do on a car; the pairs (original stamp,
published stamp) go to ``--stamps FILE`` (JSON) so a recording of the outputs can be matched to the
bag's labels. Arguments it does not know (``--ros-args ...``) go to rclpy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--topic", required=True, help="image topic in the bag")
    parser.add_argument("--remap", help="publish on this topic instead of --topic")
    parser.add_argument("--first", type=int, default=0, help="index of the first image to publish")
    parser.add_argument("--count", type=int, help="number of images (unset: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor of the recorded timing")
    parser.add_argument("--restamp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--depth", type=int, default=5, help="publisher history depth")
    parser.add_argument("--wait-subscribers", type=int, default=1)
    parser.add_argument("--wait-timeout", type=float, default=120.0, help="seconds to wait for the subscribers")
    parser.add_argument("--linger", type=float, default=0.5, help="seconds to stay after the last frame")
    parser.add_argument("--stamps", type=Path, help="write the (original, published) stamps here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..ros_tools.bag_player import PlayerSettings, run

    args, ros_args = build_parser().parse_known_args(argv)
    return run(PlayerSettings(**vars(args)), ros_args)


if __name__ == "__main__":
    sys.exit(main())
