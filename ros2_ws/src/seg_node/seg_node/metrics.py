"""Segmentation accuracy and speed figures, one copy for every tool.

A confusion matrix gives per-class IoU, mIoU and pixel accuracy; ``score_frame``
adds one frame to it (seg-eval, seg-replay and seg-demo score with it);
``percentiles_ms`` summarises latencies and ``simulate_drops`` counts what a
newest-wins pipeline would drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import SegNodeError


@dataclass
class ConfusionMatrix:
    """Accumulates truth x prediction counts; truth pixels equal to ``ignore_index`` (or >= classes) are skipped."""

    num_classes: int
    ignore_index: int | None = None
    counts: np.ndarray = field(init=False)
    images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        if truth.shape != prediction.shape:
            raise ValueError(f"label {truth.shape} and prediction {prediction.shape} differ in size")
        truth = truth.reshape(-1).astype(np.int64)
        prediction = prediction.reshape(-1).astype(np.int64)
        valid = (truth >= 0) & (truth < self.num_classes)
        if self.ignore_index is not None:
            valid &= truth != self.ignore_index
        index = truth[valid] * self.num_classes + prediction[valid]
        self.counts += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)
        self.images += 1

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        true_positive = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(np.diag(self.counts).sum() / total) if total else float("nan")

    def report(self, class_names: list[str]) -> dict[str, object]:
        """``{"miou", "per_class_iou": {name: iou}, "pixel_acc", "images", "pixels"}``, JSON-ready: absent
        classes, and mIoU and pixel accuracy when no pixel was scored, are None (never NaN)."""
        return {
            "miou": _finite_or_none(self.miou()),
            "per_class_iou": {
                name: (None if np.isnan(value) else float(value))
                for name, value in zip(class_names, self.iou(), strict=True)
            },
            "pixel_acc": _finite_or_none(self.pixel_accuracy()),
            "images": self.images,
            "pixels": int(self.counts.sum()),  # scored pixels: those whose truth is a class, not ignored
        }


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` decimals, ``-`` for None (nothing was scored)."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def format_iou_table(report: dict[str, object]) -> str:
    """A plain-text table of a ``ConfusionMatrix.report``."""
    lines = [f"{'class':<16} {'IoU %':>7}"]
    for name, value in report["per_class_iou"].items():
        lines.append(f"{name:<16} {percent(value, 1):>7}")
    lines.append(f"{'mIoU':<16} {percent(report['miou']):>7}")
    lines.append(f"{'pixel accuracy':<16} {percent(report['pixel_acc']):>7}")
    return "\n".join(lines)


class LabelSizeError(SegNodeError, ValueError):
    """A truth label whose size differs from the image it belongs to."""


def score_frame(matrix: ConfusionMatrix, truth: np.ndarray, prediction: np.ndarray) -> None:
    """Add one frame to ``matrix``; raises LabelSizeError when the label and the prediction differ in size."""
    if truth.shape != prediction.shape:
        raise LabelSizeError(
            f"label is {truth.shape[1]}x{truth.shape[0]} but the prediction is "
            f"{prediction.shape[1]}x{prediction.shape[0]}; labels must have the image's size"
        )
    matrix.update(truth, prediction)


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50, p95, p99, mean and max of durations in seconds, in milliseconds (all None without samples)."""
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    values = 1000 * np.asarray(seconds)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def simulate_drops(arrivals_s: list[float], service_s: list[float]) -> int:
    """Frames a newest-wins, one-slot pipeline drops when frames arrive at ``arrivals_s`` and take ``service_s``."""
    busy_until = float("-inf")
    waiting: int | None = None
    dropped = 0
    for index, arrival in enumerate(arrivals_s):
        if waiting is not None and busy_until <= arrival:
            busy_until += service_s[waiting]
            waiting = None
        if waiting is None and busy_until <= arrival:
            busy_until = arrival + service_s[index]
        else:
            dropped += waiting is not None
            waiting = index
    return dropped
