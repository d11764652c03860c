"""No work nobody asked for, and diagnostics that say how each camera and the engine are (#43 items 2, 8).

While nobody subscribes to any output of a camera, the node counts its frames and runs no network
(image_proc's lazy subscription); its /diagnostics status says idle. A subscriber starts the work. Each
camera's status turns WARN when its input is stale or too many of its frames are dropped, ERROR when the
engine fails; the Docker HEALTHCHECK (seg_node.cli.healthcheck) is unhealthy on ERROR.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import ros_helpers as ros
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from seg_node.ros.diagnostics import OK, WARN, CameraMonitor

DOMAIN = ros.domain_id(offset=61)


def values_of(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_a_camera_nobody_watches_is_idle_and_its_input_still_counted():
    monitor = CameraMonitor("lazy", "/lazy", started=0.0)
    for frame in range(10):
        monitor.input(frame * 0.1)
        monitor.idle()
    status = monitor.report(1.0, dropped=0, expected_fps=10.0, input_timeout_s=1.0)
    values = values_of(status)
    assert status.level == OK and status.message.startswith("idle: nobody subscribes to its outputs")
    assert values["input_fps"] == "10.00" and values["frames_idle"] == "10" and values["output_fps"] == "0.00"
    status = monitor.report(3.0, dropped=0, expected_fps=10.0, input_timeout_s=1.0)
    assert status.level == WARN and "stale" in status.message  # idle and without input: stale all the same


def test_drops_above_the_ratio_warn():
    monitor = CameraMonitor("busy", "/busy", started=0.0)
    total = 0  # the pipeline's count, which only grows
    for window, dropped in enumerate((5, 6, 7)):  # of 10 frames a window
        for frame in range(10):
            monitor.input(window + frame / 10)
        for _ in range(10 - dropped):
            monitor.output(["label"], 0.05)
        total += dropped
        status = monitor.report(window + 1.0, dropped=total, expected_fps=0.0, input_timeout_s=5.0,
                                max_drop_ratio=0.5)
        assert status.level == (WARN if dropped > 5 else OK), (dropped, status.message)
    assert status.message == "dropped 7 of 10 frames (max_drop_ratio 0.5): the engine does not keep up with the camera"


@pytest.fixture(scope="module")
def probe():
    probe = ros.Probe(DOMAIN, "health_probe")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    probe.subscribe(Image, "/seg_node/watched/label")
    yield probe
    probe.close()


def camera(array: DiagnosticArray, name: str) -> DiagnosticStatus | None:
    return next((s for s in array.status if s.name == f"/seg_node: camera {name}"), None)


@pytest.mark.slow  # a node process over DDS
def test_the_network_runs_only_for_a_camera_someone_watches(probe, make_weights, tmp_path):
    weights = make_weights(tmp_path, "cgnet")
    command = [sys.executable, "-m", "seg_node", "--ros-args", "-p", f"weights:={weights}", "-p", "backend:=torch",
               "-p", "device:=cpu", "-p", "threads:=1", "-p", "cameras:=[watched, lazy]",
               "-p", "diagnostics_period_s:=0.5", "-p", "expected_fps:=0.0", "-p", "input_timeout_s:=30.0"]
    streaming = threading.Event()
    with ros.running_group(command, ros.node_environment(DOMAIN), tmp_path / "node.log") as process:
        publishers = {name: probe.image_publisher(f"/{name}") for name in ("watched", "lazy")}
        ros.wait_until(lambda: probe.subscribers("/lazy") or process.poll() is not None, "the node's cameras",
                       timeout=ros.START_S)
        assert process.poll() is None, (tmp_path / "node.log").read_text()
        frame = ros.rgb_frame(96, 128)

        def stream() -> None:
            sequence = 0
            while not streaming.wait(0.1):
                sequence += 1
                for name, publish in publishers.items():
                    publish(ros.image_message(frame, name, sequence, 0))

        threading.Thread(target=stream, daemon=True).start()
        try:
            probe.wait_for("/seg_node/watched/label", lambda message: True)

            def lazy_idle(array: DiagnosticArray) -> bool:
                status = camera(array, "lazy")
                return status is not None and int(values_of(status)["frames_idle"]) >= 5

            array = probe.wait_for("/diagnostics", lazy_idle)
            lazy, watched = values_of(camera(array, "lazy")), values_of(camera(array, "watched"))
            assert camera(array, "lazy").message.startswith("idle: nobody subscribes")
            assert lazy["frames_idle"] == lazy["frames_received"] and lazy["frames_published"] == "0"
            assert float(lazy["input_fps"]) > 0
            assert int(watched["frames_published"]) > 0 and watched["frames_idle"] == "0"

            subscribed_at = time.monotonic()
            probe.subscribe(Image, "/seg_node/lazy/label")  # someone watches: the work starts
            label = probe.wait_for("/seg_node/lazy/label", lambda message: True)
            print(f"first lazy label {time.monotonic() - subscribed_at:.2f} s after subscribing")
            assert label.header.frame_id == "lazy"

            def lazy_working(array: DiagnosticArray) -> bool:
                status = camera(array, "lazy")
                return status is not None and not status.message.startswith("idle") and float(
                    values_of(status)["output_fps"]) > 0

            probe.wait_for("/diagnostics", lazy_working)
        finally:
            streaming.set()
        ros.assert_clean_stop(process, tmp_path / "node.log")


def healthcheck(topic: str, timeout_s: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seg_node.cli.healthcheck", "--timeout", str(timeout_s), "--topic", topic]
    return subprocess.run(command, env=ros.node_environment(DOMAIN), capture_output=True, text=True,
                          timeout=timeout_s + ros.START_S)


@pytest.mark.slow  # processes over DDS
@pytest.mark.parametrize(("level", "healthy"), [(OK, True), (WARN, True), (DiagnosticStatus.ERROR, False)])
def test_the_healthcheck_is_unhealthy_when_a_status_is_error(probe, level, healthy):
    topic = f"/health_test_{int.from_bytes(level, 'little')}"
    publisher = probe.node.create_publisher(DiagnosticArray, topic, 10)
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(0.2):
            array = DiagnosticArray(status=[
                DiagnosticStatus(level=OK, name="/seg_node: engine", message="cgnet: torch on cpu"),
                DiagnosticStatus(level=level, name="/seg_node: camera front", message="the camera's state"),
            ])
            publisher.publish(array)

    threading.Thread(target=publish, daemon=True).start()
    try:
        result = healthcheck(topic, 30)
    finally:
        stop.set()
    assert result.returncode == (0 if healthy else 1), result.stdout + result.stderr
    line = (result.stdout if healthy else result.stderr).strip()
    if level == OK:
        assert line == "healthy: /seg_node: engine [OK] cgnet: torch on cpu"
    else:
        word = "healthy" if healthy else "unhealthy"
        name = {WARN: "WARN", DiagnosticStatus.ERROR: "ERROR"}[level]
        assert line == f"{word}: /seg_node: camera front [{name}] the camera's state"
