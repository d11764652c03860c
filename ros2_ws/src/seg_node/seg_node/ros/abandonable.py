"""Work that a signal can abandon: the engine build, run on a daemon thread while the caller waits.

A TensorRT or ONNX Runtime build is one long C++ call that a signal cannot interrupt; run on the thread that
handles signals it would hold Ctrl-C for minutes. Waiting on an event is interruptible: ShutdownRequest's
KeyboardInterrupt (seg_node.ros.process) ends the wait, the work is abandoned (it reports nothing more) and
the process ends without waiting for it (a daemon thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

Result = TypeVar("Result")
# The wait wakes this often: Python runs a signal's handler on the main thread only once that thread runs
# Python code, and a wait without a timeout is interrupted only when the kernel happens to deliver the
# signal to the main thread rather than to another of the process's threads.
WAKE_S = 0.05


def run_abandonably(work: Callable[[Callable[[str], None]], Result], report: Callable[[str], None],
                    name: str) -> Result:
    """``work(progress)`` on a daemon thread named ``name``; its result, or its exception raised here.

    ``progress`` hands messages to ``report`` until the wait is interrupted (KeyboardInterrupt), after which
    the abandoned work reports nothing more: what ``report`` touches may be gone by then.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()
    reporting = threading.Lock()  # a progress report and the abandonment exclude each other
    abandoned = threading.Event()

    def progress(message: str) -> None:
        with reporting:
            if not abandoned.is_set():
                report(message)

    def run() -> None:
        try:
            outcome["result"] = work(progress)
        except BaseException as error:  # handed to the waiting thread, which raises it
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while not done.wait(WAKE_S):
            pass
    except BaseException:
        with reporting:
            abandoned.set()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
