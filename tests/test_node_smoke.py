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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ros_helpers as ros

pytestmark = pytest.mark.slow

DOMAIN = ros.domain_id(offset=17)
CAMERA = "/smoke/image_raw"
LABEL = "/seg_node/image/label"


@contextmanager
def node_running(tmp_path: Path, *ros_args: str) -> Iterator[tuple[object, Path]]:
    """``python -m seg_node`` with the camera remapped as the launch file does; (process, its log)."""
    command = [
        sys.executable, "-m", "seg_node", "--ros-args",
        "-r", f"image:={CAMERA}", "-r", "camera_info:=/smoke/camera_info", "-p", "backend:=onnxruntime", *ros_args,
    ]
    log = tmp_path / "node.log"
    with ros.running_group(command, ros.node_environment(DOMAIN), log) as process:
        yield process, log


@pytest.fixture(scope="module")
def probe():
    probe = ros.Probe(DOMAIN, "smoke_probe")
    yield probe
    probe.close()


def test_the_node_activates_itself_and_labels_carry_the_input_header(probe, tmp_path):
    with node_running(tmp_path) as (process, log):
        probe.wait_for_publisher(LABEL)
        assert ros.wait_until(lambda: probe.lifecycle_state() == "active", "state active")
        sent, label = probe.send_until_labelled(CAMERA, LABEL, "smoke_camera")
        assert label.header == sent.header
        assert (label.height, label.width, label.encoding) == (sent.height, sent.width, "mono8")
        assert max(label.data) < 11  # CamVid's 11 classes
        camera_info = "/smoke/camera_info"  # beside the camera
        ros.wait_until(lambda: "/seg_node" in probe.subscribers(camera_info), f"a subscriber of {camera_info}")
        ros.assert_clean_stop(process, log)


def test_without_autostart_the_node_waits_unconfigured_for_a_manager(probe, tmp_path):
    from lifecycle_msgs.msg import Transition

    with node_running(tmp_path, "-p", "autostart:=false") as (process, log):
        probe.wait_for_node("/seg_node")
        assert probe.lifecycle_state() == "unconfigured", log.read_text()[-3000:]
        assert probe.publishers(LABEL) == 0
        assert probe.change_state(Transition.TRANSITION_CONFIGURE)
        assert probe.lifecycle_state() == "inactive"
        assert probe.change_state(Transition.TRANSITION_ACTIVATE)
        assert probe.lifecycle_state() == "active"
        probe.wait_for_publisher(LABEL, ros.WAIT_S)
        sent, label = probe.send_until_labelled(CAMERA, LABEL, "managed_camera")
        assert label.header == sent.header
        ros.assert_clean_stop(process, log)
