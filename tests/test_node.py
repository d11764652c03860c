"""The ROS 2 node end to end: real rclpy over Fast DDS, the node in its own process (``python -m seg_node``).

Two cameras: ``front`` sends raw rgb8 with padded rows, ``rear`` sends JPEG (CompressedImage); a third,
``side``, sends one frame and stops. Tiny CGNet weights at 96x128 keep inference cheap.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import ros_helpers as ros
import torch
import yaml
from conftest import PACKAGE_ROOT
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter as ParameterMessage
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from seg_node.engine import ENGINE_OPTIONS, EngineConfig, EngineError, create_engine
from seg_node.imaging import blend, colorize
from seg_node.models import build_model
from seg_node.ros.diagnostics import ERROR, OK, WARN, CameraMonitor
from seg_node.ros.node import SegmentationNode
from seg_node.ros.parameters import (
    SPECS,
    ParameterError,
    engine_config_from_parameters,
    engine_parameter_names,
    parameters_from_engine_config,
)
from seg_node.weights import SegClass, WeightsInfo, save_weights

NETWORK_SIZE = (96, 128)
CAMVID_NAMES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                "Bicyclist"]
CAMVID_COLORS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                 (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
ROW_PADDING = 64
DOMAIN = ros.domain_id()
WAIT_S = ros.WAIT_S


def tiny_weights(folder: Path, architecture: str = "cgnet") -> Path:
    torch.manual_seed(0)
    model = build_model(architecture, len(CAMVID_NAMES))
    info = WeightsInfo(
        architecture=architecture,
        variant=dict(model.variant),
        classes=[
            SegClass(i, name, color) for i, (name, color) in enumerate(zip(CAMVID_NAMES, CAMVID_COLORS, strict=True))
        ],
        mean=(110.0, 110.0, 110.0),
        std=(60.0, 60.0, 60.0),
        input_size=NETWORK_SIZE,
        dataset="camvid",
        splits=["train"],
        ignore_index=11,
    )
    return save_weights(model, info, folder / f"tiny_{architecture}.safetensors")


def node_command(*ros_args: str) -> list[str]:
    return [sys.executable, "-m", "seg_node", "--ros-args", *ros_args]


def camvid_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def raw_message(probe: ros.Probe, rgb: np.ndarray, frame_id: str, encoding: str = "rgb8", padding: int = ROW_PADDING,
                step: int | None = None, data: bytes | None = None) -> Image:
    height, width = rgb.shape[:2]
    rows = np.zeros((height, width * 3 + padding), np.uint8)
    rows[:, : width * 3] = rgb.reshape(height, width * 3)
    message = Image(height=height, width=width, encoding=encoding, step=step or rows.shape[1])
    message.header.stamp = probe.node.get_clock().now().to_msg()
    message.header.frame_id = frame_id
    message.data = rows.tobytes() if data is None else data
    return message


def compressed_message(probe: ros.Probe, jpeg: bytes, frame_id: str) -> CompressedImage:
    message = CompressedImage(format="jpeg", data=jpeg)
    message.header.stamp = probe.node.get_clock().now().to_msg()
    message.header.frame_id = frame_id
    return message


def pixels(message: Image) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3}[message.encoding]
    rows = np.frombuffer(message.data, np.uint8).reshape(message.height, message.step)[:, : message.width * channels]
    return rows if channels == 1 else rows.reshape(message.height, message.width, channels)


def with_frame_id(frame_id: str) -> Callable[[object], bool]:
    return lambda message: message.header.frame_id == frame_id


def camera_status(array: DiagnosticArray, camera: str) -> tuple[bytes, str, dict[str, str]] | None:
    """The camera's (level, message, values); None in an array the node published before it was configured."""
    found = [s for s in array.status if s.name == f"/seg_node: camera {camera}"]
    return (found[0].level, found[0].message, {kv.key: kv.value for kv in found[0].values}) if found else None


def camera_values(array: DiagnosticArray, camera: str) -> dict[str, str]:
    status = camera_status(array, camera)
    return status[2] if status else {}


@pytest.fixture(scope="module")
def ros_env():
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ros.ros_environment(DOMAIN).items():
            patch.setenv(key, value)
        yield ros.node_environment(DOMAIN)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def frames(camvid_pairs) -> dict[str, object]:
    front, rear = camvid_pairs[0][0], camvid_pairs[1][0]
    return {"front": camvid_rgb(front), "rear_jpeg": rear.read_bytes(), "rear": camvid_rgb(rear)}


