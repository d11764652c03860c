"""``python -m seg_node.cli.models --summary`` (``make summary``): parameters and GMACs of every variant."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..models import MODELS, build_model, count_macs, count_parameters
from . import HelpFormatter

SUMMARY_HEIGHT, SUMMARY_WIDTH = 360, 640


def summary_rows(class_counts: tuple[int, ...] = (11, 19)) -> list[dict[str, object]]:
    rows = []
    for name, (_builder, variants, _default) in MODELS.items():
        for variant in variants:
            for classes in class_counts:
                model = build_model(name, classes, variant=variant)
                rows.append(
                    {
                        "model": name,
                        "variant": variant,
                        "classes": classes,
                        "parameters": count_parameters(model),
                        "gmacs": count_macs(model, SUMMARY_HEIGHT, SUMMARY_WIDTH) / 1e9,
                    }
                )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seg_node.cli.models", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--summary", action="store_true", help="print the table of models (the default)")
    parser.parse_args(argv)
    macs_header = f"GMACs@{SUMMARY_HEIGHT}x{SUMMARY_WIDTH}"
    print(f"{'model':<11} {'variant':<9} {'classes':>7} {'parameters':>11} {macs_header:>14}")
    for row in summary_rows():
        print(
            f"{row['model']:<11} {row['variant']:<9} {row['classes']:>7} {row['parameters']:>11,} {row['gmacs']:>14.3f}"
        )


if __name__ == "__main__":
    main()
