"""The replay's report: report.json's contents, report.md and its PNG plots.

``ReplayRun`` says what was replayed and how (what used to be fourteen
arguments); ``build_report`` combines it with the counted ``ReplayState``
into the JSON-ready dict, ``write_report`` writes report.md and the plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import percent, percentiles_ms, simulate_drops
from ..plots import plot_class_iou, plot_latency, save_image_grid
from ..weights import file_sha256
from .matching import ReplayState
from .sources import RunnerInfo, output_topics


@dataclass
class ReplayRun:
    """What was replayed, how, and what reading the bag reported."""

    bag: Path
    storage: str
    image_topic: str
    image_type: str
    runner: RunnerInfo
    label_topic: str | None = None
    prediction_topic: str | None = None  # set: the node's recorded predictions were scored, nothing was run
    weights: Path | None = None
    realtime: bool = False
    wall_s: float = 0.0
    read_error: str | None = None  # the bag broke off: the report covers what was read
    warnings: list[str] = field(default_factory=list)
    damaged_messages: int = 0
    bag_damage: dict[str, Any] = field(default_factory=dict)  # BagReader.damage(): truncation, damaged chunks

    @property
    def mode(self) -> str:
        if self.prediction_topic is not None:
            return "recorded predictions"
        return "realtime" if self.realtime else "as fast as possible"


def _dropped(run: ReplayRun, state: ReplayState) -> tuple[int | None, str]:
    if run.prediction_topic is not None:
        return state.pipeline_dropped, "measured: recorded images without a recorded prediction"
    if run.realtime:
        return state.pipeline_dropped, "measured (--realtime)"
    # Every frame was processed; what a live replay would drop follows from the measured per-frame times.
    arrivals = state.arrivals_s
    dropped = simulate_drops(arrivals, state.latencies_s) if len(state.latencies_s) == len(arrivals) else None
    return dropped, "simulated from the measured latencies at the recorded rate"


def failures(run: ReplayRun, state: ReplayState, accuracy: dict[str, Any] | None) -> list[str]:
    """Why the replay did not fully do its job, one line each; empty when every image and label read was used.

    Any of these makes seg-replay exit with status 1: damaged input is refused and counted, never scored as if
    it were fine, and a replay that segmented or scored nothing says so.
    """
    reasons = []
    if run.read_error:
        reasons.append(f"the bag broke off: {run.read_error}")
    if run.warnings:
        reasons.append(f"the bag is damaged or incomplete: {run.warnings[0]}"
                       + (f" (and {len(run.warnings) - 1} more warnings)" if len(run.warnings) > 1 else ""))
    if state.frames_read == 0:
        reasons.append(f"no image was read from {run.image_topic}")
    elif state.processed == 0:
        reasons.append(f"no image could be segmented: {state.decode_failures} of {state.frames_read} unreadable, "
                       f"{state.engine_failures} failed in the engine")
    else:
        if state.decode_failures:
            reasons.append(f"{state.decode_failures} of {state.frames_read} images refused as damaged or "
                           "undecodable (not scored)")
        if state.engine_failures:
            reasons.append(f"{state.engine_failures} images failed in the engine")
    if run.label_topic:
        if state.label_failures:
            reasons.append(f"{state.label_failures} of {state.labels_read + state.label_failures} labels refused "
                           "(damaged, or not a mono8 Image or PNG)")
        if state.label_size_mismatches:
            reasons.append(f"{state.label_size_mismatches} labels of another size than their image (not scored)")
        if state.scored == 0:
            reasons.append(f"no label could be scored ({state.labels_read} read, {state.label_failures} refused, "
                           f"{state.label_size_mismatches} of the wrong size, {state.labels_without_image} "
                           "without an image)")
        elif accuracy is not None and accuracy["miou"] is None:
            reasons.append(f"the {state.scored} scored labels hold no class of the weights (every pixel is ignored "
                           "or out of range): no accuracy")
    return reasons


def build_report(run: ReplayRun, state: ReplayState) -> dict[str, Any]:
    """report.json's contents (without ``outputs``, which ``write_report`` returns)."""
    arrivals = state.arrivals_s
    span = arrivals[-1] - arrivals[0] if arrivals else 0.0
    recorded_fps = (len(arrivals) - 1) / span if span > 0 else None
    dropped, source = _dropped(run, state)
    accuracy = None
    if run.label_topic:
        accuracy = state.matrix.report([c.name for c in state.info.classes]) if state.scored else None
    network_mean = float(np.mean(state.network_s)) if state.network_s else None
    weights = run.weights
    runner = run.runner
    return {
        "bag": str(run.bag),
        "storage": run.storage,
        "image_topic": run.image_topic,
        "image_type": run.image_type,
        "label_topic": run.label_topic,
        "prediction_topic": run.prediction_topic,
        "mode": run.mode,
        "model": state.info.describe(),
        "weights": None if weights is None else str(weights),
        "weights_sha256": file_sha256(weights) if weights is not None and Path(weights).is_file() else None,
        "backend": runner.backend,
        "device": runner.device,
        "precision": runner.precision,
        "network_size": None if runner.network_size is None else list(runner.network_size),
        "frames": {
            "in_bag": state.images_in_bag,
            "read": state.frames_read,
            "processed": state.processed,
            "unreadable": state.decode_failures,
            "damaged_messages": run.damaged_messages,
            "engine_failures": state.engine_failures,
            "dropped_realtime": dropped,
            "dropped_realtime_source": source,
            "labelled": state.scored,
            "without_label": state.frames_without_label if run.label_topic else state.processed,
            "labels_read": state.labels_read,
            "labels_unreadable": state.label_failures,
            "labels_wrong_size": state.label_size_mismatches,
            "labels_without_image": state.labels_without_image,
        },
        "fps": {
            "engine": 1.0 / network_mean if network_mean else None,
            "end_to_end": state.processed / run.wall_s if run.wall_s > 0 and state.processed else None,
            "recorded": recorded_fps,
        },
        "latency_ms": percentiles_ms(state.latencies_s),
        "network_ms": percentiles_ms(state.network_s),
        "wall_s": run.wall_s,
        "accuracy": accuracy,
        "failures": failures(run, state, accuracy),
        "bag_damage": run.bag_damage,
        "read_error": run.read_error,
        "warnings": run.warnings[:20],
        "errors": state.errors,
    }


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure of the report, ``-`` where there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def write_report(report: dict[str, Any], state: ReplayState, out: Path, *, has_bag: bool) -> dict[str, str]:
    """report.md and its PNG plots; returns the files written (report.json is written by the caller)."""
    outputs = {"report_json": "report.json", "report_md": "report.md"}
    if has_bag:
        outputs["segmented_bag"] = "segmented"
    if state.latencies_s:
        plot_latency(
            state.result_times_s, state.latencies_s, f"{report['model']} on {report['backend']}", out / "latency.png"
        )
        outputs["latency_plot"] = "latency.png"
    accuracy = report["accuracy"]
    if accuracy is not None:
        plot_class_iou(
            accuracy["per_class_iou"],
            state.info.palette,
            f"per-class IoU, {accuracy['images']} frames",
            out / "class_iou.png",
        )
        outputs["class_iou_plot"] = "class_iou.png"
    if state.strip:
        with_truth = all("truth" in s for s in state.strip.values())
        titles = ["input", "truth", "prediction overlay"] if with_truth else ["input", "prediction overlay"]
        keys = ["input", "truth", "overlay"] if with_truth else ["input", "overlay"]
        rows = [[sample[k] for k in keys] for _, sample in sorted(state.strip.items())]
        save_image_grid(rows, titles, out / "overlays.png")
        outputs["overlay_strip"] = "overlays.png"
    (out / "report.md").write_text(render_markdown(report, outputs))
    return outputs


