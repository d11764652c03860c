"""Container health check: healthy when seg_node's diagnostics arrive and none is ERROR; unhealthy when they
have stopped, or when one says ERROR (the engine failed: configure, or on frames).

``seg-healthcheck [--timeout 5] [--topic /diagnostics] [--name-prefix seg_node]`` (``seg_node.cli.healthcheck``;
``python3 -m seg_node.ros_tools.healthcheck`` also works). The Docker images run it as their HEALTHCHECK: the
node publishes a DiagnosticArray with a status named ``seg_node...`` every ``diagnostics_period_s`` (1 s by
default), so a few seconds of silence means the node is dead, hung, or no longer reachable over DDS. A
WARN (a stale camera, a low rate) leaves the container healthy: restarting the node would not fix its input.
"""

from __future__ import annotations

import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

LEVEL_NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
LEVELS = [*LEVEL_NAMES.values(), "unknown"]  # best to worst
DEFAULT_TOPIC = "/diagnostics"
DEFAULT_NAME_PREFIX = "seg_node"
DEFAULT_TIMEOUT_S = 5.0


def level_name(level: bytes | int) -> str:
    """OK/WARN/ERROR/STALE for a DiagnosticStatus level (a one-byte ``bytes`` in rclpy)."""
    number = level[0] if isinstance(level, bytes) else int(level)
    return LEVEL_NAMES.get(number, "unknown")


def wait_for_statuses(node: Node, topic: str, name_prefix: str, timeout_s: float) -> list[DiagnosticStatus]:
    """The statuses whose name starts with ``name_prefix`` of the first array on ``topic`` that has one,
    within ``timeout_s``; none after that."""
    found: list[DiagnosticStatus] = []

    def on_array(array: DiagnosticArray) -> None:
        if not found:
            found.extend(status for status in array.status if status.name.startswith(name_prefix)  # or, past the
                         or status.name.partition(": ")[0].rsplit("/", 1)[-1].startswith(name_prefix))  # namespace

    # Best effort matches both reliable and best-effort publishers of /diagnostics.
    subscription = node.create_subscription(DiagnosticArray, topic, on_array, qos_profile_sensor_data)
    try:
        deadline = time.monotonic() + timeout_s
        while not found and (remaining := deadline - time.monotonic()) > 0:
            rclpy.spin_once(node, timeout_sec=min(remaining, 0.1))
    finally:
        node.destroy_subscription(subscription)
    return found


def check_health(topic: str = DEFAULT_TOPIC, name_prefix: str = DEFAULT_NAME_PREFIX,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, one line saying why): whether ``name_prefix*`` statuses arrive on ``topic`` within ``timeout_s``,
    none of them ERROR; the line gives the worst of them."""
    rclpy.init(args=[])
    try:
        node = rclpy.create_node("seg_node_healthcheck", enable_rosout=False, start_parameter_services=False)
        try:
            statuses = wait_for_statuses(node, topic, name_prefix, timeout_s)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    if not statuses:
        return False, f"unhealthy: no '{name_prefix}*' status on {topic} within {timeout_s:g} s"
    worst = max(statuses, key=lambda status: LEVELS.index(level_name(status.level)))
    healthy = level_name(worst.level) in ("OK", "WARN")
    return healthy, f"{'healthy' if healthy else 'unhealthy'}: {worst.name} [{level_name(worst.level)}] {worst.message}"