@pytest.fixture(scope="module")
def offline_engine(weights):
    engine = create_engine(weights, EngineConfig(backend="torch", device="cpu", threads=1, confidence=True))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def probe(ros_env):
    probe = ros.Probe(DOMAIN)
    for camera in ("front", "rear", "side"):
        probe.subscribe(Image, f"/seg_node/{camera}/label")
    for output in ("color_mask", "overlay", "confidence"):
        probe.subscribe(Image, f"/seg_node/front/{output}")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    probe.cameras = {
        "front": probe.node.create_publisher(Image, "/front", 10),
        "rear": probe.node.create_publisher(CompressedImage, "/rear/compressed", 10),
        "side": probe.node.create_publisher(Image, "/side", 10),
    }
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def node_process(ros_env, weights, probe, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("node") / "node.log"
    command = node_command(
        "-p", f"weights:={weights}",
        "-p", "backend:=torch",
        "-p", "device:=cpu",
        "-p", "threads:=1",
        "-p", "cameras:=[front, rear/compressed, side]",
        "-p", "publish_confidence:=true",
        "-p", "diagnostics_period_s:=0.5",
        "-p", "input_timeout_s:=1.5",
        "-p", "expected_fps:=0.0",
    )
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=ros_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = log_path
    try:
        ros.wait_until(
            lambda: all(p.get_subscription_count() for p in probe.cameras.values()) or process.poll() is not None,
            "the node's camera subscriptions",
        )
        assert process.poll() is None, log_path.read_text()
        ros.wait_until(lambda: probe.node.count_publishers("/seg_node/front/overlay") > 0, "the node's publishers")
        time.sleep(0.5)  # let the probe's subscriptions match the node's publishers as well
        yield process
    finally:
        ros.end_group(process)


def assert_stops_on_ctrl_c(process: subprocess.Popen, log: Path) -> None:
    """SIGINT ends the node with exit status 0; else the node's log says why."""
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=WAIT_S)
    assert code == 0, f"exit status {code}; the node's log ends:\n{log.read_text(errors='replace')[-3000:]}"


def send_and_receive(probe: ros.Probe, camera: str, message: object, topic: str | None = None) -> Image:
    """Publish until the label of this frame arrives (best-effort delivery may lose one)."""
    topic = topic or f"/seg_node/{camera}/label"
    deadline = time.monotonic() + WAIT_S
    while True:
        probe.cameras[camera].publish(message)
        try:
            return probe.wait_for(topic, with_frame_id(message.header.frame_id), timeout=2.0)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


