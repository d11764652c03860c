"""``seg-gpu-check``: prove and measure the engine's CUDA path on an NVIDIA GPU (see seg_node.evaluation.gpu_check).

seg-gpu-check [--out docs/gpu] [--quick]; exit status 0 all checks passed, 1 a check failed, 2 no CUDA device.
"""

from __future__ import annotations

import sys
from functools import partial

from ..evaluation import gpu_check
from . import HelpFormatter, entry_point

PROG = "seg-gpu-check"


main = entry_point(PROG, partial(gpu_check.main, prog=PROG, formatter_class=HelpFormatter))


if __name__ == "__main__":
    sys.exit(main())
