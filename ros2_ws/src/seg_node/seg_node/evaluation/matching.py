"""Truth labels and predictions matched by header stamp, and everything counted while a bag is replayed.

A label and a prediction belong together when their header stamps are equal;
each waits ``MATCH_WINDOW_NS`` of bag time for its partner and is then
counted as unmatched, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..imaging import colorize
from ..metrics import ConfusionMatrix, LabelSizeError, score_frame
from ..weights import WeightsInfo

# Labels and predictions wait this long (bag time) for their partner stamp before counting as unmatched.
MATCH_WINDOW_NS = 5_000_000_000
MAX_NOTES = 50


@dataclass
class FrameTag:
    """An image of the bag: its position among the images read, header stamp and log (receive) time."""

    index: int
    stamp_ns: int
    log_time_ns: int


@dataclass
class ReplayState:
    """Everything counted while a bag is replayed; scores a frame once its label and prediction have met."""

    info: WeightsInfo
    lut: np.ndarray
    strip_indices: set[int]
    matrix: ConfusionMatrix
    images_in_bag: int = 0  # image messages on the topic, from the bag's index
    frames_read: int = 0  # of those, read so far
    decode_failures: int = 0  # not an image (bad JPEG, wrong encoding or size)
    engine_failures: int = 0  # decoded, but the engine raised
    processed: int = 0  # labelled by the engine
    pipeline_dropped: int = 0  # submitted but never labelled: replaced by a newer frame, or unanswered
    labels_read: int = 0  # ground-truth messages read
    label_failures: int = 0  # unreadable ground truth
    label_size_mismatches: int = 0  # ground truth of another size than its image
    scored: int = 0  # prediction and ground truth met by stamp and entered the confusion matrix
    frames_without_label: int = 0  # labelled by the engine, no ground truth with that stamp came
    labels_without_image: int = 0  # ground truth whose stamp is on no image read from the bag
    latencies_s: list[float] = field(default_factory=list)
    network_s: list[float] = field(default_factory=list)
    result_times_s: list[float] = field(default_factory=list)  # bag time of each processed frame
    arrivals_s: list[float] = field(default_factory=list)  # bag time of each submitted frame
    errors: list[str] = field(default_factory=list)
    image_stamps: set[int] = field(default_factory=set)
    labels: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # stamp -> (log time, truth)
    predictions: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)  # stamp -> (log time, labels)
    strip: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # stamp -> images of the strip

    def note(self, message: str) -> None:
        if len(self.errors) < MAX_NOTES:
            self.errors.append(message)

    def add_label(self, stamp: int, log_time: int, truth: np.ndarray) -> None:
        self.labels_read += 1
        if stamp in self.predictions:
            self._score(stamp, truth, self.predictions.pop(stamp)[1])
        else:
            self.labels[stamp] = (log_time, truth)

    def add_prediction(self, stamp: int, log_time: int, prediction: np.ndarray) -> None:
        if stamp in self.labels:
            self._score(stamp, self.labels.pop(stamp)[1], prediction)
        else:
            self.predictions[stamp] = (log_time, prediction)

    def _score(self, stamp: int, truth: np.ndarray, prediction: np.ndarray) -> None:
        try:
            score_frame(self.matrix, truth, prediction)
            self.scored += 1
        except LabelSizeError as error:
            self.label_size_mismatches += 1
            self.note(f"frame stamped {stamp} ns not scored: {error}")
            return
        if stamp in self.strip:
            self.strip[stamp]["truth"] = colorize(truth, self.lut)

    def expire(self, now_log_time: int | None) -> None:
        """Count labels and predictions whose partner did not come within the window (all when ``None``)."""
        for pending in (self.labels, self.predictions):
            expired = [s for s, (t, _) in pending.items() if now_log_time is None or now_log_time - t > MATCH_WINDOW_NS]
            for stamp in expired:
                del pending[stamp]
                if pending is self.labels:
                    # a label of a frame that was dropped or failed is not a label without an image
                    self.labels_without_image += stamp not in self.image_stamps
                else:
                    self.frames_without_label += 1
