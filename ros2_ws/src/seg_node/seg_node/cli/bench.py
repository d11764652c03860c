"""seg-bench: end-to-end speed of the engine, host uint8 frame to host uint8 label map, on CamVid frames.

For every model, size and available backend it measures the engine
synchronously and pipelined, beside a naive row (eager fp32 model, host
pre-processing, full logits copied back) measured in the same run.
Unavailable backends are skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..evaluation.bench import (
    BACKENDS,
    MODELS,
    SIZES,
    BenchSettings,
    format_table,
    plot_latencies,
    run_benchmark,
)
from . import HelpFormatter, entry_point
from .engine_flags import add_engine_arguments, parse_sizes


def parser() -> argparse.ArgumentParser:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="seg-bench", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {', '.join(MODELS)}")
    parser.add_argument("--sizes", type=parse_sizes, default=",".join(f"{h}x{w}" for h, w in SIZES),
                        help="comma-separated HEIGHTxWIDTH (network input = camera frame size)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated rows from {', '.join(BACKENDS)}; unavailable ones are skipped")
    parser.add_argument("--frames", type=int, help="frames per measurement; unset: by size")
    parser.add_argument("--camera-fps", type=float, default=defaults.camera_fps,
                        help="pipelined mode: submit at this rate like a camera (0: keep the pipeline full)")
    parser.add_argument("--camvid", type=Path, default=defaults.camvid, help="CamVid folder with val.txt")
    parser.add_argument("--json", type=Path, help="write the rows as a JSON list here")
    parser.add_argument("--plot", type=Path, help="write a latency-histogram PNG here")
    add_engine_arguments(parser, ("threads", "engine_cache_dir"))
    return parser


def _main(argv: Sequence[str] | None) -> int:
    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    settings = BenchSettings(
        models=[m for m in args.models.split(",") if m],
        sizes=args.sizes,
        backends=[b for b in args.backends.split(",") if b],
        frames=args.frames,
        camera_fps=args.camera_fps,
        threads=args.threads,
        camvid=args.camvid,
        engine_cache_dir=args.engine_cache_dir,
    )
    rows, samples, skipped = run_benchmark(settings)
    print(format_table(rows))
    for backend, reason in skipped.items():
        print(f"skipped {backend}: {reason}")
    print(f"weights: {', '.join(sorted({f'{r.model}={r.weights}' for r in rows}))}; "
          f"torch threads {torch.get_num_threads()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot and samples:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_latencies(samples, args.plot)
        print(f"wrote {args.plot}")
    return 0


main = entry_point("seg-bench", _main)


if __name__ == "__main__":
    sys.exit(main())
