"""seg-healthcheck: exit 0 when seg_node's diagnostics arrive, 1 when they have stopped or say ERROR.

The Docker images run it as their HEALTHCHECK: the node publishes a
DiagnosticArray with a status named seg_node... every diagnostics_period_s
(1 s by default), so a few seconds of silence means the node is dead, hung,
or no longer reachable over DDS; an ERROR status means its engine failed
(configure, or on frames). WARN (a stale camera, a low rate) is healthy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import UsageError
from . import EXIT_FAILURE, HelpFormatter, entry_point


def parser() -> argparse.ArgumentParser:
    from ..ros_tools.healthcheck import DEFAULT_NAME_PREFIX, DEFAULT_TIMEOUT_S, DEFAULT_TOPIC

    parser = argparse.ArgumentParser(prog="seg-healthcheck", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for one status")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="DiagnosticArray topic")
    parser.add_argument("--name-prefix", default=DEFAULT_NAME_PREFIX, help="status name prefix to wait for")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    from ..ros_tools.healthcheck import check_health

    args = parser().parse_args(argv)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    healthy, message = check_health(args.topic, args.name_prefix, args.timeout)
    print(message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else EXIT_FAILURE


main = entry_point("seg-healthcheck", _main)


if __name__ == "__main__":
    sys.exit(main())
