"""SIGINT or SIGTERM at any moment of the node's life stops it within 2 s: exit 0, no traceback, no [ERROR].

Ctrl-C, ``docker stop`` and launch's shutdown reach the node wherever it is: loading torch and rclpy,
creating the node, building the engine (an uninterruptible C call for TensorRT or ONNX Runtime: minutes on a
Jetson), activating, segmenting with frames in flight. The sweep signals node processes at points of their
start-up, each point a marker of the node's own progress plus a delay, so the points stay where they are
meant to be however slow a busy machine makes the start:

* ``handler``: the process handles SIGTERM (its SigCgt mask in /proc says so), the first thing it does;
  the delays after it fall in the imports, rclpy.init and the node's creation;
* ``building engine``, ``configured:``, ``active:``: log lines of configure and activate; after ``active:``
  a camera streams frames, so signals land with frames in flight;
* ``hanging``: an engine build that never returns (tests/hanging_build_node.py);
* transitions: once active, the test asks for deactivate (or deactivate, then cleanup) through the lifecycle
  service and signals while the node carries it out.

SIGINT goes to the process group, as a terminal's Ctrl-C does; SIGTERM to the process, as ``docker stop``.
A few processes run at once to keep the test short; a busy machine only moves the points later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import ros_helpers as ros
from sensor_msgs.msg import Image

DOMAIN = ros.domain_id(offset=37)
HANDLER = "handler"
HANGING_BUILD = Path(__file__).resolve().parent / "hanging_build_node.py"
CAMERA = "/stop_sweep_camera"
AT_ONCE = 4  # node processes at a time


@dataclass(frozen=True)
class Point:
    marker: str  # HANDLER or a line of the node's log
    delay_s: float  # after the marker
    signal: signal.Signals
    hanging_build: bool = False
    transition: str = ""  # "deactivate" or "cleanup": requested at the marker, the signal follows

    def __str__(self) -> str:
        build = ", build hangs" if self.hanging_build else ""
        transition = f", during {self.transition}" if self.transition else ""
        return f"{self.signal.name} {self.delay_s:.2f} s after {self.marker!r}{build}{transition}"


SIGNALS = (signal.SIGINT, signal.SIGTERM)
TIMELINE = [
    *((HANDLER, delay) for delay in (0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.8)),
    *(("building engine", delay) for delay in (0.0, 0.05, 0.2)),
    *(("configured:", delay) for delay in (0.0, 0.02)),
    *(("active:", delay) for delay in (0.0, 0.05, 0.3, 1.0)),
]
POINTS = [
    *(Point(marker, delay, SIGNALS[i % 2]) for i, (marker, delay) in enumerate(TIMELINE)),
    *(Point("building engine", delay, SIGNALS[i % 2], hanging_build=True) for i, delay in enumerate((0.0, 0.3, 1.0))),
    *(Point("active:", delay, SIGNALS[i % 2], transition=transition)
      for i, (transition, delay) in enumerate((("deactivate", 0.0), ("deactivate", 0.1), ("cleanup", 0.0),
                                               ("cleanup", 0.1)))),
]


def handles_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM installed (bit 15 of SigCgt in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def reached(process: subprocess.Popen, log: Path, marker: str) -> bool:
    if marker == HANDLER:
        return handles_sigterm(process.pid)
    return marker in log.read_text(errors="replace")


def request_transition(probe: ros.Probe, node: str, transition: str) -> threading.Thread:
    """Deactivate (and for "cleanup", then clean up) ``node``, the last request on a thread (returned) that
    does not wait past STOP_S for its answer."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    if transition == "cleanup":
        probe.change_state(Transition.TRANSITION_DEACTIVATE, node)
    request = ChangeState.Request()
    cleanup = transition == "cleanup"
    request.transition.id = Transition.TRANSITION_CLEANUP if cleanup else Transition.TRANSITION_DEACTIVATE

    def ask() -> None:
        try:
            probe.call(ChangeState, f"{node}/change_state", request, timeout=ros.STOP_S)
        except TimeoutError:  # the node stopped before it answered: what the signal is for
            pass

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread


