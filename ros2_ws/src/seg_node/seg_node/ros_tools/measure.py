"""The node's capacity between processes, as on the car (``python -m seg_node.cli.measure node``).

``measure_node``: for each frame size, CamVid val frames resized to it are published (rgb8) to seg_node in
its own process, at a rate or flat out (a new frame whenever fewer than ``in_flight`` await their label;
a frame older than the newest labelled one is lost, not awaited), and a subscriber in this process counts
the labels: the node's fps and end-to-end latency. Frames go out and labels come in as serialized bytes
(ros/image_cdr.py), so that this process takes little of the cores the node runs on. In the same run, on
the same frames and engine options:

- the engine alone in this process (``evaluation.timing``'s synchronous and pipelined loops, the better
  of the two), taking turns with the node for ``rounds`` rounds: a row is the round whose ratio
  ``node_vs_engine`` is the median, and the node's own cost per frame is 1/node - 1/engine of that round;
- the floors: processes that answer each frame with a prepared label of its size and do nothing else
  (``floor.echo_frames``), measured by the same publisher and subscriber: rclpy's floor with Python
  messages (what any rclpy node pays for messages of that size; ``own_vs_floor``), and the raw floor with
  serialized bytes as the node takes and sends them (the floor of its design; ``own_vs_raw_floor``); with
  ``network_label_floor`` also the raw floor with the label at the network's resolution plus a CameraInfo
  (for consumers that scale it), i.e. what that transport would save;
- the node's own stages on one frame, in this process with the node's own functions: receive + convert
  (``frame_from_serialized``), submit, result -> message (``image_cdr``), publish (rclpy's part, to a
  topic nobody subscribes) and diagnostics; this process also measures, so these are costs, not the node's
  timeline.

Each size is measured with the label only subscribed, and (outputs "all") with label, colour mask and
overlay subscribed. (DDS delivery of large images alone: ``seg_node.ros_tools.dds``.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.publisher import Publisher
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tqdm import tqdm

from ..engine import EngineConfig, SegmentationEngine, create_engine
from ..evaluation.bench import CAMVID, read_frames, resize_frames
from ..evaluation.timing import TimingSettings, time_engine
from ..imaging import blend, colorize, palette_lut
from ..metrics import percentiles_ms
from ..ros.allocator import keep_freed_buffers
from ..ros.conversions import frame_from_serialized
from ..ros.diagnostics import CameraMonitor
from ..ros.image_cdr import image_cdr, parse_image
from ..ros.parameters import parameters_from_engine_config
from ..weights import find_weights, read_info
from .floor import FLOOR_TOPICS, NETWORK_LABEL_FLOOR_TOPICS, NODE_TOPICS, RAW_FLOOR_TOPICS, Topics
from .processes import (
    START_TIMEOUT_S,
    MeasureError,
    Spinner,
    child_process,
    node_command,
    publish_at,
    ros_environment,
    use_package_profile,
)

OUTPUT_SETS = {"label": ("label",), "all": ("label", "color_mask", "overlay")}
STAGE_REPEATS = 20
STAGES = ("receive_convert", "submit", "result_to_message", "publish", "diagnostics")


@dataclass
class NodeMeasureSettings:
    """What ``measure_node`` measures (``seg_node.cli.measure node``'s flags, same names)."""

    camvid: Path = CAMVID
    frames: int = 20  # distinct CamVid val frames to cycle through
    frame_sizes: tuple[tuple[int, int], ...] = ()  # (width, height) each; empty: CamVid's own 480x360
    rate: float = 10.0  # frames offered per second; 0: flat out
    in_flight: int = 2  # flat out: frames awaiting their label at a time
    seconds: float = 20.0
    warmup: float = 3.0
    weights: str = ""  # weights file or shipped name; empty: cgnet_camvid
    engine: EngineConfig = field(default_factory=EngineConfig)
    outputs: tuple[str, ...] = ("label",)  # keys of OUTPUT_SETS
    rounds: int = 5  # the engine alone and the node take turns, seconds / rounds each
    baseline: bool = True  # the engine alone and the node's stages, in this process
    floor: bool = True  # rclpy's floor and the raw floor, each in another process
    network_label_floor: bool = False  # also the floor with the label at network resolution + CameraInfo


def camvid_frames(camvid: Path, count: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    """``count`` CamVid val frames as RGB, resized to ``size`` (width, height) unless None."""
    frames = read_frames(camvid, count)
    if size is not None:
        frames = resize_frames(frames, size[1], size[0])
    return [cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in frames]


def publish_in_flight(in_flight: int, seconds: float, publish: Callable[[int], int],
                      answered_by: Callable[[int, float], int]) -> int:
    """Flat out: publish whenever fewer than ``in_flight`` frames await their label, for ``seconds``.

    ``publish(index)`` returns the frame's stamp (ns); ``answered_by(stamp, timeout)`` waits (no polling,
    which would take the cores from the node) until a label with that stamp or a newer one came back, or
    the timeout passed, and returns the newest stamp answered. Labels come back in stamp order, so a frame
    older than that one that got none never will (the node's newest-frame-wins, or the camera QoS's keep-last):
    it no longer counts as awaited.
    """
    start = time.perf_counter()
    awaited: deque[int] = deque()
    answered = -1
    index = 0
    last_publish = start
    while (now := time.perf_counter()) - start < seconds:
        while awaited and awaited[0] <= answered:
            awaited.popleft()
        # every frame lost at once would stall the loop: after a second without a label, send another
        if len(awaited) < in_flight or now - last_publish > 1.0:
            awaited.append(publish(index))
            index += 1
            last_publish = now
        else:
            answered = answered_by(awaited[0], min(last_publish + 1.0, start + seconds) - now)
    return index


# ---- the engine alone and the node's stages, in this process

def engine_alone(engine: SegmentationEngine, frames: list[np.ndarray], seconds: float) -> dict[str, Any]:
    """Frames per second of synchronous ``infer`` and of its pipeline kept full, each for about ``seconds``
    (the one timing harness, evaluation.timing)."""
    sync = time_engine(engine, frames, TimingSettings("synchronous", seconds=seconds, warmup=3, minimum=10))
    pipelined = time_engine(engine, frames, TimingSettings("pipelined", seconds=seconds, warmup=3, minimum=10))
    return {"backend": engine.backend_name, "sync_fps": sync.fps, "pipelined_fps": pipelined.fps,
            "fps": max(sync.fps, pipelined.fps)}


def median_ms(run: Callable[[], object], repeats: int = STAGE_REPEATS) -> float:
    """The median time of ``run`` in ms: robust to the other processes sharing the cores."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def stage_costs(engine: SegmentationEngine, frame: np.ndarray, outputs: tuple[str, ...],
                publisher: Publisher) -> dict[str, float]:
    """Milliseconds per frame of the node's stages for ``frame``, run with the node's own functions here;
    ``publisher`` has no subscriber, so "publish" is rclpy's part of it (the bytes handed to the DDS)."""
    header = Header(frame_id="camera")
    serialized = image_cdr(frame, header)
    labels = engine.infer(frame).labels
    lut = palette_lut(np.asarray(engine.info.palette).ravel())
    monitor = CameraMonitor("camera", NODE_TOPICS.camera, time.monotonic())

    def result_to_messages() -> list[bytes]:
        messages = [image_cdr(labels, header)]
        if "color_mask" in outputs:
            mask = colorize(labels, lut)
            messages += [image_cdr(mask, header), image_cdr(blend(frame, mask, 0.5), header)]
        return messages

    def diagnostics() -> None:
        monitor.input(time.monotonic())
        monitor.output(list(outputs), 0.01, 0.005)

    messages = result_to_messages()
    pipeline = engine.pipeline()
    try:
        submit_ms = median_ms(lambda: pipeline.submit(frame, stream="camera"))
    finally:
        pipeline.close()
    report_ms = median_ms(lambda: serialize_message(DiagnosticArray(status=[monitor.report(
        time.monotonic(), 0, 0.0, 2.0)])))
    return {
        "receive_convert": median_ms(lambda: frame_from_serialized(serialized)),
        "submit": submit_ms,
        "result_to_message": median_ms(result_to_messages),
        "publish": median_ms(lambda: [publisher.publish(message) for message in messages]),
        "diagnostics": median_ms(diagnostics),
        "diagnostics_report_per_period": report_ms,
    }


class Probe:
    """The camera and the subscribers of the measurement: publishes frames, counts what comes back.

    Frames go out and labels come in as serialized bytes (ros/image_cdr.py), as a C++ camera driver and
    consumer would cost the cores little: what this process takes from the node's cores is not the node's.
    """

    def __init__(self, name: str, topics: Topics) -> None:
        self.spinner = Spinner(name)
        self.topics = topics
        node = self.spinner.node
        self.arrivals: list[float] = []
        self.latencies: list[float] = []
        self.newest_answered = -1  # the newest stamp (ns) a label came back with
        self._answered = threading.Condition()
        self.diagnostics: list[DiagnosticArray] = []
        # reliable: every label published is counted (the node's publishers are reliable)
        node.create_subscription(Image, topics.output("label"), self._on_label, 100, raw=True)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.publisher = node.create_publisher(Image, topics.camera, 10)

    def _on_label(self, serialized: bytes) -> None:
        now = self.spinner.node.get_clock().now().nanoseconds
        stamp = parse_image(serialized).header.stamp
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        self.arrivals.append(time.perf_counter())
        self.latencies.append((now - stamp_ns) * 1e-9)
        with self._answered:
            self.newest_answered = max(self.newest_answered, stamp_ns)
            self._answered.notify_all()

    def answered_by(self, stamp_ns: int, timeout: float) -> int:
        """Wait until a label stamped ``stamp_ns`` or later came back, at most ``timeout`` s; the newest stamp."""
        with self._answered:
            self._answered.wait_for(lambda: self.newest_answered >= stamp_ns, max(timeout, 0.0))
            return self.newest_answered

    def wait_for(self, child: subprocess.Popen, what: str, log: Path) -> None:
        """Until ``child`` subscribes to the camera and publishes labels; MeasureError if it exits or hangs."""
        deadline = time.monotonic() + START_TIMEOUT_S
        node = self.spinner.node
        while not (self.publisher.get_subscription_count() and node.count_publishers(self.topics.output("label"))):
            if child.poll() is not None or time.monotonic() > deadline:
                state = f"exited ({child.returncode})" if child.poll() is not None else "did not start in time"
                output = log.read_text(errors="replace")[-2000:]
                raise MeasureError(f"{what} {state} (limit {START_TIMEOUT_S:.0f} s); its output:\n{output}")
            time.sleep(0.1)
        time.sleep(1.0)  # endpoints matched both ways

    @contextmanager
    def subscribed(self, outputs: tuple[str, ...]) -> Any:
        """Also subscribed to the outputs beyond the label (so the node makes them) while inside."""
        node = self.spinner.node
        extra = [node.create_subscription(Image, self.topics.output(name), lambda _m: None, 10)
                 for name in outputs if name != "label"]
        if extra:
            time.sleep(1.0)  # the node's publishers see the new subscribers
        try:
            yield
        finally:
            for subscription in extra:
                node.destroy_subscription(subscription)

    def run(self, frames: list[np.ndarray], outputs: str, settings: NodeMeasureSettings) -> dict[str, Any]:
        """With ``outputs`` subscribed, warm up, then publish for ``settings.seconds``; fps and latency."""
        with self.subscribed(OUTPUT_SETS[outputs]):
            return self._run(frames, settings)

    def _run(self, frames: list[np.ndarray], settings: NodeMeasureSettings) -> dict[str, Any]:
        clock = self.spinner.node.get_clock()

        def publish(index: int) -> int:
            stamp = clock.now()
            self.publisher.publish(image_cdr(frames[index % len(frames)], Header(stamp=stamp.to_msg(),
                                                                                 frame_id="camera")))
            return stamp.nanoseconds

        def offer(seconds: float) -> int:
            if settings.rate > 0:
                return publish_at(settings.rate, seconds, publish)
            return publish_in_flight(settings.in_flight, seconds, publish, self.answered_by)

        offer(settings.warmup)
        time.sleep(0.5)
        self.latencies.clear()
        self.arrivals.clear()
        self.diagnostics.clear()
        published = offer(settings.seconds)
        time.sleep(1.0)
        arrivals = list(self.arrivals)
        received = len(arrivals)
        span = arrivals[-1] - arrivals[0] if received > 1 else float("nan")
        return {"published": published, "received": received,
                "fps": (received - 1) / span if received > 1 else 0.0,
                "latency_ms": percentiles_ms(list(self.latencies))}

    def node_diagnostics(self) -> dict[str, Any]:
        """The node's own view of the last run: one full window of its camera, and its engine's message."""
        camera = [{kv.key: kv.value for kv in s.values} for a in self.diagnostics for s in a.status
                  if s.name.endswith("seg_node: camera camera")]
        camera = [values for values in camera if float(values["input_fps"]) > 0]
        engine = [s.message for a in self.diagnostics for s in a.status if s.name.endswith("seg_node: engine")]
        return {"camera": camera[len(camera) // 2] if camera else {}, "engine": engine[-1] if engine else ""}

    def close(self) -> None:
        self.spinner.close()


@contextmanager
def started(command: list[str], what: str, topics: Topics) -> Iterator[Probe]:
    """``command`` (the node or the floor) running, with a Probe on ``topics`` once it answers."""
    with tempfile.TemporaryDirectory(prefix="seg_node_measure_") as folder, \
            open(Path(folder) / "output.log", "w") as log, child_process(command, ros_environment(), log) as child:
        probe = Probe("seg_node_measure_" + re.sub(r"\W", "_", what), topics)  # a valid node name
        try:
            probe.wait_for(child, what, Path(log.name))
            yield probe
        finally:
            probe.close()


def node_overrides(weights: Path, config: EngineConfig) -> dict[str, Any]:
    """The node's parameters of a measurement: one camera, the engine of ``config``, no fps expectation."""
    return {"weights": str(weights), "cameras": ["camera"], "diagnostics_period_s": 1.0, "expected_fps": 0.0,
            **parameters_from_engine_config(config)}


def row(size: str, outputs: str, rounds: list[dict[str, Any]], floors: dict[str, dict],
        stages: dict | None) -> dict[str, Any]:
    """One line of the table: the round whose node/engine ratio is the median (or, without the engine, whose
    node fps is; every round is kept under "rounds"), the node's own cost per frame, the floors' (rclpy's,
    the raw one, the network-label one) and the stage split."""
    with_engine = rounds[0]["engine"] is not None
    summaries = [{"node_fps": m["node"]["fps"], "engine_fps": m["engine"]["fps"] if with_engine else None,
                  "node_vs_engine": m["node"]["fps"] / m["engine"]["fps"] if with_engine else None} for m in rounds]
    key = "node_vs_engine" if with_engine else "node_fps"
    median = sorted(range(len(rounds)), key=lambda index: summaries[index][key])[len(rounds) // 2]
    node = rounds[median]["node"]
    result: dict[str, Any] = {"frame_size": size, "outputs": outputs, "node": node, "node_fps": node["fps"],
                              "rounds": summaries}
    if with_engine:
        engine = rounds[median]["engine"]
        own_ms = 1e3 / node["fps"] - 1e3 / engine["fps"] if node["fps"] > 0 else None
        result.update(engine_alone=engine, engine_fps=engine["fps"],
                      node_vs_engine=summaries[median]["node_vs_engine"], own_ms=own_ms, stages_ms=stages)
    for name, prefix in (("input", "floor"), ("raw", "raw_floor"), ("network", "network_label_floor")):
        if name in floors:
            floor = floors[name]
            floor_ms = 1e3 / floor["fps"] if floor["fps"] > 0 else None
            result.update({prefix: floor, f"{prefix}_fps": floor["fps"], f"{prefix}_ms": floor_ms})
            if result.get("own_ms") is not None and floor_ms and name != "network":
                result[f"own_vs_{prefix}"] = result["own_ms"] / floor_ms
    return result


def measure_size(settings: NodeMeasureSettings, frames: list[np.ndarray], engine: SegmentationEngine | None,
                 floors: dict[str, Probe], node: Probe) -> list[dict[str, Any]]:
    """The rows of one frame size. The engine alone and the node (per output set) take turns for
    ``settings.rounds`` rounds of ``seconds / rounds`` each, so that a change in the machine's speed meets
    both alike (on a shared virtual machine two busy threads at times run 1.8x slower for seconds to tens
    of seconds, the engine alone as well as the node); a row is the round of median ratio. The floors and the stages,
    which do not run the engine, are measured once, for ``seconds / rounds``."""
    size = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
    each = replace(settings, seconds=settings.seconds / settings.rounds)
    stages = dict.fromkeys(settings.outputs)
    if engine is not None:
        probe_node = node.spinner.node
        publisher = probe_node.create_publisher(Image, "seg_node_measure/unsubscribed_image", 1)
        stages = {outputs: stage_costs(engine, frames[0], OUTPUT_SETS[outputs], publisher)
                  for outputs in settings.outputs}
        probe_node.destroy_publisher(publisher)
    floor_results = {outputs: {name: floor.run(frames, outputs, each) for name, floor in floors.items()}
                     for outputs in settings.outputs}
    rounds: dict[str, list[dict[str, Any]]] = {outputs: [] for outputs in settings.outputs}
    for _ in tqdm(range(settings.rounds), desc=f"{size}: engine and node, rounds", leave=False):
        alone = engine_alone(engine, frames, each.seconds) if engine is not None else None
        for outputs in settings.outputs:
            node_result = node.run(frames, outputs, each)
            node_result["node_diagnostics"] = node.node_diagnostics()
            rounds[outputs].append({"node": node_result, "engine": alone})
    return [row(size, outputs, rounds[outputs], floor_results[outputs], stages[outputs])
            for outputs in settings.outputs]


def measure_node(settings: NodeMeasureSettings) -> list[dict[str, Any]]:
    """The capacity table: one row per frame size and output set (see the module's docstring)."""
    use_package_profile()
    keep_freed_buffers()  # the measuring process allocates frames as the node does
    weights = find_weights(settings.weights)
    frame_sets = [camvid_frames(settings.camvid, settings.frames, size) for size in settings.frame_sizes or (None,)]
    mode = settings.rate if settings.rate > 0 else f"flat out, {settings.in_flight} in flight"
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="seg_node_measure_") as folder:
        engine = stack.enter_context(create_engine(weights, settings.engine)) if settings.baseline else None
        floors = {}
        echo = [sys.executable, "-m", "seg_node.ros_tools.floor"]
        if settings.floor:
            floors["input"] = stack.enter_context(started(echo, "the floor process", FLOOR_TOPICS))
            floors["raw"] = stack.enter_context(started([*echo, json.dumps({"raw": True})], "the raw floor process",
                                                        RAW_FLOOR_TOPICS))
        if settings.network_label_floor:
            height, width = settings.engine.network_size or read_info(weights).input_size
            command = [*echo, json.dumps({"label_size": [width, height], "raw": True})]
            floors["network"] = stack.enter_context(started(command, "the network-label floor process",
                                                            NETWORK_LABEL_FLOOR_TOPICS))
        command = node_command(node_overrides(weights, settings.engine), Path(folder) / "params.yaml")
        node = stack.enter_context(started(command, "seg_node", NODE_TOPICS))
        for frames in frame_sets:
            rows += measure_size(settings, frames, engine, floors, node)
    return [{"mode": "node", "rate_hz": mode, "seconds": settings.seconds, "rounds": settings.rounds,
             "weights": str(weights), **r} for r in rows]


def format_table(rows: list[dict[str, Any]]) -> str:
    """The capacity table as markdown: fps, ratios, floors and the node's stage split (ms per frame)."""
    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    network = any("network_label_floor_fps" in r for r in rows)
    columns = ["frame", "outputs", "engine fps", "node fps", "node/engine", "own ms", "rclpy floor ms",
               "own/rclpy floor", "raw floor ms", "own/raw floor", *(["floor ms, label at network size"] if network
                                                                      else []), *STAGES]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        stages = r.get("stages_ms") or {}
        cells = [r["frame_size"], r["outputs"], number(r.get("engine_fps")), number(r["node_fps"]),
                 number(r.get("node_vs_engine"), 2), number(r.get("own_ms")), number(r.get("floor_ms")),
                 number(r.get("own_vs_floor"), 2), number(r.get("raw_floor_ms")), number(r.get("own_vs_raw_floor"), 2),
                 *([number(r.get("network_label_floor_ms"))] if network else []),
                 *(number(stages.get(stage), 2) for stage in STAGES)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
