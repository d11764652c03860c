"""Per-camera health for /diagnostics: rates, latency percentiles, drops, bad frames, staleness.

Built on diagnostic_msgs directly, since diagnostic_updater is not available everywhere the node runs.
Counters are fed from the executor thread (inputs) and the output thread (results) and read by the
diagnostics timer, hence the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from .topics import OUTPUTS, status_name

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


def key_values(values: dict[str, object]) -> list[KeyValue]:
    return [KeyValue(key=key, value=str(value)) for key, value in values.items()]


@dataclass
class _Window:
    inputs: int = 0
    idle: int = 0  # inputs not segmented: nobody subscribed to any output
    outputs: int = 0
    engine_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    network_times: list[float] = field(default_factory=list)


class CameraMonitor:
    """What one camera's frames did since the last report, and in total."""

    def __init__(self, name: str, topic: str, started: float, node_name: str = "/seg_node") -> None:
        self.name = name
        self.topic = topic
        self.status_name = status_name(node_name, f"camera {name}")
        self.camera_info = "none received"  # or the CameraInfo topic once one arrived
        self._lock = threading.Lock()
        self._window = _Window()
        self._window_start = started
        self._started = started
        self._last_input: float | None = None
        self.inputs_total = 0
        self.idle_total = 0
        self.outputs_total = 0
        self.bad_frames = 0
        self._dropped_reported = 0  # the pipeline's drop count at the last report
        self.engine_errors = 0
        self.last_problem = ""
        # per output topic: shows that outputs nobody subscribes to are neither computed nor published
        self.published = dict.fromkeys(OUTPUTS, 0)

    def input(self, now: float) -> None:
        with self._lock:
            self._window.inputs += 1
            self.inputs_total += 1
            self._last_input = now

    def idle(self) -> None:
        """The frame just counted by ``input`` is not segmented: nobody subscribes to any output."""
        with self._lock:
            self._window.idle += 1
            self.idle_total += 1

    def bad_frame(self, reason: str) -> None:
        with self._lock:
            self.bad_frames += 1
            self.last_problem = reason

    def engine_error(self, reason: str) -> None:
        with self._lock:
            self._window.engine_errors += 1
            self.engine_errors += 1
            self.last_problem = reason

    def output(self, published: list[str], latency_s: float | None, network_s: float | None = None) -> None:
        """A result published on the ``published`` outputs; ``latency_s`` from the input's stamp, if stamped;
        ``network_s`` the network's own time on the frame, so that latency beyond it shows as the node's."""
        with self._lock:
            self._window.outputs += 1
            self.outputs_total += 1
            for output in published:
                self.published[output] += 1
            if latency_s is not None:
                self._window.latencies.append(latency_s)
            if network_s is not None:
                self._window.network_times.append(network_s)

    def report(self, now: float, dropped: int, expected_fps: float, input_timeout_s: float,
               max_drop_ratio: float = 1.0) -> DiagnosticStatus:
        """The status of the window since the last report; starts a new window. ``dropped``: the pipeline's
        count so far; WARN when more than ``max_drop_ratio`` of the window's frames were dropped."""
        with self._lock:
            window, self._window = self._window, _Window()
            window_dropped, self._dropped_reported = dropped - self._dropped_reported, dropped
            elapsed = max(now - self._window_start, 1e-9)
            self._window_start = now
            since_input = now - (self._last_input if self._last_input is not None else self._started)
            values = {
                "topic": self.topic,
                "input_fps": f"{window.inputs / elapsed:.2f}",
                "output_fps": f"{window.outputs / elapsed:.2f}",
                "latency_p50_ms": _percentile_ms(window.latencies, 50),
                "latency_p95_ms": _percentile_ms(window.latencies, 95),
                "network_p50_ms": _percentile_ms(window.network_times, 50),
                "frames_received": self.inputs_total,
                "frames_idle": self.idle_total,
                "frames_published": self.outputs_total,
                "frames_dropped": dropped,
                "bad_frames": self.bad_frames,
                "engine_errors": self.engine_errors,
                "seconds_since_input": f"{since_input:.2f}" if self._last_input is not None else "never",
                "last_problem": self.last_problem,
                "camera_info": self.camera_info,
                **{f"published_{output}": count for output, count in self.published.items()},
            }
        level, message = OK, "ok"
        output_fps = window.outputs / elapsed
        if window.engine_errors:
            level, message = ERROR, f"engine failed on {window.engine_errors} frames: {values['last_problem']}"
        elif since_input > input_timeout_s:
            level, message = WARN, f"stale: no frame for {since_input:.1f} s (input_timeout_s {input_timeout_s})"
        elif window.inputs and window_dropped > max_drop_ratio * window.inputs:
            level, message = WARN, (f"dropped {window_dropped} of {window.inputs} frames (max_drop_ratio "
                                    f"{max_drop_ratio}): the engine does not keep up with the camera")
        elif window.idle and window.idle == window.inputs:
            message = f"idle: nobody subscribes to its outputs, the network does not run ({values['input_fps']} fps in)"
        # a stream at exactly expected_fps fits one frame more or fewer into a window, depending on its phase
        elif expected_fps > 0 and window.outputs + 1 < expected_fps * elapsed:
            level, message = WARN, f"output {output_fps:.1f} fps is below expected_fps {expected_fps}"
        return DiagnosticStatus(
            level=level, name=self.status_name, message=message, values=key_values(values)
        )


def _percentile_ms(samples: list[float], percent: float) -> str:
    return f"{np.percentile(samples, percent) * 1e3:.1f}" if samples else "n/a"
