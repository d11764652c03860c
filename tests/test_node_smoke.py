"""seg_node started as a plain process (no launch, no ros2 CLI): the managed-node contract, on any ROS 2 with rclpy.

`make test` runs this file on Jazzy (.venv) and again on Kilted (.venv-kilted). The node is started as
``ros2 run`` would start it, with the camera remapped as the launch file does: ``image`` to a camera topic,
``camera_info`` to its sibling. Shipped CGNet CamVid weights, CPU.

Contract: SegmentationNode is a lifecycle node named seg_node; parameter autostart (default true) makes it
configure and activate itself; with autostart false it stays unconfigured for a manager. Outputs per camera at
~/<camera>/label|color_mask|overlay|confidence|camera_info, with the input's header.
"""

from __future__ import annotations

import sys

import pytest
from conftest import PACKAGE_ROOT
from ros_helpers import (
    START_S,
    WAIT_S,
    Probe,
    domain_id,
    image_message,
    kill_group,
    rgb_frame,
    ros_environment,
    start_group,
    stop_group,
    wait_until,
)
from sensor_msgs.msg import Image

pytestmark = pytest.mark.slow

DOMAIN = domain_id(offset=17)
CAMERA = "/smoke/image_raw"
LABEL = "/seg_node/image/label"


def node_environment() -> dict[str, str]:
    import os

    env = dict(os.environ, **ros_environment(DOMAIN))
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def start_node(tmp_path, *ros_args: str):
    command = [
        sys.executable, "-m", "seg_node", "--ros-args",
        "-r", f"image:={CAMERA}", "-r", "camera_info:=/smoke/camera_info", "-p", "backend:=onnxruntime", *ros_args,
    ]
    log = tmp_path / "node.log"
    return start_group(command, node_environment(), log), log


@pytest.fixture(scope="module")
def probe():
    probe = Probe(DOMAIN, "smoke_probe")
    probe.subscribe(Image, LABEL)
    yield probe
    probe.close()


def send_until_labelled(probe: Probe, frame_id: str, timeout: float = WAIT_S) -> tuple[Image, Image]:
    """Publish frames (one per 0.2 s) until a label with one of their headers arrives; (input, label)."""
    publish = probe.image_publisher(CAMERA)
    frame = rgb_frame()
    sent: dict[tuple[int, int], Image] = {}

    def labelled():
        message = image_message(frame, frame_id, 1000 + len(sent), 1000 * len(sent))
        sent[(message.header.stamp.sec, message.header.stamp.nanosec)] = message
        publish(message)
        for label in probe.received(LABEL):
            key = (label.header.stamp.sec, label.header.stamp.nanosec)
            if label.header.frame_id == frame_id and key in sent:
                return sent[key], label
        return None

    return wait_until(labelled, timeout, f"a label on {LABEL} for frames of {frame_id}", interval=0.2)


def test_the_node_activates_itself_and_labels_carry_the_input_header(probe, tmp_path):
    process, log = start_node(tmp_path)
    try:
        probe.wait_for_publisher(LABEL, START_S)
        assert wait_until(lambda: probe.lifecycle_state() == "active", WAIT_S, "state active")
        sent, label = send_until_labelled(probe, "smoke_camera")
        assert label.header == sent.header
        assert (label.height, label.width, label.encoding) == (sent.height, sent.width, "mono8")
        assert max(label.data) < 11  # CamVid's 11 classes
        camera_info = "/smoke/camera_info"  # beside the camera
        wait_until(lambda: "/seg_node" in probe.subscribers(camera_info), WAIT_S, f"a subscriber of {camera_info}")
        code, elapsed = stop_group(process)
        output = log.read_text()
        assert code == 0 and elapsed < 2.0, (code, elapsed, output[-3000:])
        assert "Traceback" not in output, output[-3000:]
    finally:
        kill_group(process)


def test_without_autostart_the_node_waits_unconfigured_for_a_manager(probe, tmp_path):
    from lifecycle_msgs.msg import Transition

    process, log = start_node(tmp_path, "-p", "autostart:=false")
    try:
        probe.wait_for_node("/seg_node", START_S)
        assert probe.lifecycle_state() == "unconfigured", log.read_text()[-3000:]
        assert probe.publishers(LABEL) == 0
        assert probe.change_state(Transition.TRANSITION_CONFIGURE)
        assert probe.lifecycle_state() == "inactive"
        assert probe.change_state(Transition.TRANSITION_ACTIVATE)
        assert probe.lifecycle_state() == "active"
        probe.wait_for_publisher(LABEL, WAIT_S)
        sent, label = send_until_labelled(probe, "managed_camera")
        assert label.header == sent.header
        code, elapsed = stop_group(process)
        output = log.read_text()
        assert code == 0 and elapsed < 2.0, (code, elapsed, output[-3000:])
        assert "Traceback" not in output, output[-3000:]
    finally:
        kill_group(process)
