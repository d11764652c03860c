"""The node's process: run it until SIGINT/SIGTERM, the first of which starts an orderly shutdown.

``ros2 launch`` forwards the terminal's Ctrl-C to the node, which then gets SIGINT twice (from the
terminal's process group and from launch). With Python's default handler the second KeyboardInterrupt
lands wherever shutdown happens to be (joining the pipeline's threads), the node dies with -2 and launch
reports "process has died". Here the first signal sets ``requested`` (the spin loop ends and the node
shuts down through its lifecycle) and makes the process ignore both signals from then on; while nothing
spins the node's loop (start-up, an engine build), it also raises KeyboardInterrupt to stop that work.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .node import SegmentationNode

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownRequest:
    """Installs itself for SIGINT and SIGTERM (call from the main thread, after rclpy.init)."""

    def __init__(self) -> None:
        self.requested = False
        # whether a signal should also interrupt what runs now; the spin loop sets its own
        self.interrupts: Callable[[], bool] = lambda: True
        for number in SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        self.ignore_further()
        self.requested = True
        if self.interrupts():
            raise KeyboardInterrupt(signal.Signals(number).name)

    @staticmethod
    def ignore_further() -> None:
        """From now on SIGINT and SIGTERM do nothing: shutdown runs to its end."""
        for number in SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def run(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (0) or, under autostart, report why it cannot start (1)."""
    # rclpy's own handlers would shut the context down at once and let a second Ctrl-C (ros2 launch
    # forwards the terminal's) land anywhere; ShutdownRequest makes the first one end the loop below.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = ShutdownRequest()
    node = None
    try:
        node = SegmentationNode()
        if node.autostart and not node.start():
            node.get_logger().error(f"cannot start: {node.failure}")
            return 1
        stop.interrupts = lambda: bool(node.building)  # spinning: interrupt only an engine build
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.ignore_further()
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main() -> NoReturn:
    """``ros2 run seg_node seg_node`` and ``python -m seg_node``."""
    code = run()
    # Everything the node owns is closed; the interpreter's own teardown (torch's above all) takes about
    # a second more, which would make Ctrl-C feel slow, so the process ends here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
