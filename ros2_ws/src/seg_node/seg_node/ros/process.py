"""The node's process: run it until SIGINT/SIGTERM, the first of which starts an orderly shutdown.

``ros2 launch`` forwards the terminal's Ctrl-C to the node, which then gets SIGINT twice (from the
terminal's process group and from launch). With Python's default handler the second KeyboardInterrupt
lands wherever shutdown happens to be (joining the pipeline's threads), the node dies with -2 and launch
reports "process has died". Here the first signal sets ``requested`` (the spin loop ends and the node
shuts down through its lifecycle) and makes the process ignore both signals from then on; while nothing
spins the node's loop (start-up, an engine build), it also raises KeyboardInterrupt to stop that work.

The handlers are installed before anything heavy is imported: SIGTERM's default action would end the
process with status 143 while torch and rclpy load (seconds on a busy machine). So this module imports
rclpy and the node only inside ``run``, and setup.py's entry point is this module's ``main``.

An exception from a callback would end rclpy's spin and with it the car's segmentation; the loop logs it
(traceback included, at most once per ``CALLBACK_LOG_EVERY_S`` for the same error) and goes on.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from rclpy.executors import Executor
    from rclpy.node import Node

SIGNALS = (signal.SIGINT, signal.SIGTERM)
CALLBACK_LOG_EVERY_S = 10.0


class ShutdownRequest:
    """Installs itself for SIGINT and SIGTERM (call from the main thread, before rclpy.init, which is told
    to install none of its own)."""

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


def spin_until_stopped(executor: Executor, node: Node, stop: ShutdownRequest) -> None:
    """Spin ``node`` until ``stop`` is requested or its context shuts down (by someone else too: rclpy's
    ExternalShutdownException ends the loop); a failing callback is logged."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from .outputs import RateLimitedLog

    failures = RateLimitedLog(node, CALLBACK_LOG_EVERY_S)
    while not stop.requested and rclpy.ok(context=node.context):
        try:
            executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            return
        except Exception as error:  # noqa: BLE001 - a bug met by one message or timer must not end the node
            failures.error(
                (type(error).__name__, str(error)),
                f"a callback failed and was skipped; the node goes on:\n{traceback.format_exc().rstrip()}",
            )


def run(args: list[str] | None = None, stop: ShutdownRequest | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (0) or, under autostart, report why it cannot start (1).

    ``stop``: the process's ShutdownRequest, if ``main`` installed it already.
    """
    stop = stop or ShutdownRequest()
    node = None
    initialised = False
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from .node import SegmentationNode

        # rclpy's own handlers would shut the context down at once and let a second Ctrl-C (ros2 launch
        # forwards the terminal's) land anywhere; ShutdownRequest makes the first one end the loop below.
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        initialised = True
        node = SegmentationNode()
        if node.autostart and not node.start():
            node.get_logger().error(f"cannot start: {node.failure}")
            return 1
        stop.interrupts = lambda: bool(node.building)  # spinning: interrupt only an engine build
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_until_stopped(executor, node, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.ignore_further()
        if node is not None:
            node.close()
            node.destroy_node()
        if initialised:
            rclpy.try_shutdown()
    return 0


def main() -> NoReturn:
    """``ros2 run seg_node seg_node`` and ``python -m seg_node``."""
    stop = ShutdownRequest()  # first of all: a signal while torch and rclpy load ends the process with 0
    try:
        code = run(stop=stop)
    except KeyboardInterrupt:  # the signal came between run's own handlers (its finally included)
        code = 0
    # Everything the node owns is closed; the interpreter's own teardown (torch's above all) takes about
    # a second more, which would make Ctrl-C feel slow, so the process ends here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
