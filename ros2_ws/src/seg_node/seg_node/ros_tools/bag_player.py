"""Publish a recording's camera images at the recorded rate (``python -m seg_node.cli.bag_player BAG --topic T``).

A small ``ros2 bag play`` for machines without the ros2 CLI (the demo's
player). It waits until a subscriber is matched (the node, which subscribes
only once its engine is built), then publishes each image when its recorded
time comes. With ``--restamp`` (the default) every header gets the time of
publication, so the node's latency figures mean what they do on a car; the
pairs (original stamp, published stamp) go to ``stamps`` (JSON) so a
recording of the outputs can be matched to the bag's labels.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from ..recording.rosbag import COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES, BagError, BagReader

MESSAGE_CLASSES = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage}


@dataclass(frozen=True)
class PlayerSettings:
    """What to publish and how; the player's command line (cli.bag_player) gives each field as an option."""

    bag: Path
    topic: str  # image topic in the bag
    remap: str | None = None  # publish on this topic instead of ``topic``
    first: int = 0  # index of the first image to publish
    count: int | None = None  # number of images; None: all
    rate: float = 1.0  # speed factor of the recorded timing
    restamp: bool = True  # headers get the time of publication
    depth: int = 5  # publisher history depth
    wait_subscribers: int = 1
    wait_timeout: float = 120.0  # seconds to wait for the subscribers
    linger: float = 0.5  # seconds to stay after the last frame
    stamps: Path | None = None  # where the (original, published) stamps go as JSON


def play(node: Node, settings: PlayerSettings) -> list[tuple[int, int, int]]:
    """Publish the slice; returns (original stamp, published stamp, wall time of publication) per frame."""
    with BagReader(settings.bag) as reader:
        msgtype = reader.require_topic(settings.topic, IMAGE_TYPES)
        message_class = MESSAGE_CLASSES[msgtype]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.depth, reliability=ReliabilityPolicy.RELIABLE)
        publisher = node.create_publisher(message_class, settings.remap or settings.topic, qos)
        deadline = time.monotonic() + settings.wait_timeout
        while publisher.get_subscription_count() < settings.wait_subscribers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {publisher.topic_name} within {settings.wait_timeout:.0f} s")
            rclpy.spin_once(node, timeout_sec=0.1)
        end = None if settings.count is None else settings.first + settings.count
        published: list[tuple[int, int, int]] = []
        first_log_time = start = None
        for index, bag_message in enumerate(reader.messages([settings.topic])):
            if index < settings.first:
                continue
            if end is not None and index >= end:
                break
            if first_log_time is None:
                first_log_time, start = bag_message.log_time_ns, time.monotonic()
            due = start + (bag_message.log_time_ns - first_log_time) / 1e9 / settings.rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            message = deserialize_message(bag_message.raw, message_class)
            original = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            if settings.restamp:
                message.header.stamp = node.get_clock().now().to_msg()
            stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            publisher.publish(message)
            published.append((original, stamp, time.time_ns()))
        if reader.read_error:
            node.get_logger().warning(f"{settings.bag}: {reader.read_error}")
    return published


def run(settings: PlayerSettings, ros_args: Sequence[str] = ()) -> int:
    """Play ``settings.bag`` from a node of its own: 0 when every frame went out, 1 (logged) when the bag or the
    subscribers failed, 130 on Ctrl-C."""
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = Node("seg_bag_player")
    try:
        published = play(node, settings)
        time.sleep(settings.linger)  # reliable delivery of the last frames before the participant goes
    except (BagError, TimeoutError) as error:
        node.get_logger().error(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if settings.stamps is not None:
        frames = [{"original_stamp_ns": o, "stamp_ns": s, "published_ns": p} for o, s, p in published]
        settings.stamps.write_text(json.dumps({"topic": settings.remap or settings.topic, "frames": frames}) + "\n")
    print(f"bag_player: published {len(published)} frames from {settings.bag}", flush=True)
    return 0
