"""PNG plots shared by the tools (matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write as PNG and close (pyplot keeps every open figure alive otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_class_iou(
    per_class_iou: dict[str, float | None], colors: Sequence[Sequence[int]], title: str, path: str | Path
) -> Path:
    """Horizontal bars of per-class IoU in the classes' own colours, with the mIoU as a line."""
    names = list(per_class_iou)
    values = [0.0 if v is None else 100 * v for v in per_class_iou.values()]
    present = [v for v in per_class_iou.values() if v is not None]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(names, values, color=[np.asarray(c) / 255 for c in colors], edgecolor="black")
    if present:
        miou = 100 * float(np.mean(present))
        ax.axvline(miou, color="red", linestyle="--", label=f"mIoU {miou:.1f}%")
        ax.legend(loc="lower right")
    for y, value in enumerate(values):
        ax.text(value + 0.5, y, f"{value:.1f}", va="center", fontsize=8)
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("IoU (%)")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_training_curves(history: Sequence[dict], path: str | Path, title: str, scored_on: str) -> Path:
    """Training loss and the mIoU on the validation list ``scored_on`` over epochs, on two axes.

    The axis names the list because a figure on the drive the weights trained on (CamVid's val) and one on an
    unseen drive (``drive_0006R0``) differ by 10-17 points.
    """
    epochs = [row["epoch"] for row in history]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [row["loss"] for row in history], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss", color="tab:blue")
    scored = [(row["epoch"], 100 * row["val_miou"]) for row in history if row["val_miou"] is not None]
    if scored:
        miou_axis = loss_axis.twinx()
        miou_axis.plot(*zip(*scored, strict=True), color="tab:red", marker="o", markersize=3,
                       label=f"mIoU on {scored_on}")
        miou_axis.set_ylabel(f"mIoU on {scored_on} (%)", color="tab:red")
        before = [(row["epoch"], 100 * row["val_miou_before_bn_recalibration"]) for row in history
                  if row.get("val_miou_before_bn_recalibration") is not None]
        if before:  # the trainer's bn_recalibration: what the last epoch's weights scored with their own statistics
            miou_axis.plot(*zip(*before, strict=True), linestyle="none", marker="o", markerfacecolor="none",
                           color="tab:red", label="before BatchNorm recalibration")
            miou_axis.legend(loc="lower right", fontsize=8)
    loss_axis.set_title(title)
    return save_figure(fig, path)


def save_image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: str | Path) -> Path:
    """RGB images in a grid, one row per example, ``titles`` over the columns."""
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(3.2 * len(titles), 2.5 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(image)
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(titles[c])
    return save_figure(fig, path, dpi=90)


def plot_latency(times_s: Sequence[float], latencies_s: Sequence[float], title: str, path: str | Path) -> Path:
    """Latency of each frame over (bag) time, beside its histogram with p50, p95 and p99 marked."""
    values = 1000 * np.asarray(latencies_s)
    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    over_time.plot(times_s, values, ".-", markersize=3, linewidth=0.8)
    over_time.set_xlabel("bag time (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_title(title)
    histogram.hist(values, bins=min(30, max(5, len(values) // 3)), orientation="horizontal", color="tab:blue")
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        histogram.axhline(np.percentile(values, q), linestyle="--", linewidth=0.8, color="red")
        histogram.text(histogram.get_xlim()[1], np.percentile(values, q), name, ha="right", va="bottom", fontsize=7)
    histogram.set_xlabel("frames")
    histogram.sharey(over_time)
    return save_figure(fig, path)
