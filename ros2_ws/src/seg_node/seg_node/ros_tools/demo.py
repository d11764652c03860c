"""``seg-demo`` (``make demo``): the real system over DDS on the bundled recording, then the figures.

Three processes, as on a car: a player publishes the recording's camera
images at their recorded rate (``seg_node.cli.bag_player``), the node
segments them (``python -m seg_node`` with the parameters the launch file
passes) and a recorder stores the node's label and overlay topics and
``/diagnostics`` (``seg_node.ros_tools.recorder``), printing the diagnostics as
they come. At the end the recorded labels are scored against the recording's
truth (mIoU), and ``out/demo/`` receives overlay PNGs, ``demo.mp4`` (input |
overlay), report.json and report.md with plots.

    seg-demo                                   # CGNet on the bundled recording
    seg-demo --model contextnet --backend onnxruntime
    seg-demo --bag my_drive --image-topic /front/image_raw --label-topic /front/labels
    seg-demo --camera-topic /camera/image_raw --duration 30   # a live camera instead of the player

``run_demo(DemoOptions(...))`` is the library call; ``seg_node.cli.demo`` is the console script.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import SegNodeError
from ..evaluation.sources import output_topics
from ..imaging import colorize, palette_lut, to_rgb
from ..metrics import ConfusionMatrix, LabelSizeError, format_iou_table, percentiles_ms, score_frame
from ..plots import plot_class_iou, plot_latency, save_image_grid
from ..recording.rosbag import (
    COMPRESSED_IMAGE,
    IMAGE,
    IMAGE_TYPES,
    BagReader,
    decode_image,
    decode_label,
    stamp_ns,
)
from ..weights import WeightsInfo, find_weights, read_info, training_note
from .processes import PACKAGE_ROOT, engine_parameters, node_command, ros_environment

DEFAULT_BAG = PACKAGE_ROOT.parents[2] / "demo" / "camvid_val_0016E5"
DEFAULT_IMAGE_TOPIC = "/camera/image_raw/compressed"
DEFAULT_LABEL_TOPIC = "/camera/labels"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
STRIP_FRAMES = 4


class DemoError(SegNodeError, RuntimeError):
    """A process of the demo failed or the outputs never came; the message says which and why."""


@dataclass
class DemoOptions:
    """What ``seg-demo`` is asked (its flags, same names); the engine fields become the node's parameters."""

    model: str = "cgnet"
    weights: Path | None = None  # a weights file instead of the shipped <model>_camvid
    bag: Path = DEFAULT_BAG
    image_topic: str = DEFAULT_IMAGE_TOPIC
    label_topic: str = DEFAULT_LABEL_TOPIC  # '' for none
    first: int = 0
    count: int | None = None
    camera_topic: str | None = None  # a live camera instead of the player
    duration: float = 30.0
    expected_fps: float = 10.0
    idle: float = 3.0
    startup_timeout: float = 120.0
    domain_id: int = field(default_factory=lambda: random.randint(100, 200))
    out: Path = Path("out/demo")
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig fields for the node (backend, ...)


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def recorder_command(options: DemoOptions, camera_topic: str, recorded: Path, ready: Path) -> list[str]:
    """The recorder of the node's label and overlay and /diagnostics; it touches ``ready`` once it has
    discovered the node's outputs (so the player starts only then and none is missed)."""
    topics = output_topics(camera_topic)
    command = [sys.executable, "-m", "seg_node.ros_tools.recorder", str(recorded), "--print-diagnostics",
               "--topic", f"{topics['label']}:{IMAGE}", "--topic", f"{topics['overlay']}:{IMAGE}",
               "--topic", f"/diagnostics:{DIAGNOSTICS_TYPE}"]
    if options.camera_topic:  # no bag to take the inputs from: record them for the video
        compressed = options.camera_topic.endswith("/compressed")
        command += ["--topic", f"{options.camera_topic}:{COMPRESSED_IMAGE if compressed else IMAGE}"]
    else:
        command += ["--stop-after-idle", str(options.idle)]
    return command + ["--ready-file", str(ready), "--ready-topic", topics["label"], "--ready-topic", topics["overlay"]]


def player_command(options: DemoOptions, out: Path) -> list[str]:
    """The player of the recording's camera images at their recorded rate, writing the stamps it sent."""
    command = [sys.executable, "-m", "seg_node.cli.bag_player", str(options.bag), "--topic",
               options.image_topic, "--first", str(options.first), "--stamps", str(out / "stamps.json")]
    return command + (["--count", str(options.count)] if options.count is not None else [])


