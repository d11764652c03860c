"""seg_node.ros.allocator: a frame-sized buffer freed and allocated again costs no fresh pages."""

from __future__ import annotations

import subprocess
import sys

FRAME_BYTES = 1920 * 1080 * 3
FRAMES = 40

# allocate and free a frame-sized bytes object per frame, as rclpy's raw take does; print the minor page faults
PROGRAM = f"""
import resource, sys
from seg_node.ros.allocator import keep_freed_buffers
if sys.argv[1] == "keep":
    assert keep_freed_buffers()
pattern = b"x" * {FRAME_BYTES}
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({FRAMES}):
    frame = pattern[:-1] + b"y"  # two new buffers of a frame's size (the slice, then the frame), written through
    del frame
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    completed = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, timeout=120,
                               check=True)
    return int(completed.stdout)


def test_freed_frames_are_reused_instead_of_faulting_in_new_pages():
    pages_per_frame = FRAME_BYTES // 4096
    assert page_faults("default") > FRAMES * pages_per_frame // 2  # glibc's default: fresh pages per frame
    assert page_faults("keep") < 3 * pages_per_frame  # the first frame's two buffers, then none
