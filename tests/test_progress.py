"""Progress bars: live on a terminal, calm in logs (launch output, CI, nohup)."""

from __future__ import annotations

import io
import time

from seg_node.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def redraws(stream: io.StringIO) -> int:
    return stream.getvalue().count("\r")


def test_a_log_gets_the_start_and_the_end_of_a_loop_not_every_update():
    log = io.StringIO()
    bar = progress_bar(range(60), file=log, desc="work")
    assert bar.mininterval == LOG_INTERVAL_S
    for _ in bar:
        time.sleep(0.005)  # 0.3 s in all: tqdm's default would redraw about every 0.1 s
    assert redraws(log) <= 2, log.getvalue()
    assert "60/60" in log.getvalue()
    assert log.getvalue().isascii()


def test_a_terminal_keeps_tqdm_defaults_and_options_are_kept():
    terminal = Terminal()
    bar = progress_bar(range(10), file=terminal)
    assert bar.mininterval == 0.1
    assert progress_bar(range(10), file=io.StringIO(), mininterval=1.0).mininterval == 1.0
    assert list(progress_bar(range(3), file=io.StringIO(), disable=True)) == [0, 1, 2]
