"""The package's share folder (launch/, config/, weights/): where it is installed, or the checkout's.

The one place that knows where share files live: the ROS share folder (``colcon build``, found through the
ament index), the environment's ``share/seg_node`` (``pip install``), and ``ros2_ws/src/seg_node`` in a
checkout or an editable install, in that order.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import SegNodeError

PACKAGE = "seg_node"
CHECKOUT = Path(__file__).resolve().parent.parent  # ros2_ws/src/seg_node: launch/, config/, weights/ beside seg_node/


class ShareFileNotFoundError(SegNodeError, FileNotFoundError):
    """A file the package installs is in none of its share folders."""


def share_folders() -> list[Path]:
    """The folders searched for the package's share files, first match wins."""
    folders = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            folders.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH outside a ROS environment
            pass
    except ImportError:
        pass
    folders.append(Path(sys.prefix) / "share" / PACKAGE)
    folders.append(CHECKOUT)
    return folders


def share_file(relative: str) -> Path:
    """The share file ``relative`` (e.g. ``config/fastdds_shm.xml``) from the first share folder that has it."""
    candidates = [folder / relative for folder in share_folders()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ShareFileNotFoundError(
        f"{relative} not found in {', '.join(map(str, candidates))}; install the package "
        "(colcon build or pip install) or run from its checkout"
    )