def signal_at(point: Point, index: int, weights: Path, env: dict[str, str], folder: Path, probe: ros.Probe) -> str:
    """Start a node, signal it at ``point``; '' when it stopped cleanly, else what went wrong and its log."""
    namespace = f"/stop{index}"
    script = [str(HANGING_BUILD)] if point.hanging_build else ["-m", "seg_node"]
    command = [sys.executable, *script, "--ros-args", "-p", f"weights:={weights}", "-p", "backend:=torch",
               "-p", "device:=cpu", "-p", "threads:=1", "-r", f"__ns:={namespace}", "-r", f"image:={CAMERA}"]
    log = folder / f"node{index}.log"
    process = ros.start_group(command, env, log)
    try:
        ros.wait_until(lambda: reached(process, log, point.marker) or process.poll() is not None,
                       f"{point.marker!r} of node {index}", timeout=ros.START_S)
        if process.poll() is not None:
            return f"{point}: the node ended by itself with status {process.returncode}"
        requested = request_transition(probe, f"{namespace}/seg_node", point.transition) if point.transition else None
        time.sleep(point.delay_s)
        started = time.monotonic()
        if point.signal == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=ros.STOP_S)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - started
        if requested is not None:
            requested.join()  # before the probe closes
    finally:
        ros.end_group(process)
    output = log.read_text(errors="replace")
    problems = [f"exit status {code}" if code is not None else f"still running {ros.STOP_S:.0f} s after it"]
    problems = problems if code != 0 else []
    problems += ["a traceback"] * ("Traceback" in output) + ["an [ERROR] line"] * ("[ERROR]" in output)
    if problems:
        return f"{point}: {', '.join(problems)}; the log:\n{output[-2500:]}"
    print(f"{point}: stopped in {elapsed:.2f} s")
    return ""


@pytest.mark.slow  # node processes over DDS
def test_a_signal_at_any_point_of_start_up_stops_the_node_cleanly(make_weights, tmp_path):
    weights = make_weights(tmp_path, "cgnet")
    env = ros.node_environment(DOMAIN)
    probe = ros.Probe(DOMAIN, "stop_sweep")
    streaming = threading.Event()
    try:
        for index in range(len(POINTS)):  # someone wants each node's labels: the nodes segment every frame
            probe.subscribe(Image, f"/stop{index}/seg_node/image/label")
        publish = probe.image_publisher(CAMERA)
        frame = ros.rgb_frame(96, 128)

        def stream() -> None:
            sequence = 0
            while not streaming.wait(0.05):
                sequence += 1
                publish(ros.image_message(frame, "stop_sweep", sequence, 0))

        threading.Thread(target=stream, daemon=True).start()
        with ThreadPoolExecutor(AT_ONCE) as pool:
            failures = [failure for failure in pool.map(
                lambda indexed: signal_at(indexed[1], indexed[0], weights, env, tmp_path, probe), enumerate(POINTS)
            ) if failure]
    finally:
        streaming.set()
        probe.close()
    assert not failures, f"{len(failures)} of {len(POINTS)} points did not stop cleanly:\n\n" + "\n\n".join(failures)


def test_the_entry_point_handles_signals_before_it_loads_torch_or_rclpy():
    """setup.py's entry point and ``python -m seg_node`` start in seg_node.ros.process, whose import loads
    neither torch nor rclpy: main() installs the handlers first, so SIGTERM during those seconds of loading
    ends the process with 0, not 143."""
    probe = "import sys, seg_node.ros.process; print(sorted({'torch', 'rclpy'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], env=ros.node_environment(DOMAIN), capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "[]"
    setup = (ros.PACKAGE_ROOT / "setup.py").read_text()
    assert '"seg_node = seg_node.ros.process:main"' in setup
    main = (ros.PACKAGE_ROOT / "seg_node" / "__main__.py").read_text()
    assert "from seg_node.ros.process import main" in main
