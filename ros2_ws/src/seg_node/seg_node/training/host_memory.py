"""Keep the memory a CPU training process frees, so that the next step reuses it instead of faulting it in.

By default glibc's malloc serves allocations above its mmap threshold (at most 32 MiB) with fresh
mappings and gives the free top of its heap back to the kernel, which zero-fills every page again on
first touch. A CGNet training step on the CPU (batch 8, 360x360) allocates and frees gigabytes of
activations and gradients: 8 steps took 1.84 million page faults on this project's build machine
(``getrusage``), and 0.77 million (most of them in the first step) with mmap off and the trim threshold
raised, for steps about 10% shorter and a peak resident size of 3.1 instead of 2.9 GB.
``python tools/training_speed.py`` (a maintainers' tool in the checkout) measures it against a process without it.
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_LARGEST_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in this process; False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # musl and macOS have no mallopt; Windows cannot open the process
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD))
