"""rclpy's floor, a process of ``seg_node.ros_tools.measure``: answers each frame and does nothing else.

``python -m seg_node.ros_tools.floor '{"label_size": null, "raw": false}'`` (JSON: the process's settings;
it is started by the measurement, not by hand). What the node costs beyond this process is its own work;
what this process costs is what DDS and rclpy take for messages of that size: with Python messages
(rclpy's own floor), or with ``raw`` serialized bytes as the node takes and sends them (ros/image_cdr.py),
the floor of the node's design. The topics of the node and of the floors differ, so that all run through
a measurement together.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..ros.allocator import keep_freed_buffers
from ..ros.conversions import image_message
from ..ros.image_cdr import image_cdr, parse_image
from .processes import Spinner

OUTPUTS = ("label", "color_mask", "overlay")


@dataclass(frozen=True)
class Topics:
    """Where a measured process takes frames and answers: the node's, or a floor's beside them (all run
    through the whole measurement, each idle while another is measured)."""

    camera: str
    outputs: str  # the outputs' namespace: <outputs>/label, <outputs>/color_mask, <outputs>/overlay

    def output(self, name: str) -> str:
        return f"{self.outputs}/{name}"


NODE_TOPICS = Topics("/camera", "/seg_node/camera")  # cameras:=[camera] in the node's own namespace
FLOOR_TOPICS = Topics("/floor/camera", "/floor/camera/out")
NETWORK_LABEL_FLOOR_TOPICS = Topics("/floor_network_label/camera", "/floor_network_label/camera/out")
RAW_FLOOR_TOPICS = Topics("/floor_raw/camera", "/floor_raw/camera/out")


def echo_frames(topics: Topics, label_size: tuple[int, int] | None = None, raw: bool = False) -> None:
    """Answer each frame on ``topics`` with prepared messages, as the node's QoS would, doing nothing else.

    Their size is the frame's, or ``label_size`` (width, height), and then a CameraInfo goes with each, as a
    node publishing its label at network resolution would send it. ``raw``: frames are taken as serialized
    bytes and each answer is built as bytes (its pixels copied once), as the node does.
    """
    spinner = Spinner("seg_node_floor")
    node = spinner.node
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {name: node.create_publisher(Image, topics.output(name), reliable) for name in OUTPUTS}
    info_publisher = node.create_publisher(CameraInfo, topics.output("camera_info"), reliable)
    prepared: dict[tuple[str, int, int], np.ndarray | Image] = {}  # the reply's pixels (raw) or message

    def answer(message: Image | bytes) -> None:
        received = parse_image(message) if raw else message
        header = received.header
        width, height = label_size or (received.width, received.height)
        for name, publisher in publishers.items():
            if name != "label" and not publisher.get_subscription_count():
                continue
            key = (name, height, width)
            if key not in prepared:
                pixels = np.zeros((height, width) if name == "label" else (height, width, 3), np.uint8)
                prepared[key] = pixels if raw else image_message(pixels, Header())
            reply = prepared[key]
            if raw:
                publisher.publish(image_cdr(reply, header))
            else:
                reply.header = header
                publisher.publish(reply)
        if label_size is not None:
            info_publisher.publish(CameraInfo(header=header, height=height, width=width))

    node.create_subscription(Image, topics.camera, answer, qos_profile_sensor_data, raw=raw)
    print("ready", flush=True)
    sys.stdin.readline()
    spinner.close()


def main(argv: list[str]) -> None:
    keep_freed_buffers()  # as the node's process does: the floor is that of a process like the node's
    settings = json.loads(argv[1]) if len(argv) > 1 else {}
    label_size, raw = settings.get("label_size"), bool(settings.get("raw"))
    if label_size is not None:
        echo_frames(NETWORK_LABEL_FLOOR_TOPICS, tuple(label_size), raw)
    else:
        echo_frames(RAW_FLOOR_TOPICS if raw else FLOOR_TOPICS, None, raw)


if __name__ == "__main__":
    main(sys.argv)
