"""``python -m seg_node.ros_tools.bag_player BAG --topic T``: publish a recording's camera images at the recorded rate.

A small ``ros2 bag play`` for machines without the ros2 CLI (the demo's
player). It waits until a subscriber is matched (the node, which subscribes
only once its engine is built), then publishes each image when its recorded
time comes. With ``--restamp`` (the default) every header gets the time of
publication, so the node's latency figures mean what they do on a car; the
pairs (original stamp, published stamp) go to ``--stamps FILE`` (JSON) so a
recording of the outputs can be matched to the bag's labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from ..recording.rosbag import COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES, BagError, BagReader

MESSAGE_CLASSES = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage}


def play(node: Node, args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """Publish the slice; returns (original stamp, published stamp, wall time of publication) per frame."""
    with BagReader(args.bag) as reader:
        msgtype = reader.require_topic(args.topic, IMAGE_TYPES)
        message_class = MESSAGE_CLASSES[msgtype]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth, reliability=ReliabilityPolicy.RELIABLE)
        publisher = node.create_publisher(message_class, args.remap or args.topic, qos)
        deadline = time.monotonic() + args.wait_timeout
        while publisher.get_subscription_count() < args.wait_subscribers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {publisher.topic_name} within {args.wait_timeout:.0f} s")
            rclpy.spin_once(node, timeout_sec=0.1)
        end = None if args.count is None else args.first + args.count
        published: list[tuple[int, int, int]] = []
        first_log_time = start = None
        for index, bag_message in enumerate(reader.messages([args.topic])):
            if index < args.first:
                continue
            if end is not None and index >= end:
                break
            if first_log_time is None:
                first_log_time, start = bag_message.log_time_ns, time.monotonic()
            due = start + (bag_message.log_time_ns - first_log_time) / 1e9 / args.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            message = deserialize_message(bag_message.raw, message_class)
            original = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            if args.restamp:
                message.header.stamp = node.get_clock().now().to_msg()
            stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            publisher.publish(message)
            published.append((original, stamp, time.time_ns()))
        if reader.read_error:
            node.get_logger().warning(f"{args.bag}: {reader.read_error}")
    return published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--topic", required=True, help="image topic in the bag")
    parser.add_argument("--remap", help="publish on this topic instead of --topic")
    parser.add_argument("--first", type=int, default=0, help="index of the first image to publish")
    parser.add_argument("--count", type=int, help="number of images (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor of the recorded timing")
    parser.add_argument("--restamp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--depth", type=int, default=5, help="publisher history depth")
    parser.add_argument("--wait-subscribers", type=int, default=1)
    parser.add_argument("--wait-timeout", type=float, default=120.0, help="seconds to wait for the subscribers")
    parser.add_argument("--linger", type=float, default=0.5, help="seconds to stay after the last frame")
    parser.add_argument("--stamps", type=Path, help="write the (original, published) stamps here as JSON")
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = Node("seg_bag_player")
    try:
        published = play(node, args)
        time.sleep(args.linger)  # reliable delivery of the last frames before the participant goes
    except (BagError, TimeoutError) as error:
        node.get_logger().error(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if args.stamps is not None:
        frames = [{"original_stamp_ns": o, "stamp_ns": s, "published_ns": p} for o, s, p in published]
        args.stamps.write_text(json.dumps({"topic": args.remap or args.topic, "frames": frames}) + "\n")
    print(f"bag_player: published {len(published)} frames from {args.bag}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
