"""The engine's options as ``--flags`` of the console scripts: the names, help, choices and defaults of
``engine.options.ENGINE_OPTIONS``, so that a flag, a node parameter and an EngineConfig field are one name."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ..engine.options import MAX_NETWORK_SIDE, MIN_NETWORK_SIDE, OPTIONS_BY_NAME, EngineConfig


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """The ``--sizes`` of the speed tools (argparse type): comma-separated HEIGHTxWIDTH, e.g. ``360x480,1024x2048``."""
    sizes = []
    for part in filter(None, text.split(",")):
        try:
            height, width = (int(value) for value in part.lower().split("x"))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"size {part!r} is not HEIGHTxWIDTH, e.g. 360x480") from error
        if not MIN_NETWORK_SIDE <= min(height, width) <= max(height, width) <= MAX_NETWORK_SIDE:
            raise argparse.ArgumentTypeError(
                f"size {part!r}: each side must be {MIN_NETWORK_SIDE} to {MAX_NETWORK_SIDE} pixels")
        sizes.append((height, width))
    if not sizes:
        raise argparse.ArgumentTypeError("no size given; e.g. 360x480,1024x2048")
    return sizes


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_engine_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None,
                         defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None) -> None:
    """Add ``--backend``, ``--precision``, ... (all options, or ``names``) with their help, choices and defaults.

    ``defaults`` and ``helps`` replace an option's default and help text for this program (a help text that
    says what unset means here, where that differs from the node's).

    The help texts do not repeat the default: the parser's formatter shows it (seg_node.cli.HelpFormatter,
    with "unset" for None; each option's help says what unset means).
    """
    group = parser.add_argument_group("engine")
    overrides = defaults or {}
    for name in names if names is not None else OPTIONS_BY_NAME:
        option = OPTIONS_BY_NAME[name]
        default = overrides.get(name, option.default)
        text = (helps or {}).get(name, option.help)
        if name == "network_size":
            group.add_argument(_flag(name), type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=default,
                               help=text)
        elif isinstance(option.default, bool):
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=default, help=text)
        elif option.choices:
            group.add_argument(_flag(name), choices=option.choices, default=default, help=text)
        elif name == "threads":
            group.add_argument(_flag(name), type=int, default=default, help=text)
        else:
            group.add_argument(_flag(name), default=default, help=text)


def engine_config_from_args(args: argparse.Namespace, **fixed: Any) -> EngineConfig:
    """An EngineConfig from the options ``add_engine_arguments`` added (and ``fixed`` values), validated."""
    values = {name: getattr(args, name) for name in OPTIONS_BY_NAME if hasattr(args, name)}
    values.update(fixed)
    if values.get("network_size") is not None:
        values["network_size"] = tuple(values["network_size"])
    config = EngineConfig(**values)
    config.validate()
    return config