@pytest.mark.slow  # a node process over DDS
def test_outputs_carry_the_input_header_and_equal_the_offline_engine(probe, node_process, frames, offline_engine):
    message = raw_message(probe, frames["front"], "front_0")
    label = send_and_receive(probe, "front", message)
    assert label.header.stamp == message.header.stamp and label.encoding == "mono8"
    assert (label.height, label.width) == frames["front"].shape[:2]
    expected = offline_engine.infer(frames["front"])
    assert np.array_equal(pixels(label), expected.labels)

    for output in ("color_mask", "overlay", "confidence"):
        arrived = probe.wait_for(f"/seg_node/front/{output}", with_frame_id("front_0"))
        assert arrived.header.stamp == message.header.stamp
    mask = probe.wait_for("/seg_node/front/color_mask", with_frame_id("front_0"))
    assert mask.encoding == "rgb8" and np.array_equal(pixels(mask), colorize(expected.labels, np.array(CAMVID_COLORS)))
    overlay = probe.wait_for("/seg_node/front/overlay", with_frame_id("front_0"))
    assert np.array_equal(pixels(overlay), blend(frames["front"], pixels(mask), 0.5))
    confidence = probe.wait_for("/seg_node/front/confidence", with_frame_id("front_0"))
    assert np.array_equal(pixels(confidence), expected.confidence)

    jpeg = compressed_message(probe, frames["rear_jpeg"], "rear_0")
    label = send_and_receive(probe, "rear", jpeg)
    assert label.header.stamp == jpeg.header.stamp
    decoded = cv2.imdecode(np.frombuffer(frames["rear_jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(pixels(label), offline_engine.infer(decoded, color_order="bgr").labels)


@pytest.mark.slow  # a node process over DDS
def test_only_subscribed_outputs_are_published_and_diagnostics_are_complete(probe, node_process, frames):
    for index in range(3):
        send_and_receive(probe, "front", raw_message(probe, frames["front"], f"front_d{index}"))
        send_and_receive(probe, "rear", compressed_message(probe, frames["rear_jpeg"], f"rear_d{index}"))
    stamp_after = probe.node.get_clock().now().to_msg()
    diagnostics = probe.wait_for(
        "/diagnostics", lambda array: (array.header.stamp.sec, array.header.stamp.nanosec) > (
            stamp_after.sec, stamp_after.nanosec)
    )
    (engine,) = [s for s in diagnostics.status if s.name == "/seg_node: engine"]
    values = {kv.key: kv.value for kv in engine.values}
    assert values["lifecycle_state"] == "active"
    assert values["backend"] == "torch" and values["device"] == "cpu" and values["precision"] == "fp32"
    assert values["model"].startswith("cgnet") and values["input_resolution"] == "128x96"
    _, _, front = camera_status(diagnostics, "front")
    _, _, rear = camera_status(diagnostics, "rear")
    for key in ("input_fps", "output_fps", "latency_p50_ms", "latency_p95_ms", "frames_dropped", "bad_frames"):
        assert key in front and key in rear, key
    assert int(front["published_color_mask"]) > 0 and int(front["published_overlay"]) > 0
    assert int(front["published_confidence"]) > 0
    # nobody subscribes to the rear camera's mask, overlay, confidence or camera_info, and it sends no CameraInfo
    assert int(rear["published_label"]) >= 4
    assert rear["published_color_mask"] == rear["published_overlay"] == rear["published_confidence"] == "0"
    assert rear["published_camera_info"] == "0" and rear["camera_info"] == "none received"
    assert "camera rear: no CameraInfo on /camera_info yet" in node_process.log_path.read_text()


@pytest.mark.slow  # a node process over DDS
def test_latency_and_rates_are_measured(probe, node_process, frames):
    deadline = time.monotonic() + 1.2
    index = 0
    while time.monotonic() < deadline:
        probe.cameras["front"].publish(raw_message(probe, frames["front"], f"front_r{index}"))
        index += 1
        time.sleep(0.1)
    array = probe.wait_for(
        "/diagnostics", lambda a: camera_values(a, "front").get("latency_p50_ms", "n/a") != "n/a"
        and float(camera_values(a, "front")["output_fps"]) > 0
    )
    _, _, front = camera_status(array, "front")
    assert 0 < float(front["latency_p50_ms"]) <= float(front["latency_p95_ms"]) < 10_000
    # the network's own share of it, so that the rest shows as the node's and the transport's
    assert 0 < float(front["network_p50_ms"]) < float(front["latency_p95_ms"])
    assert float(front["input_fps"]) > 0


@pytest.mark.slow  # a node process over DDS
def test_bad_frames_are_counted_and_the_node_keeps_serving(probe, node_process, frames):
    image = frames["front"]
    height, width = image.shape[:2]
    bad = [
        raw_message(probe, image, "bad_encoding", encoding="bayer_rggb16"),
        raw_message(probe, image, "bad_short", data=bytes(100)),
        raw_message(probe, image[:0], "bad_zero"),
        raw_message(probe, image, "bad_step", step=width * 3 - 1),
    ]
    for _ in range(2):  # twice, in case best effort loses one; the log stays rate-limited
        for message in bad:
            probe.cameras["front"].publish(message)
            time.sleep(0.1)  # the subscription keeps only the last message: one at a time
        probe.cameras["rear"].publish(compressed_message(probe, b"\xff\xd8\xff\xe0 corrupt", "bad_jpeg"))
    # a frame of another size mid-stream: the engine resizes every frame, so labels come at the new size
    smaller = cv2.resize(image, (width // 2, height // 2))
    label = send_and_receive(probe, "front", raw_message(probe, smaller, "front_small"))
    assert (label.height, label.width) == (height // 2, width // 2)
    # a 200 Hz burst: newest frame wins, the node keeps up with the rest
    for index in range(60):
        probe.cameras["front"].publish(raw_message(probe, image, f"burst_{index}"))
        time.sleep(0.005)
    send_and_receive(probe, "front", raw_message(probe, image, "front_after"))
    send_and_receive(probe, "rear", compressed_message(probe, frames["rear_jpeg"], "rear_after"))

    array = probe.wait_for(
        "/diagnostics", lambda a: int(camera_values(a, "front").get("bad_frames", 0)) >= 4
        and int(camera_values(a, "rear").get("bad_frames", 0)) >= 1
    )
    _, _, front = camera_status(array, "front")
    assert int(front["frames_received"]) >= int(front["frames_published"]) + int(front["bad_frames"])
    log = node_process.log_path.read_text()
    assert "camera front: bad frame" in log and "camera rear: bad frame" in log
    assert log.count("camera front: bad frame") <= 2, "bad-frame warnings must be rate-limited"
    assert node_process.poll() is None


@pytest.mark.slow  # a node process over DDS
def test_a_camera_that_stops_is_stale_while_the_others_are_ok(probe, node_process, frames):
    send_and_receive(probe, "side", raw_message(probe, frames["front"], "side_once"))
    stop = time.monotonic()

    def side_stale_front_ok(array: DiagnosticArray) -> bool:
        side, front = camera_status(array, "side"), camera_status(array, "front")
        return side is not None and front is not None and side[0] == WARN and "stale" in side[1] and front[0] == OK

    found = False
    index = 0
    while not found and time.monotonic() - stop < WAIT_S:
        probe.cameras["front"].publish(raw_message(probe, frames["front"], f"front_s{index}"))
        index += 1
        time.sleep(0.1)
        found = any(side_stale_front_ok(array) for array in probe.received("/diagnostics")[-3:])
    assert found, "the stopped camera never showed as stale beside a live one"


@pytest.mark.slow  # a node process over DDS
def test_class_names_and_colours_are_latched(probe, node_process):
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.subscribe(String, "/seg_node/classes", latched)  # a late subscriber still gets them
    message = probe.wait_for("/seg_node/classes", lambda m: True)
    classes = json.loads(message.data)["classes"]
    assert [c["name"] for c in classes] == CAMVID_NAMES
    assert [tuple(c["color"]) for c in classes] == CAMVID_COLORS


def set_parameter(probe: ros.Probe, name: str, value: ParameterValue) -> tuple[bool, str]:
    client = probe.node.create_client(SetParameters, "/seg_node/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=WAIT_S)
        future = client.call_async(SetParameters.Request(parameters=[ParameterMessage(name=name, value=value)]))
        ros.wait_until(future.done, f"setting {name}")
        (result,) = future.result().results
        return result.successful, result.reason
    finally:
        probe.node.destroy_client(client)


@pytest.mark.slow  # a node process over DDS
def test_run_time_parameters_are_checked_and_applied(probe, node_process, frames):
    double = lambda v: ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)  # noqa: E731
    integers = lambda v: ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=v)  # noqa: E731
    assert not set_parameter(probe, "overlay_alpha", double(1.5))[0]
    successful, reason = set_parameter(probe, "palette", integers([1, 2]))
    assert not successful and "triples" in reason
    assert not set_parameter(probe, "palette", integers([0, 0, 300]))[0]
    assert not set_parameter(probe, "backend", ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                              string_value="onnxruntime"))[0]  # active
    red = [255, 0, 0] * len(CAMVID_NAMES)
    assert set_parameter(probe, "palette", integers(red))[0]
    assert set_parameter(probe, "overlay_alpha", double(1.0))[0]
    try:
        send_and_receive(probe, "front", raw_message(probe, frames["front"], "front_red"))
        mask = pixels(probe.wait_for("/seg_node/front/color_mask", with_frame_id("front_red")))
        overlay = pixels(probe.wait_for("/seg_node/front/overlay", with_frame_id("front_red")))
        assert np.all(mask == (255, 0, 0)) and np.array_equal(overlay, mask)
        probe.wait_for("/seg_node/classes", lambda m: json.loads(m.data)["classes"][0]["color"] == [255, 0, 0])
    finally:
        set_parameter(probe, "palette", integers([]))
        set_parameter(probe, "overlay_alpha", double(0.5))


@pytest.mark.slow  # a node process over DDS
def test_a_transition_the_state_does_not_allow_is_refused_and_the_node_keeps_serving(probe, node_process, frames):
    """A lifecycle manager's repeated request (configure or activate an active node) gets success false;
    rclpy before Kilted lets that transition's error end the node's process."""
    from lifecycle_msgs.srv import ChangeState

    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        request = ChangeState.Request()
        request.transition.id = transition
        assert probe.call(ChangeState, "/seg_node/change_state", request).success is False
    assert node_process.poll() is None, node_process.log_path.read_text()
    assert probe.lifecycle_state() == "active"
    send_and_receive(probe, "front", raw_message(probe, frames["front"], "front_after_refusal"))
    log = node_process.log_path.read_text()
    # the node's wrapper says so on Humble and Jazzy; Kilted's rclpy refuses, and logs, before it
    assert "refused the lifecycle transition configure in state active" in log or "Unable to start transition 1" in log


@pytest.mark.slow  # a node process over DDS
def test_remapped_compressed_camera_at_network_resolution(probe, ros_env, weights, frames, tmp_path):
    """The default input `image` remapped to a /compressed topic, labels at network size, in a namespace."""
    command = node_command("-p", f"weights:={weights}", "-p", "backend:=torch", "-p", "threads:=1",
                           "-p", "output_resolution:=network", "-r", "image:=/second_camera/compressed",
                           "-r", "__ns:=/second")
    with open(tmp_path / "node.log", "w") as log:
        process = subprocess.Popen(command, env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        probe.subscribe(Image, "/second/seg_node/image/label")
        probe.subscribe(Image, "/second/seg_node/image/overlay")
        probe.cameras["second"] = probe.node.create_publisher(CompressedImage, "/second_camera/compressed", 10)
        ros.wait_until(lambda: probe.cameras["second"].get_subscription_count() > 0, "the remapped subscription")
        overlay = "/second/seg_node/image/overlay"
        ros.wait_until(lambda: probe.node.count_publishers(overlay) > 0, "the node's publishers")
        label = send_and_receive(probe, "second", compressed_message(probe, frames["rear_jpeg"], "second_0"),
                                 topic="/second/seg_node/image/label")
        assert (label.height, label.width) == NETWORK_SIZE
        overlay = probe.wait_for("/second/seg_node/image/overlay", with_frame_id("second_0"))
        assert (overlay.height, overlay.width) == frames["rear"].shape[:2]
    finally:
        assert_stops_on_ctrl_c(process, tmp_path / "node.log")


@pytest.mark.slow  # a node process over DDS
def test_ctrl_c_stops_the_node_cleanly(node_process):
    assert node_process.poll() is None
    started = time.monotonic()
    assert_stops_on_ctrl_c(node_process, node_process.log_path)
    print(f"stopped {time.monotonic() - started:.2f} s after SIGINT")
    log = node_process.log_path.read_text()
    assert "Traceback" not in log and "terminate called" not in log


@pytest.mark.slow  # a node process over DDS
def test_a_second_ctrl_c_during_shutdown_is_absorbed(probe, ros_env, weights, frames, tmp_path):
    """ros2 launch forwards the terminal's Ctrl-C: the node's process group gets SIGINT twice, ~50 ms apart,
    while frames are in flight; the node still stops cleanly (status 0, no traceback) within 2 s."""
    command = node_command("-p", f"weights:={weights}", "-p", "backend:=torch", "-p", "threads:=1",
                           "-r", "__ns:=/sigint", "-r", "image:=/sigint_camera")
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=ros_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    streaming = threading.Event()
    try:
        probe.subscribe(Image, "/sigint/seg_node/image/overlay")  # makes the node blend as well
        probe.subscribe(Image, "/sigint/seg_node/image/label")
        probe.cameras["sigint"] = camera = probe.node.create_publisher(Image, "/sigint_camera", 10)
        ros.wait_until(lambda: camera.get_subscription_count() > 0 or process.poll() is not None, "the node's camera")
        assert process.poll() is None, log_path.read_text()
        send_and_receive(probe, "sigint", raw_message(probe, frames["front"], "sigint_0"),
                         topic="/sigint/seg_node/image/label")

        def stream() -> None:  # frames keep arriving while the node shuts down
            while not streaming.wait(0.02):
                camera.publish(raw_message(probe, frames["front"], "sigint_stream"))

        threading.Thread(target=stream, daemon=True).start()
        time.sleep(0.3)
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=2.0) == 0, log_path.read_text()
        print(f"stopped {time.monotonic() - started:.2f} s after the first SIGINT")
    finally:
        streaming.set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    log = log_path.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log and "terminate called" not in log


def engine_status_of(probe: ros.Probe, name: str, accept: Callable[[dict], bool]) -> dict[str, str]:
    def matches(array: DiagnosticArray) -> bool:
        return any(s.name == name and accept({kv.key: kv.value for kv in s.values} | {"": s.message})
                   for s in array.status)

    array = probe.wait_for("/diagnostics", matches)
    (status,) = [s for s in array.status if s.name == name]
    return {kv.key: kv.value for kv in status.values} | {"": status.message}


@pytest.mark.slow  # a node process over DDS
def test_managed_node_in_a_namespace_through_lifecycle_services_with_camera_info(probe, ros_env, weights, frames,
                                                                                tmp_path):
    """autostart false: unconfigured until a manager configures and activates it over lifecycle_msgs;
    the remapped camera's CameraInfo comes back scaled to the labels' network size."""
    node = "/perception/seg_node"
    command = node_command("-p", f"weights:={weights}", "-p", "backend:=torch", "-p", "threads:=1",
                           "-p", "autostart:=false", "-p", "output_resolution:=network",
                           "-p", "diagnostics_period_s:=0.3", "-r", "__ns:=/perception",
                           "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info")
    with open(tmp_path / "node.log", "w") as log:
        process = subprocess.Popen(command, env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for output in ("label", "camera_info"):
            probe.subscribe(CameraInfo if output == "camera_info" else Image, f"{node}/image/{output}")
        camera = probe.node.create_publisher(Image, "/cam/image_raw", 10)
        camera_info = probe.node.create_publisher(CameraInfo, "/cam/camera_info", 10)
        status = engine_status_of(probe, f"{node}: engine", lambda v: v["lifecycle_state"] == "unconfigured")
        assert status[""].startswith("unconfigured") and camera.get_subscription_count() == 0

        assert probe.change_state(Transition.TRANSITION_CONFIGURE, node)
        engine_status_of(probe, f"{node}: engine", lambda v: v["lifecycle_state"] == "inactive")
        assert camera.get_subscription_count() == 0  # inactive: the engine is ready, nothing subscribed

        assert probe.change_state(Transition.TRANSITION_ACTIVATE, node)
        ros.wait_until(lambda: camera.get_subscription_count() > 0 and camera_info.get_subscription_count() > 0,
                   "the activated node's subscriptions")
        ros.wait_until(lambda: probe.node.count_publishers(f"{node}/image/camera_info") > 0, "the node's publishers")
        height, width = frames["front"].shape[:2]
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.k = [400.0, 0.0, width / 2, 0.0, 410.0, height / 2, 0.0, 0.0, 1.0]
        info.p = [400.0, 0.0, width / 2, 0.0, 0.0, 410.0, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        probe.cameras["managed"] = camera
        deadline = time.monotonic() + WAIT_S
        scaled = None
        while scaled is None:
            camera_info.publish(info)
            time.sleep(0.05)
            message = raw_message(probe, frames["front"], f"managed_{time.monotonic()}")
            label = send_and_receive(probe, "managed", message, topic=f"{node}/image/label")
            assert (label.height, label.width) == NETWORK_SIZE
            try:
                scaled = probe.wait_for(f"{node}/image/camera_info", with_frame_id(message.header.frame_id), 1.0)
            except TimeoutError:
                assert time.monotonic() < deadline, "no camera_info beside the labels"
        assert scaled.header.stamp == label.header.stamp and (scaled.height, scaled.width) == NETWORK_SIZE
        sx, sy = NETWORK_SIZE[1] / width, NETWORK_SIZE[0] / height
        assert np.allclose(scaled.k, [400 * sx, 0, width / 2 * sx, 0, 410 * sy, height / 2 * sy, 0, 0, 1])

        assert probe.change_state(Transition.TRANSITION_DEACTIVATE, node)
        ros.wait_until(lambda: camera.get_subscription_count() == 0, "unsubscribing at deactivate")
        assert probe.change_state(Transition.TRANSITION_CLEANUP, node)
        engine_status_of(probe, f"{node}: engine", lambda v: v["lifecycle_state"] == "unconfigured")
        assert probe.change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, node)
        engine_status_of(probe, f"{node}: engine", lambda v: v["lifecycle_state"] == "finalized")
    finally:
        assert_stops_on_ctrl_c(process, tmp_path / "node.log")
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log


def mismatched_weights(folder: Path) -> Path:
    """cgnet tensors under a JSON that promises contextnet."""
    path = tiny_weights(folder)
    info = json.loads(path.with_suffix(".json").read_text())
    contextnet = build_model("contextnet", len(CAMVID_NAMES))
    info.update(architecture="contextnet", variant=dict(contextnet.variant))
    path.with_suffix(".json").write_text(json.dumps(info))
    return path


@pytest.mark.slow  # a node process over DDS
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "missing.safetensors does not exist"),
        ("mismatched", "tiny_cgnet.safetensors"),
        ("alpha", "overlay_alpha"),
        ("backend", "'tensorflow' is not one of"),
    ],
)
def test_start_up_errors_name_the_problem_and_exit_non_zero(case, expected, weights, ros_env, tmp_path):
    if case == "missing":
        arguments = [f"weights:={tmp_path / 'missing.safetensors'}"]
    elif case == "mismatched":
        arguments = [f"weights:={mismatched_weights(tmp_path)}"]
    else:
        arguments = [f"weights:={weights}", "overlay_alpha:=1.5" if case == "alpha" else "backend:=tensorflow"]
    command = node_command(*[part for argument in arguments for part in ("-p", argument)])
    result = subprocess.run(command, env=ros_env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot start" in output and expected in output and "Traceback" not in output
    if case == "mismatched":
        assert "contextnet" in output and "cgnet" in output


def test_camera_monitor_levels():
    monitor = CameraMonitor("front", "/front", started=0.0)
    for second in range(10):
        monitor.input(second * 0.1)
        monitor.output(["label"], 0.05)
    level, _, values = (lambda s: (s.level, s.message, {kv.key: kv.value for kv in s.values}))(
        monitor.report(1.0, dropped=2, expected_fps=5.0, input_timeout_s=1.0)
    )
    assert level == OK and values["output_fps"] == "10.00" and values["latency_p50_ms"] == "50.0"
    assert values["frames_dropped"] == "2"
    monitor.input(1.1)
    monitor.output(["label"], 0.05)
    status = monitor.report(2.0, dropped=2, expected_fps=5.0, input_timeout_s=1.0)
    assert status.level == WARN and "below expected_fps" in status.message
    status = monitor.report(5.0, dropped=2, expected_fps=0.0, input_timeout_s=1.0)
    assert status.level == WARN and "stale" in status.message
    monitor.engine_error("CUDA out of memory")
    status = monitor.report(5.5, dropped=2, expected_fps=0.0, input_timeout_s=10.0)
    assert status.level == ERROR and "CUDA out of memory" in status.message


def test_a_stream_at_the_expected_rate_does_not_warn_whatever_its_phase():
    # a 10 Hz camera puts 9, 10 or 11 frames into a 1 s window; 8 is a node falling behind
    monitor = CameraMonitor("front", "/front", started=0.0)
    for window, frames in enumerate((9, 11, 10, 8)):
        for frame in range(frames):
            monitor.input(window + frame / frames)
            monitor.output(["label"], 0.05)
        status = monitor.report(window + 1.0, dropped=0, expected_fps=10.0, input_timeout_s=1.0)
        assert status.level == (WARN if frames == 8 else OK), (frames, status.message)
    assert status.message == "output 8.0 fps is below expected_fps 10.0"


def test_yaml_defaults_equal_the_declared_defaults():
    document = yaml.safe_load((PACKAGE_ROOT / "config" / "seg_node.yaml").read_text())
    assert document["seg_node"]["ros__parameters"] == declared_defaults()


def declared_defaults() -> dict[str, object]:
    return {name: [] if isinstance(spec.default, Parameter.Type) else spec.default for name, spec in SPECS.items()}


def test_every_engine_option_is_a_node_parameter():
    for option in ENGINE_OPTIONS:
        names = engine_parameter_names(option)
        assert names and all(name in SPECS for name in names), option.name
        for name in names:
            spec = SPECS[name]
            assert spec.choices == option.choices and not spec.dynamic, name
            assert spec.description.startswith(option.help), name
            assert spec.maximum == option.maximum, name
    assert engine_config_from_parameters(declared_defaults()) == EngineConfig()


def test_the_engine_config_comes_from_the_parameters():
    values = {**declared_defaults(), "cuda_graphs": True, "int8_calibration_dir": "/calibration", "threads": 2,
              "network_height": 64, "network_width": 96, "publish_confidence": True, "precision": "int8",
              "backend": "torch2trt", "engine_cache_dir": "/engines", "output_resolution": "network"}
    assert engine_config_from_parameters(values) == EngineConfig(
        backend="torch2trt", precision="int8", network_size=(64, 96), output_resolution="network", confidence=True,
        threads=2, engine_cache_dir="/engines", cuda_graphs=True, int8_calibration_dir="/calibration")
    for config in (engine_config_from_parameters(values), EngineConfig()):  # and back: what a tool gives a node
        parameters = parameters_from_engine_config(config)
        assert parameters.keys() == {name for option in ENGINE_OPTIONS for name in engine_parameter_names(option)}
        assert engine_config_from_parameters({**declared_defaults(), **parameters}) == config
    assert parameters_from_engine_config(EngineConfig(network_size=(64, 96)))["network_width"] == 96
    with pytest.raises(ParameterError, match="network_height and network_width"):
        engine_config_from_parameters({**values, "network_width": 0})
    with pytest.raises(ParameterError, match="network_height"):
        engine_config_from_parameters({**values, "network_height": 8})


@pytest.fixture
def in_process(ros_env):
    """A context of this process's own for SegmentationNode instances (no executor: transitions by trigger_*)."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    nodes = []

    def make(*overrides: Parameter, cli_args: list[str] | None = None) -> SegmentationNode:
        node = SegmentationNode(context=context, parameter_overrides=list(overrides), cli_args=cli_args)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_the_node_gives_its_engine_the_declared_options(in_process, weights, monkeypatch):
    """In this process, with parameter overrides as from --ros-args; the engine itself is a plain CPU one."""
    asked = []

    def create_cpu_engine(path, config):
        asked.append(config)
        return create_engine(path, EngineConfig(backend="torch", device="cpu", threads=1))

    monkeypatch.setattr("seg_node.ros.node.create_engine", create_cpu_engine)
    node = in_process(Parameter("weights", value=str(weights)), Parameter("cuda_graphs", value=True),
                      Parameter("int8_calibration_dir", value="/calibration"), Parameter("threads", value=3),
                      Parameter("cameras", value=["in_process"]))
    assert node.engine is None and not asked  # created unconfigured; autostart is run()'s business
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.pipeline is not None and node.settings.engine is asked[0]
    assert asked == [EngineConfig(cuda_graphs=True, int8_calibration_dir="/calibration", threads=3)]


def subscriptions_of(node: SegmentationNode, topic: str) -> int:
    return node.count_subscribers(topic)


def test_lifecycle_transitions_in_a_namespace_with_a_remapped_camera(in_process, weights, monkeypatch):
    """configure builds (diagnostics say so), activate subscribes, deactivate unsubscribes and keeps the
    engine, cleanup frees it; outputs are ~/<camera as given>/..., status names carry the full node name."""
    building = []

    def reporting_engine(path, config, on_progress=None):
        building.append(node._engine_status([]).message)
        on_progress("compiling the network")
        building.append(node._engine_status([]).message)
        return create_engine(path, EngineConfig(backend="torch", device="cpu", threads=1))

    monkeypatch.setattr("seg_node.ros.node.create_engine", reporting_engine)
    node = in_process(Parameter("weights", value=str(weights)), Parameter("autostart", value=False),
                      cli_args=["--ros-args", "-r", "__ns:=/perception", "-r", "image:=/cam/image_raw"])
    unconfigured = node._engine_status([])
    assert unconfigured.name == "/perception/seg_node: engine" and unconfigured.message.startswith("unconfigured")
    assert {kv.key: kv.value for kv in unconfigured.values}["lifecycle_state"] == "unconfigured"

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert building == ["configuring: building engine (this can take minutes)", "configuring: compiling the network"]
    assert node.lifecycle_state == "inactive" and node._engine_status([]).message.startswith("inactive: cgnet")
    (outputs,) = node.cameras
    assert [publisher.topic_name for publisher in outputs.publishers()] == [
        f"/perception/seg_node/image/{output}" for output in ("label", "color_mask", "overlay", "camera_info")]
    assert outputs.camera.resolved == "/cam/image_raw"
    assert outputs.monitor.status_name == "/perception/seg_node: camera image"
    assert subscriptions_of(node, "/cam/image_raw") == 0

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert subscriptions_of(node, "/cam/image_raw") == 1 and subscriptions_of(node, "/perception/camera_info") == 1
    engine = node.engine
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert subscriptions_of(node, "/cam/image_raw") == 0 and node.engine is engine
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.engine is None and node.pipeline is None and node.cameras == []
    with pytest.raises(EngineError, match="closed"):
        engine.infer(np.zeros((8, 8, 3), np.uint8))
    assert node.count_publishers("/perception/seg_node/image/label") == 0
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "finalized"


def test_configure_fails_with_the_reason_and_the_node_stays_unconfigured(in_process, weights, tmp_path):
    node = in_process(Parameter("weights", value=str(tmp_path / "missing.safetensors")),
                      Parameter("overlay_alpha", value=0.3))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.lifecycle_state == "unconfigured" and "missing.safetensors does not exist" in node.failure
    status = node._engine_status([])
    assert status.level == ERROR and "configure failed" in status.message and "missing.safetensors" in status.message
    # a value refused at start is reported by configure, not by an exception out of the constructor
    node = in_process(Parameter("weights", value=str(weights)), Parameter("overlay_alpha", value=1.5))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.failure.startswith("overlay_alpha:")
    # an unconfigured node can still shut down
    assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS


def test_the_confidence_is_computed_only_while_someone_subscribes(in_process, weights, monkeypatch):
    """publish_confidence builds the engine with confidence; each frame asks for it only while subscribed."""
    monkeypatch.setattr("seg_node.ros.node.create_engine", lambda path, config, on_progress=None: create_engine(
        path, EngineConfig(backend="torch", device="cpu", threads=1, confidence=config.confidence)))
    node = in_process(Parameter("weights", value=str(weights)), Parameter("publish_confidence", value=True),
                      Parameter("cameras", value=["conf"]), Parameter("autostart", value=False))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    engine, (outputs,) = node.engine, node.cameras
    assert engine.config.confidence and outputs.confidence is not None
    asked = []  # the confidence argument of each network run, as the pipeline hands it to the engine
    execute = engine.execute
    monkeypatch.setattr(engine, "execute", lambda source, target, confidence=None: (
        asked.append(confidence), execute(source, target, confidence))[1])
    rgb = np.random.default_rng(5).integers(0, 256, (48, 64, 3), np.uint8)
    message = Image(height=48, width=64, encoding="rgb8", step=64 * 3, data=rgb.tobytes())

    listener = rclpy.create_node("confidence_listener", context=node.context)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(listener)
    received = []
    try:
        # someone watches the label (else the node runs no network at all), nobody ~/conf/confidence
        listener.create_subscription(Image, outputs.label.topic_name, lambda _: None, 10)
        ros.wait_until(lambda: outputs.label.get_subscription_count() > 0, "the label subscription")
        node._on_frame(outputs, message)
        ros.wait_until(lambda: asked, "the network run of the first frame")
        assert asked == [False]
        listener.create_subscription(Image, outputs.confidence.topic_name, received.append, 10)
        ros.wait_until(lambda: outputs.confidence.get_subscription_count() > 0, "the confidence subscription")
        deadline = time.monotonic() + WAIT_S
        while not received and time.monotonic() < deadline:
            node._on_frame(outputs, message)
            executor.spin_once(timeout_sec=0.2)
    finally:
        executor.shutdown()
        listener.destroy_node()
    assert received, "no confidence arrived while subscribed"
    assert asked[0] is False and True in asked and set(asked) <= {False, True}
    assert np.array_equal(pixels(received[0]), engine.infer(rgb).confidence)


def test_change_state_answers_false_to_a_transition_the_state_does_not_allow(in_process):
    """The change_state service itself (no DDS): activate while unconfigured is refused, the state stays."""
    from lifecycle_msgs.srv import ChangeState

    node = in_process(Parameter("autostart", value=False))
    request = ChangeState.Request()
    request.transition.id = Transition.TRANSITION_ACTIVATE
    response = node._service_change_state.callback(request, ChangeState.Response())
    assert response.success is False and node.lifecycle_state == "unconfigured"
    request.transition.id = Transition.TRANSITION_UNCONFIGURED_SHUTDOWN  # an allowed one still runs
    assert node._service_change_state.callback(request, ChangeState.Response()).success
    assert node.lifecycle_state == "finalized"


def fast_dds_segments() -> set[str]:
    """Fast DDS's shared-memory data segments: fastrtps_<16 hex> (Fast DDS 2, Jazzy), fastdds_<...> (3, Kilted)."""
    return {path.name for path in Path("/dev/shm").glob("fast*_*")
            if re.fullmatch(r"fast(rtps|dds)_[0-9a-f]{16}", path.name)}


def test_a_destroyed_node_leaves_no_shared_memory_segment_behind(ros_env):
    """The node's process ends in os._exit, so what destroy_node leaves alive is never freed: the lifecycle
    state machine kept the DDS participant and its /dev/shm segment (64 MiB with our profile) after each run."""
    before = fast_dds_segments()
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    try:
        node = SegmentationNode(context=context, parameter_overrides=[Parameter("autostart", value=False)])
        created = fast_dds_segments() - before
        if not created:
            pytest.skip(f"{os.environ.get('RMW_IMPLEMENTATION', 'the default RMW')} made no Fast DDS "
                        "shared-memory segment here, so there is nothing to leak")
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert not created & fast_dds_segments(), "the destroyed node's participant still holds its segment"


def test_a_failing_callback_is_logged_once_and_the_node_keeps_spinning(ros_env, capfd):
    """A timer that raises on every tick (a bug met by every message) neither ends the spin nor floods the log."""
    from types import SimpleNamespace

    from seg_node.ros.process import spin_until_stopped

    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    try:
        node = rclpy.create_node("spin_guard", context=context)
        stop = SimpleNamespace(requested=False)
        ticks = []

        def faulty() -> None:
            raise ValueError("a bug in a callback")

        def count() -> None:
            ticks.append(time.monotonic())
            stop.requested = len(ticks) >= 10

        node.create_timer(0.01, faulty)
        node.create_timer(0.02, count)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        spin_until_stopped(executor, node, stop)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert len(ticks) == 10
    log = capfd.readouterr().err
    assert log.count("a callback failed and was skipped") == 1, log
    assert "ValueError: a bug in a callback" in log
