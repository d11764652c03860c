"""``python tests/hanging_build_node.py --ros-args ...``: the node, with an engine build that never returns.

It stands for a TensorRT or ONNX Runtime build: one C call that signals cannot interrupt. Here that call
locks, through ctypes, a pthread mutex the thread already holds (pthread_mutex_lock never returns EINTR).
The node must still stop on SIGINT or SIGTERM, abandoning the build (tests/test_node_stop.py).
seg_node comes from PYTHONPATH, as for ``python -m seg_node``.
"""

from __future__ import annotations

import ctypes

import seg_node.engine.engine as engine_module
from seg_node.ros.process import main

MUTEX_BYTES = 64  # a glibc pthread_mutex_t is 40 bytes on x86-64 and 48 on aarch64; all zeros: a normal mutex


def hang_forever(*_args: object, **_kwargs: object) -> None:
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(MUTEX_BYTES)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # a normal mutex locked twice by its owner: blocked for good, signals or not


if __name__ == "__main__":
    # the tests signal this process only once it says it builds, so these imports may precede the handlers
    engine_module._build_backend = hang_forever
    main()
