"""Helpers of the tests that run seg_node in its own process (tests/test_node.py, test_node_smoke.py,
test_ros2_cli.py).

A Probe is an rclpy node of the test process in its own context: it publishes camera frames, records what
arrives, and calls the node's lifecycle services. ``running_group`` starts a command in its own process group
and stops what is left of it when the test ends; ``assert_clean_stop`` sends Ctrl-C (SIGINT) to the whole
group, twice, as an impatient user does, and checks that everything ended cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rclpy
from conftest import PACKAGE_ROOT
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

PROFILE = PACKAGE_ROOT / "config" / "fastdds_shm.xml"
START_S = 120.0  # the node's start on a loaded 2-core machine: torch import, weights, an ONNX export on a clean cache
WAIT_S = 30.0  # any other wait; each ends as soon as what it waits for arrives
STOP_S = 2.0  # Ctrl-C to every process gone


def domain_id(offset: int = 0) -> int:
    """This test run's own DDS domain (1..100: domains above 101 use ephemeral ports on Linux)."""
    return 1 + (os.getpid() + offset) % 100


def ros_environment(domain: int) -> dict[str, str]:
    """The variables a process of this run needs beside the inherited ones."""
    return {
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE),
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
    }


def node_environment(domain: int) -> dict[str, str]:
    """The whole environment of a node process started with ``python -m seg_node`` from this checkout."""
    env = dict(os.environ, **ros_environment(domain))
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT_S, interval: float = 0.1) -> object:
    """``condition()`` once it is true; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(interval)


def rgb_frame(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """A road-like picture: sky above, grey road below, with some noise."""
    generator = np.random.default_rng(seed)
    frame = np.empty((height, width, 3), np.uint8)
    frame[: height // 2] = (128, 160, 220)
    frame[height // 2 :] = (110, 110, 110)
    noise = generator.integers(0, 20, frame.shape, dtype=np.uint8)
    return frame + noise


def image_message(frame: np.ndarray, frame_id: str, sec: int, nanosec: int) -> Image:
    message = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=frame.shape[1] * 3)
    message.header.frame_id = frame_id
    message.header.stamp.sec = sec
    message.header.stamp.nanosec = nanosec
    message.data = frame.tobytes()
    return message


class Probe:
    """A test-side rclpy node in its own context and domain."""

    def __init__(self, domain: int, name: str = "probe") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self._received: dict[str, list] = defaultdict(list)
        self._arrived = threading.Condition()
        self._clients: dict[tuple[type, str], object] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def subscribe(self, message_type: type, topic: str, qos: QoSProfile | int = 10) -> None:
        def record(message: object) -> None:
            with self._arrived:
                self._received[topic].append(message)
                self._arrived.notify_all()

        self.node.create_subscription(message_type, topic, record, qos)

    def record(self, message_type: type, topic: str) -> None:
        """Subscribe to ``topic`` unless already recording it."""
        if topic not in self._received:
            self.subscribe(message_type, topic)
            self._received[topic] = []

    def received(self, topic: str) -> list:
        with self._arrived:
            return list(self._received[topic])

    def wait_for(self, topic: str, accept: Callable[[object], bool], timeout: float = WAIT_S) -> object:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for message in self._received[topic]:
                    if accept(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"nothing accepted on {topic} in {timeout:.0f} s: {len(self._received[topic])}")
                self._arrived.wait(left)

    def publishers(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def wait_for_publisher(self, topic: str, timeout: float = START_S) -> None:
        wait_until(lambda: self.publishers(topic) > 0, f"a publisher of {topic}", timeout)

    def wait_for_node(self, name: str, timeout: float = START_S) -> None:
        """Until a node of that fully qualified name is in the graph (it exists, whatever its lifecycle state)."""

        def present() -> bool:
            names = self.node.get_node_names_and_namespaces()
            return name in {f"{namespace.rstrip('/')}/{node}" for node, namespace in names}

        wait_until(present, f"the node {name}", timeout)

    def subscribers(self, topic: str) -> list[str]:
        """Fully qualified names of the nodes subscribed to a topic."""
        return [
            f"{info.node_namespace.rstrip('/')}/{info.node_name}"
            for info in self.node.get_subscriptions_info_by_topic(topic)
        ]

    def image_publisher(self, topic: str) -> Callable[[Image], None]:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # serves best-effort subscribers too
        return self.node.create_publisher(Image, topic, qos).publish

    def send_until_labelled(self, camera: str, label_topic: str, frame_id: str, timeout: float = WAIT_S
                            ) -> tuple[Image, Image]:
        """Publish rgb8 frames to ``camera`` (one per 0.2 s) until a label with one of their headers arrives on
        ``label_topic``; (the frame, its label). Best-effort delivery may lose a frame or two."""
        self.record(Image, label_topic)
        publish = self.image_publisher(camera)
        frame = rgb_frame(seed=len(frame_id))
        sent: dict[tuple[int, int], Image] = {}

        def labelled() -> tuple[Image, Image] | None:
            message = image_message(frame, frame_id, 2000 + len(sent), 7 * len(sent))
            sent[(message.header.stamp.sec, message.header.stamp.nanosec)] = message
            publish(message)
            for label in self.received(label_topic):
                key = (label.header.stamp.sec, label.header.stamp.nanosec)
                if label.header.frame_id == frame_id and key in sent:
                    return sent[key], label
            return None

        return wait_until(labelled, f"a label on {label_topic} for frames sent to {camera}", timeout, interval=0.2)

    def call(self, service_type: type, name: str, request: object, timeout: float = WAIT_S) -> object:
        """A service call, sent again every 2 s until answered: a request sent while the client and a just
        discovered server are not yet matched is lost, although wait_for_service already said yes."""
        key = (service_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(service_type, name)
        client = self._clients[key]
        deadline = time.monotonic() + timeout
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"no service {name} in {timeout:.0f} s")
        while True:
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _, done=done: done.set())
            if done.wait(max(0.0, min(2.0, deadline - time.monotonic()))):
                return future.result()
            client.remove_pending_request(future)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer in {timeout:.0f} s")

    def lifecycle_state(self, node: str = "/seg_node", timeout: float = WAIT_S) -> str:
        """The node's lifecycle state (``unconfigured``, ``inactive``, ``active``, ...), waiting for its service."""
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"{node}/get_state", GetState.Request(), timeout).current_state.label

    def change_state(self, transition_id: int, node: str = "/seg_node") -> bool:
        """A lifecycle transition; True when it succeeded (also when a repeated request found it done)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        goals = {
            Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
            Transition.TRANSITION_DEACTIVATE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured",
        }
        request = ChangeState.Request()
        request.transition.id = transition_id
        if self.call(ChangeState, f"{node}/change_state", request).success:
            return True
        return self.lifecycle_state(node) == goals.get(transition_id)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5)


def start_group(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """A command in its own session (process group), its stdout and stderr into ``log``."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


