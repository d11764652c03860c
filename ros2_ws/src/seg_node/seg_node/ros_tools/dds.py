"""Delivery of large best-effort images between two processes, with the package's Fast DDS profile or not.

``measure_dds`` starts a receiving and a sending process (``python -m seg_node.ros_tools.dds receive`` and
``send '<json settings>'``: started by the measurement, not by hand) and counts what arrives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..ros.conversions import image_message
from ..share import share_file
from .processes import (
    PROFILE_VARIABLES,
    START_TIMEOUT_S,
    MeasureError,
    Spinner,
    child_process,
    publish_at,
)

RECEIVE_GRACE_S = 2.0


@dataclass
class DdsSettings:
    """What ``measure_dds`` sends (``seg_node.cli.measure dds``'s flags)."""

    size: tuple[int, int] = (2048, 1024)  # width, height
    rate: float = 30.0
    count: int = 300


def receive_frames() -> None:
    """The subscriber process of ``measure_dds``: count frames until a line on stdin says the sender is done."""
    spinner = Spinner("dds_receiver")
    arrivals: list[float] = []
    spinner.node.create_subscription(Image, "/dds_probe", lambda _m: arrivals.append(time.monotonic()),
                                     qos_profile_sensor_data)
    print("ready", flush=True)
    sys.stdin.readline()
    spinner.close()
    print(json.dumps({"received": len(arrivals)}), flush=True)


def send_frames(settings: DdsSettings) -> None:
    """The publishing process of ``measure_dds``."""
    sender = Spinner("dds_sender")
    try:
        publisher = sender.node.create_publisher(Image, "/dds_probe", qos_profile_sensor_data)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not publisher.get_subscription_count():
            if time.monotonic() > deadline:
                raise MeasureError("the receiving process never subscribed")
            time.sleep(0.1)
        time.sleep(1.0)
        width, height = settings.size
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        build_start = time.perf_counter()
        message = image_message(pixels, Header(frame_id="dds_probe"))
        build_ms = (time.perf_counter() - build_start) * 1e3
        published = publish_at(settings.rate, settings.count / settings.rate, lambda _i: publisher.publish(message))
    finally:
        sender.close()
    print(json.dumps({"published": published, "message_build_ms": build_ms, "mib": pixels.nbytes / 2**20}))


def measure_dds(settings: DdsSettings, profile: bool) -> dict[str, Any]:
    """Sender and receiver each in a fresh process: Fast DDS reads its profile once per process."""
    environment = dict(os.environ)
    for variable in PROFILE_VARIABLES:
        environment.pop(variable, None)
        if profile:
            environment[variable] = str(share_file("config/fastdds_shm.xml"))
    module = [sys.executable, "-m", "seg_node.ros_tools.dds"]
    with child_process([*module, "receive"], environment) as receiver:
        if receiver.stdout.readline().strip() != "ready":
            raise MeasureError("the receiving process did not start")
        width, height = settings.size
        sent = subprocess.run([*module, "send", json.dumps(asdict(settings))], env=environment,
                              stdout=subprocess.PIPE, text=True)
        if sent.returncode != 0:
            raise MeasureError(f"the sending process failed (exit {sent.returncode})")
        sender = json.loads(sent.stdout.strip().splitlines()[-1])
        time.sleep(RECEIVE_GRACE_S)  # the last frames are still on their way
        received = json.loads(receiver.communicate("done\n", timeout=START_TIMEOUT_S)[0].strip().splitlines()[-1])
    return {
        "mode": "dds",
        "profile": environment.get(PROFILE_VARIABLES[0], "Fast DDS defaults"),
        "frame": f"{width}x{height} rgb8 ({sender['mib']:.1f} MiB)",
        "rate_hz": settings.rate,
        "published": sender["published"],
        "received": received["received"],
        "message_build_ms": sender["message_build_ms"],
    }


def main(argv: list[str]) -> None:
    if argv[1:2] == ["receive"]:
        receive_frames()
    else:
        send_frames(DdsSettings(**{key: tuple(value) if isinstance(value, list) else value
                                   for key, value in json.loads(argv[2]).items()}))


if __name__ == "__main__":
    main(sys.argv)
