"""The root of the package's exceptions: an error a user can act on, with a message that says how.

Every layer's errors (WeightsError, EngineError, DatasetError, BagError, TrainingError, ...) derive
from ``SegNodeError``, so the console scripts print them as one line instead of a traceback.
"""

from __future__ import annotations


class SegNodeError(Exception):
    """Bad input or an unusable set-up; the message names what to fix."""


class UsageError(SegNodeError):
    """Options that do not fit together; the console scripts exit with status 2 (as argparse does)."""
