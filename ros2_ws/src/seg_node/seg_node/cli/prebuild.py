"""``seg-prebuild``: build and cache the inference engine ahead of time, so that the car starts in seconds.

    seg-prebuild cgnet_camvid --network-size 512 1024 --precision fp16
    seg-prebuild cgnet_camvid --network-size 360 480 --network-size 1024 2048 --engine-cache-dir /engines
    seg-prebuild cgnet_camvid --precision int8 --int8-calibration-dir /data/drive1:/camera/image_raw/compressed

It makes the engine the node would make (same engine options, same cache) once per weights and network
size, runs one frame through it, and prints what it cached where and how long it took; a second run
finds everything cached. On a CUDA GPU with torch2trt that is the TensorRT plan (and the int8
calibration table); with ONNX Runtime's TensorRT execution provider its engines too. On CPU nothing
needs building, so it exports and caches the ONNX graph that ONNX Runtime runs, which saves the export
at the node's start. Give it the node's engine_cache_dir (default ~/.cache/seg_node/engines).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from ..engine import ENGINE_OPTIONS, create_engine
from . import HelpFormatter, entry_point
from .engine_flags import add_engine_arguments, engine_config_from_args

PROG = "seg-prebuild"
NOTHING_TO_CACHE = {
    "torch": "the torch backend runs the model as it is: nothing to build or cache, it starts in seconds",
}
CPU_NOTE = ("on CPU nothing needs building: the ONNX graph ONNX Runtime runs is exported and cached, "
            "which saves the export at the node's start")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("weights", nargs="+", help="weights files, or shipped models' names (cgnet_camvid, ...)")
    parser.add_argument("--network-size", type=int, nargs=2, action="append", metavar=("HEIGHT", "WIDTH"),
                        help="network input size; repeat for several (default: the weights' training size)")
    add_engine_arguments(parser, [option.name for option in ENGINE_OPTIONS if option.name != "network_size"])
    return parser


def prebuild_one(weights: str, args: argparse.Namespace, size: tuple[int, int] | None) -> None:
    config = engine_config_from_args(args, network_size=size)
    messages: list[str] = []

    def progress(message: str) -> None:
        messages.append(message)
        print(f"  {message}", flush=True)

    print(f"{weights}{f' at {size[0]}x{size[1]}' if size else ''}:", flush=True)
    start = time.perf_counter()
    with create_engine(weights, config, on_progress=progress) as engine:
        made = time.perf_counter() - start
        height, width = engine.network_size
        engine.infer(np.zeros((height, width, 3), np.uint8))  # the first run builds what is built lazily
        total = time.perf_counter() - start
        built = any(m.startswith(("building", "exporting")) or " cached at " in m for m in messages)
        reused = any(m.startswith("loading cached") for m in messages)
        print(f"  {engine.describe()}")
        if engine.backend_name in NOTHING_TO_CACHE:
            print(f"  {NOTHING_TO_CACHE[engine.backend_name]}")
        elif engine.device == "cpu":
            print(f"  {CPU_NOTE}")
        state = "built and cached" if built else "already cached, reused" if reused else "ready"
        print(f"  {state}: engine made in {made:.1f} s, first frame after {total:.1f} s", flush=True)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [tuple(size) for size in args.network_size] if args.network_size else [None]
    for weights in args.weights:
        for size in sizes:
            prebuild_one(weights, args, size)
    return 0


main = entry_point(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
