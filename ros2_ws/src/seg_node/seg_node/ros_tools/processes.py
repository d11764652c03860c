"""The processes of the demo and the measurement tools, and the ROS pieces they share.

``node_command`` is the one builder of seg_node's command line: the package's parameter YAML, then the
caller's overrides in a YAML file of their own (the order ``segment.launch.py`` gives them), so a tool
measures the node a user launches. ``ros_environment`` gives the processes of a run one DDS domain and the
package's Fast DDS shared-memory profile; ``child_process`` runs one and stops it; ``Spinner`` is a node of
the tool's own, spun in the background; ``publish_at`` publishes on a fixed schedule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from ..errors import SegNodeError
from ..share import CHECKOUT, share_file

PACKAGE_ROOT = CHECKOUT  # ros2_ws/src/seg_node in a checkout
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
START_TIMEOUT_S = 120.0


class MeasureError(SegNodeError, RuntimeError):
    """A process of the measurement did not start or answer; the message says which."""


def ros_environment(domain_id: int | None = None) -> dict[str, str]:
    """This process's environment for the processes of a run: the package's shared-memory DDS profile (unless
    one is set), unbuffered output, and with ``domain_id`` their own DDS domain on this machine."""
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = str(share_file("config/fastdds_shm.xml"))
    for variable in PROFILE_VARIABLES:
        env.setdefault(variable, profile)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def engine_parameters(engine: dict[str, Any]) -> dict[str, Any]:
    """The node's parameters for EngineConfig fields given by name; None (unset) is left to the package YAML."""
    parameters = {name: value for name, value in engine.items() if value is not None and name != "network_size"}
    if engine.get("network_size"):
        height, width = engine["network_size"]
        parameters.update(network_height=height, network_width=width)
    return parameters


def node_command(overrides: dict[str, Any], params_file: Path) -> list[str]:
    """``python -m seg_node`` with the package YAML, then ``overrides`` (parameter name -> value), which are
    written to ``params_file``."""
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": overrides}}))
    return [sys.executable, "-m", "seg_node", "--ros-args",
            "--params-file", str(share_file("config/seg_node.yaml")), "--params-file", str(params_file)]


def use_package_profile() -> None:
    """This process's DDS participants read the package's shared-memory profile (unless one is set)."""
    profile = str(share_file("config/fastdds_shm.xml"))
    for variable in PROFILE_VARIABLES:
        os.environ.setdefault(variable, profile)


@contextmanager
def child_process(command: list[str], env: dict[str, str], output: Any = subprocess.PIPE
                  ) -> Iterator[subprocess.Popen]:
    """A child process with a stdin pipe, its output to ``output``; stopped (terminated, then killed) on leaving."""
    child = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
                             text=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


class Spinner:
    """A node in its own context, spun on a background thread."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def publish_at(rate_hz: float, seconds: float, publish: Callable[[int], None]) -> int:
    """Call ``publish(index)`` at ``rate_hz`` on a fixed schedule for ``seconds``; the number published."""
    period = 1.0 / rate_hz
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < seconds:
        publish(index)
        index += 1
        time.sleep(max(0.0, start + index * period - time.perf_counter()))
    return index
