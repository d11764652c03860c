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
import re
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from ..errors import UsageError
from .allocator import keep_freed_buffers

if TYPE_CHECKING:
    from rclpy.executors import Executor
    from rclpy.node import Node

SIGNALS = (signal.SIGINT, signal.SIGTERM)
USAGE = """usage: ros2 run seg_node seg_node [--help] [--ros-args ROS_ARGUMENTS ...]
       python -m seg_node [--help] [--ros-args ROS_ARGUMENTS ...]

seg_node: a managed (lifecycle) ROS 2 node that segments camera images with CGNet or ContextNet.
ROS arguments: -p NAME:=VALUE, --params-file FILE (keyed by the node's name, seg_node), -r FROM:=TO
(e.g. -r __ns:=/car, -r image:=/camera/image_raw), --log-level LEVEL.

parameters:"""
CALLBACK_LOG_EVERY_S = 10.0


class ShutdownRequest:
    """Installs itself for SIGINT and SIGTERM (call from the main thread, before rclpy.init, which is told
    to install none of its own)."""

    def __init__(self) -> None:
        self.requested = False
        # Until the process owns something to release (its node: DDS participant, shared memory, engine), a
        # signal ends it at once. Raised into torch's or rclpy's import instead, the KeyboardInterrupt leaves an
        # extension half-initialised: rclpy's import fails with a traceback, torch's C++ aborts the process.
        self.owns_nothing = True
        # whether a signal should also interrupt what runs now; the spin loop sets its own
        self.interrupts: Callable[[], bool] = lambda: True
        for number in SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        self.ignore_further()
        self.requested = True
        if self.owns_nothing:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
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


class RosArgumentsError(UsageError):
    """ROS arguments that rcl refuses: a params file that is missing or not YAML, a bad -p, -r or log level."""


def init_ros(args: list[str] | None) -> None:
    """rclpy.init without its signal handlers; RosArgumentsError, in one line, for arguments rcl refuses."""
    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
    from rclpy.logging import LoggingSeverity, get_logger_effective_level, set_logger_level
    from rclpy.signals import SignalHandlerOptions

    # rcl logs "Failed to parse global arguments" before raising: the error below says more, once
    set_logger_level("rcl", LoggingSeverity.FATAL)
    try:
        # rclpy's own handlers would shut the context down at once and let a second Ctrl-C (ros2 launch
        # forwards the terminal's) land anywhere; ShutdownRequest makes the first one end the spin loop.
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except _rclpy.RCLError as error:
        message = re.sub(r", at \S+:\d+", "", str(error)).removeprefix("failed to initialize rcl: ")
        raise RosArgumentsError(f"bad ROS arguments: {message}") from error
    finally:
        if get_logger_effective_level("rcl") == LoggingSeverity.FATAL:  # unless --log-level set it since
            set_logger_level("rcl", LoggingSeverity.UNSET)


def own_arguments(argv: list[str]) -> list[str]:
    """The arguments before ``--ros-args``: the node's own, of which it has only --help."""
    return argv[: argv.index("--ros-args")] if "--ros-args" in argv else list(argv)


def run(args: list[str] | None = None, stop: ShutdownRequest | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (0) or, under autostart, report why it cannot start (1); bad
    ROS arguments are a usage error (2).

    ``stop``: the process's ShutdownRequest, if ``main`` installed it already.
    """
    stop = stop or ShutdownRequest()
    node = None
    initialised = False
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        init_ros(args)  # before torch loads: bad arguments are told at once
        initialised = True
        from .node import SegmentationNode

        stop.owns_nothing = False  # rclpy creates the context's DDS participant with its first node
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
    except RosArgumentsError as error:
        print(f"seg_node: {error}", file=sys.stderr)
        return 2
    finally:
        stop.ignore_further()
        if node is not None:
            node.close()
            node.destroy_node()
        if initialised:
            rclpy.try_shutdown()
    return 0


def usage(arguments: list[str]) -> int | None:
    """--help: the usage and every parameter (0); another argument of the node's own: one line (2);
    None when there is none, and the node runs."""
    if not arguments:
        return None
    if arguments[0] in ("-h", "--help"):
        from .parameters import parameter_help

        print(f"{USAGE}\n{parameter_help()}")
        return 0
    print(f"seg_node: unknown argument {arguments[0]!r}: ROS arguments follow --ros-args (--help lists the "
          f"parameters)", file=sys.stderr)
    return 2


def main() -> NoReturn:
    """``ros2 run seg_node seg_node`` and ``python -m seg_node``."""
    stop = ShutdownRequest()  # first of all: a signal while torch and rclpy load ends the process with 0
    try:
        code = usage(own_arguments(sys.argv[1:]))
        if code is None:
            keep_freed_buffers()  # before DDS and the engine allocate: every frame's buffers are reused
            code = run(stop=stop)
    except KeyboardInterrupt:  # the signal came between run's own handlers (its finally included)
        code = 0
    # Everything the node owns is closed; the interpreter's own teardown (torch's above all) takes about
    # a second more, which would make Ctrl-C feel slow, so the process ends here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
