"""Measure the node between processes, as on the car: ``python -m seg_node.ros_tools.measure {node,dds} ...``.

``node``: start seg_node in its own process, publish CamVid frames (rgb8) at ``--rate`` Hz, and report
the label rate and the end-to-end latency (label arrival minus the input's stamp) seen by a subscriber
in this process, plus the node's own /diagnostics figures. First, as the baseline of the same run, the
engine alone runs in this process on the same frames with the same options (synchronous ``infer`` and its
pipeline kept full); ``node_vs_engine`` is the node's label rate over the engine's better one.
``dds``: publish ``--count`` best-effort WxH rgb8 frames at ``--rate`` Hz to a subscriber in another
process and count what arrives, with the package's Fast DDS profile and (``--compare``) without it.
Results print as a table and, with ``--json``, go to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..engine import EngineConfig, create_engine
from ..engine.options import add_engine_arguments, engine_config_from_args
from ..evaluation.timing import TimingSettings, time_engine
from ..metrics import percentiles_ms
from ..ros.conversions import image_message
from ..ros.parameters import parameters_from_engine_config
from ..share import share_file
from ..weights import find_weights

PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
NODE_START_TIMEOUT_S = 120.0
RECEIVE_GRACE_S = 2.0
NODE_ENGINE_OPTIONS = ("backend", "device", "precision", "threads", "network_size")


def profile_path() -> Path:
    """The package's Fast DDS profile: installed (ament or pip) or in the source tree."""
    return share_file("config/fastdds_shm.xml")


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


def camvid_frames(camvid_root: Path, count: int) -> list[np.ndarray]:
    lines = (camvid_root / "val.txt").read_text().split("\n")[:count]
    frames = [cv2.imread(str(camvid_root / line.split()[0]), cv2.IMREAD_COLOR) for line in lines if line.strip()]
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


def measure_engine(weights: Path, config: EngineConfig, frames: list[np.ndarray], seconds: float) -> dict:
    """The engine alone in this process: frames per second of synchronous ``infer`` and of its pipeline kept
    full, each for about ``seconds``."""
    with create_engine(weights, config) as engine:
        sync = time_engine(engine, frames, TimingSettings("synchronous", seconds=seconds, warmup=3, minimum=10))
        pipelined = time_engine(engine, frames, TimingSettings("pipelined", seconds=seconds, warmup=3, minimum=10))
        return {"backend": engine.backend_name, "sync_fps": sync.fps, "pipelined_fps": pipelined.fps}


def node_command(weights: Path, config: EngineConfig) -> list[str]:
    """``python -m seg_node`` with one camera and the parameters that give it ``config``."""
    command = [sys.executable, "-m", "seg_node", "--ros-args", "-p", "cameras:=[camera]", "-p", f"weights:={weights}",
               "-p", "diagnostics_period_s:=1.0", "-p", f"expected_fps:={0.0}"]
    defaults = parameters_from_engine_config(EngineConfig())
    for name, value in parameters_from_engine_config(config).items():
        if value != defaults[name]:
            command += ["-p", f"{name}:={value}"]
    return command


