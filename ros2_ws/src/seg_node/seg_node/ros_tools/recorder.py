"""``python -m seg_node.ros_tools.recorder OUT --topic NAME:TYPE ...``: record topics to a rosbag2, print diagnostics.

A small ``ros2 bag record`` for machines without the ros2 CLI (the demo's
recorder). Messages are stored as they arrive (serialized, receive time as
log time). ``/diagnostics``, when recorded, is also printed as it comes: one
line per status. ``--stop-after-idle S`` ends the recording S seconds after
the last message on a non-diagnostics topic (once one has come), so a caller
knows when the outputs of a finished player have all arrived; ``--ready-file``
tells it when every topic has a publisher, so that a player can start without
the first outputs going to a recorder not yet discovered.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from ..recording.rosbag import STORAGES, BagWriter

DIAGNOSTICS = "/diagnostics"
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
# The figures of a camera status worth a line on the console; the rest is in the recording.
SHOWN_KEYS = (
    "output_fps",
    "latency_p50_ms",
    "latency_p95_ms",
    "frames_received",
    "frames_published",
    "frames_dropped",
    "bad_frames",
    "engine_errors",
)


def message_class(type_name: str) -> Any:
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def format_status(status: DiagnosticStatus) -> str:
    values = {v.key: v.value for v in status.values}
    shown = [f"{key}={values[key]}" for key in SHOWN_KEYS if key in values]
    if not shown:  # the engine's status: what runs where
        shown = [f"{key}={values[key]}" for key in ("backend", "device", "input_resolution") if key in values]
    level = LEVELS.get(int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else status.level)
    return f"[diagnostics] {status.name}: {level} {status.message} | {' '.join(shown)}"


class Recorder(Node):
    def __init__(self, writer: BagWriter, topics: list[tuple[str, str]], print_diagnostics: bool) -> None:
        super().__init__("seg_recorder")
        self.writer = writer
        self.last_data_message: float | None = None
        self.counts = {topic: 0 for topic, _ in topics}
        self.last_lines: dict[str, str] = {}
        self.subscriptions_: list[Any] = []
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic, type_name in topics:
            show = print_diagnostics and topic == DIAGNOSTICS

            def on_message(data: bytes, topic: str = topic, type_name: str = type_name, show: bool = show) -> None:
                self.writer.write_raw(topic, type_name, data, time.time_ns())
                self.counts[topic] += 1
                if topic != DIAGNOSTICS:
                    self.last_data_message = time.monotonic()
                elif show:
                    for status in deserialize_message(data, DiagnosticArray).status:
                        line = format_status(status)
                        if self.last_lines.get(status.name) != line:  # the engine's status repeats unchanged
                            print(line, flush=True)
                            self.last_lines[status.name] = line

            self.subscriptions_.append(
                self.create_subscription(message_class(type_name), topic, on_message, qos, raw=True)
            )

    def all_matched(self, topics: list[str]) -> bool:
        """Whether ``topics`` (all when empty) have a publisher: messages published before would be missed.

        Counted by the node: Subscription.get_publisher_count exists only since Iron's rclpy."""
        return all(
            self.count_publishers(s.topic_name) > 0 for s in self.subscriptions_ if not topics or s.topic_name in topics
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recorder", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="rosbag2 directory to create")
    parser.add_argument(
        "--topic",
        action="append",
        required=True,
        metavar="NAME:TYPE",
        help="e.g. /diagnostics:diagnostic_msgs/msg/DiagnosticArray (repeat)",
    )
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--print-diagnostics", action="store_true")
    parser.add_argument("--stop-after-idle", type=float, help="seconds of silence on data topics that end it")
    parser.add_argument("--ready-file", type=Path, help="created once every --ready-topic has a publisher")
    parser.add_argument("--ready-topic", action="append", default=[], help="default: every recorded topic")
    args, ros_args = parser.parse_known_args(argv)
    topics = [tuple(spec.rsplit(":", 1)) for spec in args.topic]
    if any(len(t) != 2 for t in topics):
        parser.error("--topic takes NAME:TYPE")
    rclpy.init(args=[sys.argv[0], *ros_args])
    writer = BagWriter(args.out, args.storage)
    recorder = Recorder(writer, topics, args.print_diagnostics)
    print(f"recorder: recording {', '.join(t for t, _ in topics)} to {args.out}", flush=True)
    try:
        while rclpy.ok():
            rclpy.spin_once(recorder, timeout_sec=0.1)
            if args.ready_file is not None and not args.ready_file.exists() and recorder.all_matched(args.ready_topic):
                args.ready_file.touch()
            last = recorder.last_data_message
            if args.stop_after_idle is not None and last is not None and time.monotonic() - last > args.stop_after_idle:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        writer.close()
        recorder.destroy_node()
        rclpy.try_shutdown()
    print("recorder: " + ", ".join(f"{topic} {count}" for topic, count in recorder.counts.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