def wait_until_ready(ready: Path, node: subprocess.Popen, recorder: subprocess.Popen, timeout: float) -> None:
    """Until the recorder has discovered the node's outputs; DemoError when either exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if node.poll() is not None or recorder.poll() is not None:
            raise DemoError("the node or the recorder exited while starting; its message is above")
        if time.monotonic() > deadline:
            raise DemoError(f"the node's outputs were not discovered within {timeout:.0f} s")
        time.sleep(0.1)


def play_and_wait(options: DemoOptions, out: Path, env: dict[str, str], node: subprocess.Popen,
                  recorder: subprocess.Popen, processes: list[subprocess.Popen]) -> None:
    """Play the recording (or watch the live camera for ``duration``) until the recorder has all outputs."""
    if options.camera_topic:
        end = time.monotonic() + options.duration
        while time.monotonic() < end and node.poll() is None:
            time.sleep(0.2)
        return
    player = subprocess.Popen(player_command(options, out), env=env)
    processes.append(player)
    while player.poll() is None and node.poll() is None:
        time.sleep(0.2)
    if player.returncode not in (None, 0):
        raise DemoError(f"the player failed (exit {player.returncode}); its message is above")
    try:
        recorder.wait(timeout=options.idle + 60)
    except subprocess.TimeoutExpired as error:
        raise DemoError("the node's outputs stopped coming; see its log above") from error


def run_processes(options: DemoOptions, out: Path, weights: Path) -> Path:
    """Start recorder, node and player (or wait ``--duration`` on a camera); returns the recorded bag."""
    camera_topic = options.camera_topic or options.image_topic
    recorded = out / "recorded"
    ready = out / "recorder_ready"
    ready.unlink(missing_ok=True)
    env = ros_environment(options.domain_id)
    overrides = {"weights": str(weights), **engine_parameters(options.engine), "cameras": [camera_topic],
                 "expected_fps": options.expected_fps}
    processes: list[subprocess.Popen] = []
    try:
        recorder = subprocess.Popen(recorder_command(options, camera_topic, recorded, ready), env=env)
        processes.append(recorder)
        node = subprocess.Popen(node_command(overrides, out / "node_params.yaml"), env=env)
        processes.append(node)
        wait_until_ready(ready, node, recorder, options.startup_timeout)
        play_and_wait(options, out, env, node, recorder, processes)
        if node.poll() is not None:
            raise DemoError(f"the node exited early (exit {node.returncode}); its message is above")
    finally:
        for process in reversed(processes):
            _stop(process)
    if not (recorded / "metadata.yaml").is_file():
        raise DemoError(f"the recorder left no bag in {recorded}")
    return recorded


def _read_by_stamp(bag: Path, topic: str, decode: Any) -> dict[int, tuple[int, Any]]:
    """stamp -> (log time, decoded message) of ``topic``."""
    found = {}
    with BagReader(bag) as reader:
        if topic not in reader.topics:
            return found
        for message in reader.messages([topic]):
            found[stamp_ns(message.message)] = (message.log_time_ns, decode(message.message, message.msgtype))
    return found


def diagnostics_summary(bag: Path) -> dict[str, dict[str, str]]:
    """Per diagnostics status: its last values, with a camera's fps and latency as medians of the windows that
    had outputs (the last windows, after the player stopped, have none)."""
    statuses: dict[str, dict[str, str]] = {}
    windows: dict[str, dict[str, list[float]]] = {}
    with BagReader(bag) as reader:
        for message in reader.messages(["/diagnostics"]):
            for status in message.message.status:
                values = {v.key: v.value for v in status.values}
                statuses[status.name] = {"message": status.message, **values}
                for key in ("output_fps", "latency_p50_ms", "latency_p95_ms"):
                    try:
                        value = float(values[key])
                    except (KeyError, ValueError):  # "n/a" in a window without outputs
                        continue
                    if value > 0:
                        windows.setdefault(status.name, {}).setdefault(key, []).append(value)
    for name, series in windows.items():
        statuses[name].update({key: f"{np.median(values):.1f}" for key, values in series.items()})
    return statuses


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """An MP4 (OpenCV's mp4v) of RGB frames; a GIF when this OpenCV cannot write MP4."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if writer.isOpened():
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return path
    from PIL import Image as PILImage

    gif = path.with_suffix(".gif")
    images = [PILImage.fromarray(f) for f in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return gif


@dataclass
class Recording:
    """What a run left, by stamp: the node's labels and overlays, the inputs, the truth, the player's stamps."""

    outputs: dict[int, tuple[int, Any]]
    overlays: dict[int, tuple[int, Any]]
    inputs: dict[int, tuple[int, Any]]
    truth: dict[int, tuple[int, Any]]
    published: list[dict[str, int]]
    origin: dict[int, tuple[int, int]]  # the player restamps: published stamp -> (original stamp, wall time sent)


@dataclass
class FrameResults:
    """The frames gone through: scores, latencies over DDS and the pictures for the video and the strip."""

    matrix: ConfusionMatrix
    latencies: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    video: list[np.ndarray] = field(default_factory=list)
    strip_candidates: list[list[np.ndarray]] = field(default_factory=list)


def read_recording(options: DemoOptions, out: Path, recorded: Path) -> Recording:
    camera_topic = options.camera_topic or options.image_topic
    topics = output_topics(camera_topic)
    stamps_file = out / "stamps.json"
    published = json.loads(stamps_file.read_text())["frames"] if stamps_file.is_file() else []
    input_bag = recorded if options.camera_topic else options.bag
    truth = {}
    if not options.camera_topic and options.label_topic:
        truth = _read_by_stamp(options.bag, options.label_topic, decode_label)
    return Recording(
        outputs=_read_by_stamp(recorded, topics["label"], decode_label),
        overlays=_read_by_stamp(recorded, topics["overlay"], lambda m, t: to_rgb(*decode_image(m, t)).copy()),
        inputs=_read_by_stamp(input_bag, camera_topic, lambda m, t: to_rgb(*decode_image(m, t)).copy()),
        truth=truth,
        published=published,
        origin={f["stamp_ns"]: (f["original_stamp_ns"], f["published_ns"]) for f in published},
    )


def go_through_frames(recording: Recording, info: WeightsInfo, overlay_dir: Path) -> FrameResults:
    """Score each label against its truth, time it, write its overlay PNG and pair it with its input."""
    results = FrameResults(ConfusionMatrix(info.num_classes, info.ignore_index))
    lut = palette_lut(info.palette)
    overlay_dir.mkdir(exist_ok=True)
    first_time = None
    for index, stamp in enumerate(sorted(recording.outputs)):
        received, prediction = recording.outputs[stamp]
        original, sent = recording.origin.get(stamp, (stamp, stamp))
        first_time = sent if first_time is None else first_time
        results.latencies.append((received - sent) / 1e9)
        results.times.append((sent - first_time) / 1e9)
        truth = recording.truth.get(original, (None, None))[1]
        if truth is not None:
            try:
                score_frame(results.matrix, truth, prediction)
            except LabelSizeError as error:
                results.errors.append(f"frame stamped {original}: {error}")
        overlay = recording.overlays.get(stamp, (None, None))[1]
        if overlay is None:
            continue
        cv2.imwrite(str(overlay_dir / f"overlay_{index:04d}.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        frame = recording.inputs.get(original, (None, None))[1]
        if frame is not None:
            if frame.shape != overlay.shape:
                overlay = cv2.resize(overlay, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
            results.video.append(np.hstack([frame, overlay]))
            truth_rgb = colorize(truth, lut) if truth is not None else np.zeros_like(frame)
            results.strip_candidates.append([frame, truth_rgb, overlay])
    return results


def write_figures(results: FrameResults, recording: Recording, info: WeightsInfo, out: Path,
                  accuracy: dict[str, Any] | None) -> dict[str, str]:
    """The video, the strip of frames, the latency and per-class IoU plots; report.json's ``files``."""
    files = {"overlays": "overlays/", "recorded_bag": "recorded/"}
    if results.video:
        sent = sorted(s for s, _ in recording.origin.values())
        rate = 1e9 / np.median(np.diff(sent)) if len(sent) > 1 else 10.0
        files["video"] = write_video(results.video, out / "demo.mp4", float(rate)).name
    if results.strip_candidates:
        candidates = results.strip_candidates
        picks = np.linspace(0, len(candidates) - 1, min(STRIP_FRAMES, len(candidates))).astype(int)
        save_image_grid([candidates[i] for i in picks], ["input", "truth", "overlay"], out / "strip.png")
        files["strip"] = "strip.png"
    if results.latencies:
        plot_latency(results.times, results.latencies, "camera -> node -> recorder over DDS", out / "latency.png")
        files["latency_plot"] = "latency.png"
    if accuracy is not None:
        title = f"per-class IoU, {results.matrix.images} frames"
        plot_class_iou(accuracy["per_class_iou"], info.palette, title, out / "class_iou.png")
        files["class_iou_plot"] = "class_iou.png"
    return files


def analyse(options: DemoOptions, out: Path, recorded: Path, weights: Path, info: WeightsInfo) -> dict[str, Any]:
    """Score the recorded outputs against the bag's labels; overlay PNGs, video, plots and the report."""
    recording = read_recording(options, out, recorded)
    results = go_through_frames(recording, info, out / "overlays")
    matrix, published = results.matrix, recording.published
    accuracy = matrix.report([c.name for c in info.classes]) if matrix.images else None
    # the bundled recording holds CamVid val frames: weights trained on val have seen them
    bundled = not options.camera_topic and options.bag.resolve() == DEFAULT_BAG.resolve()
    report = {
        "bag": None if options.camera_topic else str(options.bag),
        "camera_topic": options.camera_topic or options.image_topic,
        "weights": str(weights),
        "model": info.describe(),
        "frames": {
            "published": len(published) if published else None,
            "segmented": len(recording.outputs),
            "lost": len(published) - len(recording.outputs) if published else None,
            "scored": matrix.images,
        },
        "latency_over_dds_ms": percentiles_ms(results.latencies),
        "diagnostics": diagnostics_summary(recorded),
        "accuracy": accuracy,
        "weights_training": training_note(info, "val" if bundled else None),
        "errors": results.errors,
        "files": write_figures(results, recording, info, out, accuracy),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def render_markdown(report: dict[str, Any]) -> str:
    frames = {key: "-" if value is None else value for key, value in report["frames"].items()}
    latency = report["latency_over_dds_ms"]
    engine = next((v for k, v in report["diagnostics"].items() if k.endswith("engine")), {})
    camera = next((v for k, v in report["diagnostics"].items() if "camera" in k), {})
    lines = [
        "# seg_node demo",
        "",
        f"{report['model']} on **{engine.get('backend', '?')}** ({engine.get('device', '?')}, "
        f"{engine.get('precision', '?')}, network input {engine.get('input_resolution', '?')}); camera topic "
        f"`{report['camera_topic']}`" + (f" played from `{report['bag']}`." if report["bag"] else "."),
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| frames published / segmented / not segmented | {frames['published']} / {frames['segmented']} / "
        f"{frames['lost']} |",
        f"| node's output fps (median of its diagnostics windows) | {camera.get('output_fps', '-')} |",
        f"| node's latency p50 / p95 (ms, median of windows) | {camera.get('latency_p50_ms', '-')} / "
        f"{camera.get('latency_p95_ms', '-')} |",
        f"| node's frames received / published / dropped | {camera.get('frames_received', '-')} / "
        f"{camera.get('frames_published', '-')} / {camera.get('frames_dropped', '-')} |",
        "| player -> node -> recorder latency p50 / p95 / p99 (ms) | "
        + " / ".join("-" if latency[k] is None else f"{latency[k]:.0f}" for k in ("p50", "p95", "p99"))
        + " |",
        "",
    ]
    if "latency_plot" in report["files"]:
        lines += ["![latency](latency.png)", ""]
    accuracy = report["accuracy"]
    if accuracy is not None:
        lines += [
            f"## Accuracy on the {frames['scored']} segmented frames",
            "",
            f"{report['weights_training']['note'].capitalize()}.",
            "",
            "```",
            format_iou_table(accuracy),
            "```",
            "",
            "![per-class IoU](class_iou.png)",
            "",
        ]
    if "strip" in report["files"]:
        lines += ["![input, truth, overlay](strip.png)", ""]
    if "video" in report["files"]:
        lines += [f"Video of input | overlay: `{report['files']['video']}`; every overlay: `overlays/`.", ""]
    if report["errors"]:
        lines += ["## Problems", ""] + [f"- {e}" for e in report["errors"]] + [""]
    return "\n".join(lines)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Check the inputs, run player, node and recorder, score and write ``options.out``; returns report.json's dict.

    Raises BagError, WeightsError (bad input: a usage error where a named topic is missing) or DemoError.
    """
    weights = Path(options.weights) if options.weights else find_weights(f"{options.model}_camvid")
    info = read_info(weights)
    if not options.camera_topic:
        with BagReader(options.bag) as reader:
            reader.require_topic(options.image_topic, IMAGE_TYPES)
            if options.label_topic:
                reader.require_topic(options.label_topic, IMAGE_TYPES)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("recorded", "overlays"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    (out / "stamps.json").unlink(missing_ok=True)
    print(f"seg-demo: {info.describe()} from {weights}, ROS_DOMAIN_ID={options.domain_id}, output in {out}/",
          flush=True)
    recorded = run_processes(options, out, weights)
    return analyse(options, out, recorded, weights, info)