def measure_node(args: argparse.Namespace) -> dict:
    frames = camvid_frames(args.camvid, args.frames)
    weights = find_weights(args.weights)
    config = engine_config_from_args(args)
    baseline = measure_engine(weights, config, frames, args.seconds) if args.baseline else {}
    os.environ.setdefault(PROFILE_VARIABLE, str(profile_path()))  # for the node and this process alike
    node = subprocess.Popen(node_command(weights, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = Spinner("seg_node_measure")
    latencies: list[float] = []
    arrivals: list[float] = []
    diagnostics: list[DiagnosticArray] = []

    def on_label(message: Image) -> None:
        now = probe.node.get_clock().now().nanoseconds
        stamp = message.header.stamp
        arrivals.append(time.perf_counter())
        latencies.append((now - stamp.sec * 1_000_000_000 - stamp.nanosec) * 1e-9)

    try:
        # reliable: every label the node publishes is counted (the node's publishers are reliable)
        probe.node.create_subscription(Image, "/seg_node/camera/label", on_label, 100)
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        publisher = probe.node.create_publisher(Image, "/camera", 10)
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not (publisher.get_subscription_count() and probe.node.count_publishers("/seg_node/camera/label")):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"seg_node did not start: {node.stdout.read() if node.poll() is not None else ''}")
            time.sleep(0.1)
        time.sleep(1.0)  # endpoints matched both ways; the first frames warm the engine up
        messages = [image_message(frame, Header(frame_id="camera")) for frame in frames]

        def publish(index: int) -> None:
            message = messages[index % len(messages)]
            message.header.stamp = probe.node.get_clock().now().to_msg()
            publisher.publish(message)

        if args.rate > 0:
            publish_at(args.rate, args.warmup, publish)
        else:
            publish_in_flight(args.in_flight, args.warmup, publish, arrivals)
        latencies.clear()
        arrivals.clear()
        diagnostics.clear()
        if args.rate > 0:
            published = publish_at(args.rate, args.seconds, publish)
        else:
            published = publish_in_flight(args.in_flight, args.seconds, publish, arrivals)
        time.sleep(1.0)
    finally:
        probe.close()
        node.terminate()
        node.wait(10)
    received = len(arrivals)
    span = arrivals[-1] - arrivals[0] if received > 1 else float("nan")
    output_fps = (received - 1) / span if received > 1 else 0.0
    # the node's own view while frames were flowing
    camera = [{kv.key: kv.value for kv in s.values} for a in diagnostics for s in a.status
              if s.name.endswith("seg_node: camera camera")]
    camera = [values for values in camera if float(values["input_fps"]) > 0]
    engine = [s for a in diagnostics for s in a.status if s.name.endswith("seg_node: engine")]
    return {
        "mode": "node",
        "rate_hz": args.rate if args.rate > 0 else f"flat out, {args.in_flight} in flight",
        "seconds": args.seconds,
        "frame_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "published": published,
        "labels_received": received,
        "output_fps": output_fps,
        "latency_ms": percentiles_ms(latencies),
        "node_diagnostics_mid_run": camera[len(camera) // 2] if camera else {},  # one full window
        "engine": engine[-1].message if engine else "",
        "engine_alone": baseline,
        "node_vs_engine": output_fps / max(baseline["sync_fps"], baseline["pipelined_fps"]) if baseline else None,
    }


def receive_frames() -> None:
    """The subscriber process of ``dds``: count frames until a line on stdin says the sender is done."""
    spinner = Spinner("dds_receiver")
    arrivals: list[float] = []
    spinner.node.create_subscription(Image, "/dds_probe", lambda _m: arrivals.append(time.monotonic()),
                                     qos_profile_sensor_data)
    print("ready", flush=True)
    sys.stdin.readline()
    spinner.close()
    print(json.dumps({"received": len(arrivals)}), flush=True)


def send_frames(args: argparse.Namespace) -> None:
    """The publishing process of ``dds``."""
    sender = Spinner("dds_sender")
    try:
        publisher = sender.node.create_publisher(Image, "/dds_probe", qos_profile_sensor_data)
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not publisher.get_subscription_count():
            if time.monotonic() > deadline:
                raise RuntimeError("the receiving process never subscribed")
            time.sleep(0.1)
        time.sleep(1.0)
        width, height = args.size
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        build_start = time.perf_counter()
        message = image_message(pixels, Header(frame_id="dds_probe"))
        build_ms = (time.perf_counter() - build_start) * 1e3
        published = publish_at(args.rate, args.count / args.rate, lambda _index: publisher.publish(message))
    finally:
        sender.close()
    print(json.dumps({"published": published, "message_build_ms": build_ms, "mib": pixels.nbytes / 2**20}))


def measure_dds(args: argparse.Namespace, profile: bool) -> dict:
    """Sender and receiver each in a fresh process: Fast DDS reads its profile once per process."""
    environment = dict(os.environ)
    environment.pop(PROFILE_VARIABLE, None)
    if profile:
        environment[PROFILE_VARIABLE] = str(profile_path())
    module = [sys.executable, "-m", "seg_node.ros_tools.measure"]
    receiver = subprocess.Popen([*module, "dds-receive"], env=environment, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    if receiver.stdout.readline().strip() != "ready":
        raise RuntimeError("the receiving process did not start")
    width, height = args.size
    sent = subprocess.run(
        [*module, "dds-send", "--size", str(width), str(height), "--rate", str(args.rate), "--count", str(args.count)],
        env=environment, stdout=subprocess.PIPE, text=True, check=True,
    )
    sender = json.loads(sent.stdout.strip().splitlines()[-1])
    time.sleep(RECEIVE_GRACE_S)  # the last frames are still on their way
    received = json.loads(receiver.communicate("done\n", timeout=NODE_START_TIMEOUT_S)[0].strip().splitlines()[-1])
    return {
        "mode": "dds",
        "profile": environment.get(PROFILE_VARIABLE, "Fast DDS defaults"),
        "frame": f"{width}x{height} rgb8 ({sender['mib']:.1f} MiB)",
        "rate_hz": args.rate,
        "published": sender["published"],
        "received": received["received"],
        "message_build_ms": sender["message_build_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    node = modes.add_parser("node", help="end-to-end fps and latency of seg_node in another process")
    node.add_argument("--camvid", type=Path, default=Path(__file__).resolve().parents[6] / "shared/datasets/camvid")
    node.add_argument("--frames", type=int, default=20, help="distinct CamVid val frames to cycle through")
    node.add_argument("--rate", type=float, default=10.0,
                      help="frames offered per second; 0: flat out, a new frame as soon as one of --in-flight is done")
    node.add_argument("--in-flight", type=int, default=2, help="flat out: frames awaiting their label at a time")
    node.add_argument("--seconds", type=float, default=20.0)
    node.add_argument("--warmup", type=float, default=3.0, help="seconds published before measuring")
    node.add_argument("--weights", default="", help="weights file or shipped name (default: cgnet_camvid)")
    node.add_argument("--no-baseline", dest="baseline", action="store_false",
                      help="skip the engine-alone measurement before the node's")
    add_engine_arguments(node, NODE_ENGINE_OPTIONS)
    dds = modes.add_parser("dds", help="delivery of large best-effort images between two processes")
    dds.add_argument("--compare", action="store_true", help="also without the profile (Fast DDS defaults)")
    modes.add_parser("dds-receive", help="(used by dds) the receiving process")
    send = modes.add_parser("dds-send", help="(used by dds) the publishing process")
    for sub in (dds, send):
        sub.add_argument("--size", type=int, nargs=2, default=(2048, 1024), metavar=("W", "H"))
        sub.add_argument("--rate", type=float, default=30.0)
        sub.add_argument("--count", type=int, default=300)
    for sub in (node, dds):
        sub.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.mode == "dds-receive":
        receive_frames()
        return
    if args.mode == "dds-send":
        send_frames(args)
        return
    if args.mode == "node":
        results = [measure_node(args)]
    else:
        results = [measure_dds(args, profile=True)] + ([measure_dds(args, profile=False)] if args.compare else [])
    for result in results:
        print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
