"""Console scripts: one thin file each over the layers below, all started through ``run``.

``run`` turns what a user can fix into one line on stderr and an exit status,
never a traceback: a ``UsageError`` (options that do not fit) exits 2 as
argparse does, any other ``SegNodeError`` or a file that cannot be read or
written exits 1, and Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import SegNodeError, UsageError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows the module docstring as written and every option's default, once.

    The default is added here, not in the help texts (``add_engine_arguments`` leaves it to the formatter):
    ``(default: auto)``, and ``(default: unset)`` for None, whose meaning the help text says ("unset: all
    cores"). A help text that states its own default, ``(default: the weights' training size)``, keeps it
    and gets no second one.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default: " in text:  # its own wording (or BooleanOptionalAction's own "%(default)s", Python < 3.13)
            return text
        text = super()._get_help_string(action) or ""
        if action.default is None and text.endswith(AUTOMATIC_DEFAULT):
            text = text.removesuffix(AUTOMATIC_DEFAULT) + " (default: unset)"
        return text


AUTOMATIC_DEFAULT = " (default: %(default)s)"  # what ArgumentDefaultsHelpFormatter appends


def run(prog: str, main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and return its exit status, reporting known errors as ``prog: message``."""
    try:
        return main(argv) or 0
    except UsageError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SegNodeError, OSError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point(prog: str, main: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
    """The console script ``prog``: ``main`` started through ``run``; ``argv`` None means sys.argv."""

    def script(argv: Sequence[str] | None = None) -> int:
        return run(prog, main, argv)

    return script