def render_markdown(report: dict[str, Any], outputs: dict[str, str]) -> str:
    frames, fps, latency, network = report["frames"], report["fps"], report["latency_ms"], report["network_ms"]
    if report["network_size"] is None:
        runner = f"predictions recorded from the node on `{report['prediction_topic']}`"
    else:
        height, width = report["network_size"]
        runner = (
            f"{report['model']} on **{report['backend']}** ({report['device']}, {report['precision']}), "
            f"network input {height}x{width}, replayed {report['mode']}"
        )
    lines = [
        f"# Replay of `{report['bag']}`",
        "",
        f"{runner}; images from `{report['image_topic']}` ({report['image_type']}).",
        "",
    ]
    if report["read_error"]:
        lines += [f"**The bag broke off:** {report['read_error']}. The figures cover what was read.", ""]
    elif report["warnings"]:
        lines += ["**The bag is damaged**; the figures cover what could be read (see Problems).", ""]
    lines += [
        "## Speed",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| frames in bag / read / processed | {frames['in_bag']} / {frames['read']} / {frames['processed']} |",
        f"| engine fps (1 / mean network time) | {fmt(fps['engine'])} |",
        f"| end-to-end fps (decode, engine, outputs) | {fmt(fps['end_to_end'])} |",
        f"| recorded rate (fps) | {fmt(fps['recorded'])} |",
        f"| latency p50 / p95 / p99 (ms) | {fmt(latency['p50'])} / {fmt(latency['p95'])} / {fmt(latency['p99'])} |",
        f"| network time p50 (ms) | {fmt(network['p50'])} |",
        f"| frames dropped in real time | {frames['dropped_realtime']} ({frames['dropped_realtime_source']}) |",
        f"| unreadable / failed frames | {frames['unreadable']} / {frames['engine_failures']} |",
        "",
    ]
    if "latency_plot" in outputs:
        lines += ["![latency](latency.png)", ""]
    lines += _accuracy_section(report)
    if "overlay_strip" in outputs:
        lines += ["## Frames", "", "![input, truth, prediction](overlays.png)", ""]
    if "segmented_bag" in outputs:
        lines += [
            "`segmented/` holds the input images, the labels and the outputs "
            f"{', '.join(f'`{t}`' for t in output_topics(report['image_topic']).values())} at the original "
            "stamps: open it in Foxglove, or `ros2 bag play segmented` with RViz 2.",
            "",
        ]
    if report["failures"]:
        lines += ["## Failures (exit status 1)", ""] + [f"- {f}" for f in report["failures"]] + [""]
    problems = report["errors"] + report["warnings"]
    if problems:
        lines += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def _accuracy_section(report: dict[str, Any]) -> list[str]:
    if not report["label_topic"]:
        return []
    frames, accuracy = report["frames"], report["accuracy"]
    lines = [
        "## Accuracy",
        "",
        f"Labels from `{report['label_topic']}`, matched by header stamp: {frames['labelled']} frames scored, "
        f"{frames['without_label']} without a label, {frames['labels_without_image']} labels without an "
        f"image, {frames['labels_wrong_size']} of the wrong size.",
        "",
    ]
    if accuracy is None:
        return lines + ["No frame could be scored.", ""]
    lines += ["| class | IoU % |", "| --- | --- |"]
    lines += [f"| {name} | {percent(v, 1)} |" for name, v in accuracy["per_class_iou"].items()]
    return lines + [
        f"| **mIoU** | **{percent(accuracy['miou'])}** |",
        f"| pixel accuracy | {percent(accuracy['pixel_acc'])} |",
        "",
        "![per-class IoU](class_iou.png)",
        "",
    ]
