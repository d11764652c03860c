"""Progress bars for long work (training, evaluation, replay, benchmarks, bag writing).

On a terminal tqdm redraws one line in place. Anywhere else (``ros2 launch``, CI, ``nohup ... > log``) every
redraw would be written out, a flood of near-identical lines, so there the bar is written at most once every
``LOG_INTERVAL_S`` seconds, and once at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
Item = TypeVar("Item")


def progress_bar(iterable: Iterable[Item] | None = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)``, calm when its stream is not a terminal."""
    stream = options.get("file") or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        options.setdefault("mininterval", LOG_INTERVAL_S)
        options.setdefault("ascii", True)  # no block characters in log files
    return tqdm(iterable, **options)
