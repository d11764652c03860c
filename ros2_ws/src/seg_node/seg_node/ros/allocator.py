"""Large buffers kept for reuse in the node's process instead of going back to the kernel when freed.

Why: per frame the node allocates and frees buffers of megabytes (the serialized frame rcl takes from DDS,
its Python bytes, the output images and their bytes). glibc's malloc gives such buffers their own mmap, or
trims them off the top of its heap, once they are freed, so the next frame's buffer of the same size faults
in fresh zeroed pages. At 1920x1080 that was 207,000 minor page faults a second in the node, about 3,400 a
frame, and its label rate went from 59 to 102 fps once the buffers were kept (docs/node.md, "Speed").
"""

from __future__ import annotations

import ctypes

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit: buffers up to 32 MiB (a 3840x2160 rgb8 frame is 24.9 MB) come
# from the heap, where a freed one is reused by the next of its size
MMAP_THRESHOLD = 32 * 1024 * 1024
# free memory at a heap's top is given back to the kernel only beyond this: enough for several frames
TRIM_THRESHOLD = 256 * 1024 * 1024


def keep_freed_buffers() -> bool:
    """Make glibc's malloc serve large buffers from its heap and keep them once freed; False where the C
    library has no glibc mallopt (musl's accepts and ignores it), and nothing changes there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