@contextmanager
def running_group(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
                  ) -> Iterator[subprocess.Popen]:
    """``start_group`` for the length of a ``with`` block; nothing of the group outlives it, even on failure."""
    process = start_group(command, env, log, cwd)
    try:
        yield process
    finally:
        end_group(process)


def assert_clean_stop(process: subprocess.Popen, log: Path, twice: bool = True) -> str:
    """Ctrl-C to the group (``twice``, as an impatient user does): gone within 2 s, exit 0, no traceback, no
    [ERROR] line; the log's text."""
    code, elapsed = stop_group(process, twice=twice)
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert not errors, "\n".join(errors)
    assert elapsed < STOP_S, f"still running {elapsed:.1f} s after Ctrl-C\n{output[-3000:]}"
    assert code == 0, f"exit status {code}\n{output[-3000:]}"
    return output


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen, second_after_s: float = 0.1, limit_s: float = STOP_S, twice: bool = True
               ) -> tuple[int, float]:
    """SIGINT to the whole group, if ``twice`` again after ``second_after_s`` (during shutdown); (exit
    status, seconds until every process of the group is gone). Whatever is left after ``limit_s`` is killed, and
    the time says so."""
    pgid = process.pid
    started = time.monotonic()
    os.killpg(pgid, signal.SIGINT)
    if twice:
        time.sleep(second_after_s)
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGINT)
    deadline = started + limit_s
    while (process.poll() is None or group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    if process.poll() is None or group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        return process.returncode, float("inf")
    return process.returncode, elapsed


def end_group(process: subprocess.Popen) -> None:
    """Teardown, after a failed test too: nothing of the group may outlive it. Ctrl-C first and SIGKILL only for
    what is left after ``STOP_S``: a killed participant never frees its Fast DDS shared-memory segment, which
    stays in /dev/shm (RAM, 64 MiB with our profile) until the machine reboots."""
    if process.poll() is None or group_alive(process.pid):
        try:
            stop_group(process)
        except ProcessLookupError:  # the group ended in between
            pass
    process.wait(timeout=10)
