"""Measure the node between processes, as on the car (``python -m seg_node.cli.measure {node,dds}``).

``measure_node``: for each frame size, CamVid val frames resized to it are published (rgb8) to seg_node in
its own process, at a rate or flat out (a new frame whenever fewer than ``in_flight`` await their label),
and a subscriber in this process counts the labels: the node's fps and end-to-end latency. In the same
run, on the same frames and engine options:

- the engine alone in this process (``evaluation.bench``'s synchronous and pipelined loops), before and
  after the node's rows of a size; its best rate is the node's ceiling: ``node_vs_engine``, and the node's
  own cost per frame, 1/node - 1/engine;
- rclpy's floor: a process that answers each frame with a prepared message of the label's size and does
  nothing else (``echo_frames``), measured by the same publisher and subscriber: what DDS and rclpy cost
  this design at that size, so ``own_vs_floor`` says how close to it the node comes; with
  ``network_label_floor`` also the floor of a design that publishes the label at the network's resolution
  plus a CameraInfo (for consumers that scale it), i.e. what that transport would save;
- the node's own stages on one frame, in this process with the node's own functions: receive + convert
  (rclpy's deserialisation + ``frame_from_message``), submit, result -> message, publish (rclpy's
  serialisation) and diagnostics; this process also measures, so these are costs, not the node's timeline.

Each size is measured with the label only subscribed, and (outputs "all") with label, colour mask and
overlay subscribed. ``measure_dds``: ``count`` best-effort WxH rgb8 frames at ``rate`` Hz to a subscriber in
another process, counting what arrives, with the package's Fast DDS profile and (``compare``) without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..engine import EngineConfig, SegmentationEngine, create_engine
from ..errors import SegNodeError
from ..evaluation.bench import CAMVID, read_frames, resize_frames, run_one_by_one, run_pipelined
from ..imaging import blend, colorize, palette_lut
from ..metrics import percentiles_ms
from ..ros.conversions import frame_from_message, image_message
from ..ros.diagnostics import CameraMonitor
from ..ros.parameters import parameters_from_engine_config
from ..weights import find_weights, read_info
from .node_process import PROFILE_VARIABLES, node_command, package_file, ros_environment

START_TIMEOUT_S = 120.0
RECEIVE_GRACE_S = 2.0
OUTPUTS = ("label", "color_mask", "overlay")
OUTPUT_SETS = {"label": ("label",), "all": ("label", "color_mask", "overlay")}
STAGE_REPEATS = 20
STAGES = ("receive_convert", "submit", "result_to_message", "publish", "diagnostics")


@dataclass(frozen=True)
class Topics:
    """Where the measured process takes frames and answers: the node's, or the floor's beside them (both
    processes run through the whole measurement, each idle while the other is measured)."""

    camera: str
    outputs: str  # the outputs' namespace: <outputs>/label, <outputs>/color_mask, <outputs>/overlay

    def output(self, name: str) -> str:
        return f"{self.outputs}/{name}"


NODE_TOPICS = Topics("/camera", "/seg_node/camera")  # cameras:=[camera] in the node's own namespace
FLOOR_TOPICS = Topics("/floor/camera", "/floor/camera/out")
NETWORK_LABEL_FLOOR_TOPICS = Topics("/floor_network_label/camera", "/floor_network_label/camera/out")


class MeasureError(SegNodeError, RuntimeError):
    """A process of the measurement did not start or answer; the message says which."""


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
    baseline: bool = True  # the engine alone and the node's stages, in this process
    floor: bool = True  # rclpy's floor, in another process
    network_label_floor: bool = False  # also the floor with the label at network resolution + CameraInfo


@dataclass
class DdsSettings:
    """What ``measure_dds`` sends (``seg_node.cli.measure dds``'s flags)."""

    size: tuple[int, int] = (2048, 1024)  # width, height
    rate: float = 30.0
    count: int = 300


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


def use_package_profile() -> None:
    """This process's DDS participants read the package's shared-memory profile (unless one is set)."""
    profile = str(package_file("config/fastdds_shm.xml"))
    for variable in PROFILE_VARIABLES:
        os.environ.setdefault(variable, profile)


def camvid_frames(camvid: Path, count: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    """``count`` CamVid val frames as RGB, resized to ``size`` (width, height) unless None."""
    frames = read_frames(camvid, count)
    if size is not None:
        frames = resize_frames(frames, size[1], size[0])
    return [cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in frames]


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


def publish_in_flight(in_flight: int, seconds: float, publish: Callable[[int], None], arrivals: list) -> int:
    """Flat out: publish whenever fewer than ``in_flight`` frames await their label, for ``seconds``."""
    start = time.perf_counter()
    first_arrival = len(arrivals)
    index = 0
    last_publish = start
    while (now := time.perf_counter()) - start < seconds:
        waiting = index - (len(arrivals) - first_arrival)
        # a frame lost on the way would stall the loop: after a second without a label, send another
        if waiting < in_flight or now - last_publish > 1.0:
            publish(index)
            index += 1
            last_publish = now
        else:
            time.sleep(0.001)
    return index


# ---- the engine alone and the node's stages, in this process

def engine_alone(engine: SegmentationEngine, frames: list[np.ndarray], seconds: float) -> dict[str, Any]:
    """Frames per second of synchronous ``infer`` and of its pipeline kept full, each for about ``seconds``."""
    run_one_by_one(engine.infer, frames, 0, 3)  # warm-up
    _, estimate_s, _ = run_one_by_one(engine.infer, frames, 0, 5)
    count = max(10, round(5 / estimate_s * seconds))
    _, sync_s, _ = run_one_by_one(engine.infer, frames, 0, count)
    _, pipelined_s, dropped = run_pipelined(engine, frames, 0, count, camera_fps=0.0)
    sync_fps, pipelined_fps = count / sync_s, (count - dropped) / pipelined_s
    return {"backend": engine.backend_name, "sync_fps": sync_fps, "pipelined_fps": pipelined_fps,
            "fps": max(sync_fps, pipelined_fps)}


def median_ms(run: Callable[[], object], repeats: int = STAGE_REPEATS) -> float:
    """The median time of ``run`` in ms: robust to the other processes sharing the cores."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def stage_costs(engine: SegmentationEngine, frame: np.ndarray, outputs: tuple[str, ...]) -> dict[str, float]:
    """Milliseconds per frame of the node's stages for ``frame``, run with the node's own functions here."""
    header = Header(frame_id="camera")
    serialized = serialize_message(image_message(frame, header))
    labels = engine.infer(frame).labels
    lut = palette_lut(np.asarray(engine.info.palette).ravel())
    monitor = CameraMonitor("camera", NODE_TOPICS.camera, time.monotonic())

    def receive_convert() -> None:
        frame_from_message(deserialize_message(serialized, Image))

    def result_to_messages() -> list[Image]:
        messages = [image_message(labels, header)]
        if "color_mask" in outputs:
            mask = colorize(labels, lut)
            messages += [image_message(mask, header), image_message(blend(frame, mask, 0.5), header)]
        return messages

    def diagnostics() -> None:
        monitor.input(time.monotonic())
        monitor.output(list(outputs), 0.01)

    messages = result_to_messages()
    pipeline = engine.pipeline()
    try:
        submit_ms = median_ms(lambda: pipeline.submit(frame, stream="camera"))
    finally:
        pipeline.close()
    report_ms = median_ms(lambda: serialize_message(DiagnosticArray(status=[monitor.report(
        time.monotonic(), 0, 0.0, 2.0)])))
    return {
        "receive_convert": median_ms(receive_convert),
        "submit": submit_ms,
        "result_to_message": median_ms(result_to_messages),
        "publish": median_ms(lambda: [serialize_message(message) for message in messages]),
        "diagnostics": median_ms(diagnostics),
        "diagnostics_report_per_period": report_ms,
    }


# ---- the node and rclpy's floor, each in its own process

def echo_frames(topics: Topics, label_size: tuple[int, int] | None = None) -> None:
    """rclpy's floor (a process of ``measure_node``): answer each frame on ``topics`` with prepared messages,
    as the node's QoS would, doing nothing else. Their size is the frame's, or ``label_size`` (width, height),
    and then a CameraInfo goes with each, as a node publishing at network resolution would send it."""
    spinner = Spinner("seg_node_floor")
    node = spinner.node
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {name: node.create_publisher(Image, topics.output(name), reliable) for name in OUTPUTS}
    info_publisher = node.create_publisher(CameraInfo, topics.output("camera_info"), reliable)
    prepared: dict[tuple[str, int, int], Image] = {}

    def answer(message: Image) -> None:
        width, height = label_size or (message.width, message.height)
        for name, publisher in publishers.items():
            if name != "label" and not publisher.get_subscription_count():
                continue
            if (name, height, width) not in prepared:
                shape = (height, width) if name == "label" else (height, width, 3)
                prepared[name, height, width] = image_message(np.zeros(shape, np.uint8), Header())
            reply = prepared[name, height, width]
            reply.header = message.header
            publisher.publish(reply)
        if label_size is not None:
            info_publisher.publish(CameraInfo(header=message.header, height=height, width=width))

    node.create_subscription(Image, topics.camera, answer, qos_profile_sensor_data)
    print("ready", flush=True)
    sys.stdin.readline()
    spinner.close()


@contextmanager
def process(command: list[str], env: dict[str, str], output: Any = subprocess.PIPE) -> Any:
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


class Probe:
    """The camera and the subscribers of the measurement: publishes frames, counts what comes back."""

    def __init__(self, name: str, topics: Topics) -> None:
        self.spinner = Spinner(name)
        self.topics = topics
        node = self.spinner.node
        self.arrivals: list[float] = []
        self.latencies: list[float] = []
        self.diagnostics: list[DiagnosticArray] = []
        # reliable: every label published is counted (the node's publishers are reliable)
        node.create_subscription(Image, topics.output("label"), self._on_label, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.publisher = node.create_publisher(Image, topics.camera, 10)

    def _on_label(self, message: Image) -> None:
        now = self.spinner.node.get_clock().now().nanoseconds
        stamp = message.header.stamp
        self.arrivals.append(time.perf_counter())
        self.latencies.append((now - stamp.sec * 1_000_000_000 - stamp.nanosec) * 1e-9)

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
        messages = [image_message(frame, Header(frame_id="camera")) for frame in frames]
        clock = self.spinner.node.get_clock()

        def publish(index: int) -> None:
            message = messages[index % len(messages)]
            message.header.stamp = clock.now().to_msg()
            self.publisher.publish(message)

        def offer(seconds: float) -> int:
            if settings.rate > 0:
                return publish_at(settings.rate, seconds, publish)
            return publish_in_flight(settings.in_flight, seconds, publish, self.arrivals)

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
def started(command: list[str], what: str, topics: Topics) -> Any:
    """``command`` (the node or the floor) running, with a Probe on ``topics`` once it answers."""
    with tempfile.TemporaryDirectory(prefix="seg_node_measure_") as folder, \
            open(Path(folder) / "output.log", "w") as log, process(command, ros_environment(), log) as child:
        probe = Probe(f"seg_node_measure_{what.replace(' ', '_')}", topics)
        try:
            probe.wait_for(child, what, Path(log.name))
            yield probe
        finally:
            probe.close()


def node_overrides(weights: Path, config: EngineConfig) -> dict[str, Any]:
    """The node's parameters of a measurement: one camera, the engine of ``config``, no fps expectation."""
    return {"weights": str(weights), "cameras": ["camera"], "diagnostics_period_s": 1.0, "expected_fps": 0.0,
            **parameters_from_engine_config(config)}


def row(size: str, outputs: str, node: dict, floor: dict | None, engine: dict | None,
        stages: dict | None, network_label_floor: dict | None) -> dict[str, Any]:
    """One line of the table: fps, the node's own cost per frame, the floor's, and the stage split."""
    node_fps = node["fps"]
    result: dict[str, Any] = {"frame_size": size, "outputs": outputs, "node": node, "node_fps": node_fps}
    if engine is not None:
        engine_fps = engine["fps"]
        own_ms = 1e3 / node_fps - 1e3 / engine_fps if node_fps > 0 else None
        result.update(engine_alone=engine, engine_fps=engine_fps, node_vs_engine=node_fps / engine_fps,
                      own_ms=own_ms, stages_ms=stages)
    if floor is not None:
        floor_ms = 1e3 / floor["fps"] if floor["fps"] > 0 else None
        result.update(floor=floor, floor_fps=floor["fps"], floor_ms=floor_ms)
        if result.get("own_ms") is not None and floor_ms:
            result["own_vs_floor"] = result["own_ms"] / floor_ms
    if network_label_floor is not None:
        result.update(network_label_floor=network_label_floor, network_label_floor_fps=network_label_floor["fps"])
    return result


def measure_size(settings: NodeMeasureSettings, frames: list[np.ndarray], engine: SegmentationEngine | None,
                 floors: dict[str, Probe], node: Probe) -> list[dict[str, Any]]:
    """The rows of one frame size: the engine alone, then per output set the stages, the floor and the node,
    one right after the other, so that the machine's load changes as little as possible between them."""
    size = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
    before = engine_alone(engine, frames, settings.seconds) if engine is not None else None
    measured = []
    for outputs in settings.outputs:
        stages = stage_costs(engine, frames[0], OUTPUT_SETS[outputs]) if engine is not None else None
        floor_results = {name: floor.run(frames, outputs, settings) for name, floor in floors.items()}
        node_result = node.run(frames, outputs, settings)
        node_result["node_diagnostics"] = node.node_diagnostics()
        measured.append((outputs, node_result, floor_results, stages))
    alone = None
    if engine is not None:
        # the load of a shared machine drifts: the engine's better rate of before and after is the ceiling
        after = engine_alone(engine, frames, settings.seconds)
        alone = {**max(before, after, key=lambda result: result["fps"]), "before": before, "after": after}
    return [row(size, outputs, node_result, floors.get("input"), alone, stages, floors.get("network"))
            for outputs, node_result, floors, stages in measured]


def measure_node(settings: NodeMeasureSettings) -> list[dict[str, Any]]:
    """The capacity table: one row per frame size and output set (see the module's docstring)."""
    use_package_profile()
    weights = find_weights(settings.weights)
    frame_sets = [camvid_frames(settings.camvid, settings.frames, size) for size in settings.frame_sizes or (None,)]
    mode = settings.rate if settings.rate > 0 else f"flat out, {settings.in_flight} in flight"
    rows = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="seg_node_measure_") as folder:
        engine = stack.enter_context(create_engine(weights, settings.engine)) if settings.baseline else None
        floors = {}
        echo = [sys.executable, "-m", "seg_node.cli.measure", "floor-echo"]
        if settings.floor:
            floors["input"] = stack.enter_context(started(echo, "the floor process", FLOOR_TOPICS))
        if settings.network_label_floor:
            height, width = settings.engine.network_size or read_info(weights).input_size
            command = [*echo, "--network-label", f"{width}x{height}"]
            floors["network"] = stack.enter_context(started(command, "the network-label floor process",
                                                            NETWORK_LABEL_FLOOR_TOPICS))
        command = node_command(node_overrides(weights, settings.engine), Path(folder) / "params.yaml")
        node = stack.enter_context(started(command, "seg_node", NODE_TOPICS))
        for frames in frame_sets:
            rows += measure_size(settings, frames, engine, floors, node)
    return [{"mode": "node", "rate_hz": mode, "seconds": settings.seconds, "weights": str(weights), **r}
            for r in rows]


def format_table(rows: list[dict[str, Any]]) -> str:
    """The capacity table as markdown: fps, ratios and the node's stage split (ms per frame)."""
    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    network = any("network_label_floor_fps" in r for r in rows)
    header = ("| frame | outputs | engine fps | node fps | node/engine | own ms | floor fps | floor ms | own/floor | "
              + ("floor fps, label at network size | " if network else "") + " | ".join(STAGES) + " |")
    lines = [header, "|" + " --- |" * (9 + network + len(STAGES))]
    for r in rows:
        stages = r.get("stages_ms", {})
        lines.append(
            f"| {r['frame_size']} | {r['outputs']} | {number(r.get('engine_fps'))} | {number(r['node_fps'])} | "
            f"{number(r.get('node_vs_engine'), 2)} | {number(r.get('own_ms'))} | {number(r.get('floor_fps'))} | "
            f"{number(r.get('floor_ms'))} | {number(r.get('own_vs_floor'), 2)} | "
            + (f"{number(r.get('network_label_floor_fps'))} | " if network else "")
            + " | ".join(number(stages.get(stage), 2) for stage in STAGES) + " |")
    return "\n".join(lines)


# ---- DDS delivery of large images

def receive_frames() -> None:
    """The subscriber process of ``measure_dds``: count frames until a line on stdin says the sender is done."""
    spinner = Spinner("dds_receiver")
    arrivals: list[float] = []
    spinner.node.create_subscription(Image, "/dds_probe", lambda _m: arrivals.append(time.monotonic()),
                                     qos_profile_sensor_data)
    print("ready", flush=True)
    sys.stdin.readline()
    spinner.close()
    print(json.dumps({"received": len(arrivals)}), flush=True)


def send_frames(settings: DdsSettings) -> None:
    """The publishing process of ``measure_dds``."""
    sender = Spinner("dds_sender")
    try:
        publisher = sender.node.create_publisher(Image, "/dds_probe", qos_profile_sensor_data)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not publisher.get_subscription_count():
            if time.monotonic() > deadline:
                raise MeasureError("the receiving process never subscribed")
            time.sleep(0.1)
        time.sleep(1.0)
        width, height = settings.size
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        build_start = time.perf_counter()
        message = image_message(pixels, Header(frame_id="dds_probe"))
        build_ms = (time.perf_counter() - build_start) * 1e3
        published = publish_at(settings.rate, settings.count / settings.rate, lambda _i: publisher.publish(message))
    finally:
        sender.close()
    print(json.dumps({"published": published, "message_build_ms": build_ms, "mib": pixels.nbytes / 2**20}))


def measure_dds(settings: DdsSettings, profile: bool) -> dict[str, Any]:
    """Sender and receiver each in a fresh process: Fast DDS reads its profile once per process."""
    environment = dict(os.environ)
    for variable in PROFILE_VARIABLES:
        environment.pop(variable, None)
        if profile:
            environment[variable] = str(package_file("config/fastdds_shm.xml"))
    module = [sys.executable, "-m", "seg_node.cli.measure"]
    with process([*module, "dds-receive"], environment) as receiver:
        if receiver.stdout.readline().strip() != "ready":
            raise MeasureError("the receiving process did not start")
        width, height = settings.size
        sent = subprocess.run([*module, "dds-send", "--size", str(width), str(height), "--rate", str(settings.rate),
                               "--count", str(settings.count)], env=environment, stdout=subprocess.PIPE, text=True)
        if sent.returncode != 0:
            raise MeasureError(f"the sending process failed (exit {sent.returncode})")
        sender = json.loads(sent.stdout.strip().splitlines()[-1])
        time.sleep(RECEIVE_GRACE_S)  # the last frames are still on their way
        received = json.loads(receiver.communicate("done\n", timeout=START_TIMEOUT_S)[0].strip().splitlines()[-1])
    return {
        "mode": "dds",
        "profile": environment.get(PROFILE_VARIABLES[0], "Fast DDS defaults"),
        "frame": f"{width}x{height} rgb8 ({sender['mib']:.1f} MiB)",
        "rate_hz": settings.rate,
        "published": sender["published"],
        "received": received["received"],
        "message_build_ms": sender["message_build_ms"],
    }
