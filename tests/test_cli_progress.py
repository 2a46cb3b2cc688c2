"""Progress: a tqdm bar with elapsed time and ETA on a terminal (a real pseudo-terminal), plain
periodic lines elsewhere, log lines kept above the bar."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import termios
import time

from classzoo.engine.logs import Progress, setup_console_logging


def test_plain_lines_off_a_terminal_show_count_percent_eta_and_data_wait():
    buf = io.StringIO()
    bar = Progress(4, "train epoch 1/2", stream=buf, interval_s=3600, quiet_s=0)
    bar.update(0)  # the start: a resumed run would pass its step here
    for done in (1, 2, 3, 4):
        time.sleep(0.3)
        bar.update(done, loss=1.5 / done, data_wait_s=0.15)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4  # one per tenth crossed (quarters here), none repeated by close()
    pattern = (
        r"train epoch 1/2 (\d)/4 \((\d+)%\) elapsed (\d\d:\d\d) ETA (\d\d:\d\d), "
        r"data wait (\d+)%, loss ([\d.]+)"
    )
    half = re.fullmatch(pattern, lines[1])
    assert half, lines[1]
    assert half.group(1, 2) == ("2", "50")
    assert half.group(4) == half.group(3)  # at 50 % the remaining time equals the elapsed
    assert 20 <= int(half.group(5)) <= 50  # 0.15 s waited of each ~0.3 s step
    assert float(half.group(6)) == 0.75


def test_a_stopped_job_prints_where_it_ended():
    buf = io.StringIO()
    bar = Progress(100, "eval", stream=buf, interval_s=3600, quiet_s=0.2)
    bar.update(0)
    bar.update(1)  # within quiet_s: no line
    time.sleep(0.3)
    bar.update(12)
    bar.update(13)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["eval 12/100", "eval 13/100"]


def test_a_quick_job_leaves_no_lines():
    buf = io.StringIO()
    bar = Progress(3, "index", stream=buf)  # quiet_s 5 s by default
    for done in range(4):
        bar.update(done)
    bar.close()
    assert buf.getvalue() == ""


def test_terminal_bar_has_elapsed_and_eta_and_log_lines_stay_above_it():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        setup_console_logging(True)
        handler = logging.getLogger("classzoo").handlers[0]
        handler.setStream(stream)
        bar = Progress(4, "train epoch 1/1", stream=stream)
        bar.update(0)
        for done in (1, 2):
            time.sleep(0.2)
            bar.update(done, loss=2.0)
        logging.getLogger("classzoo").info("step: 2 epoch: 0.5 FPS: 10.0 loss: 2.000")
        time.sleep(0.2)
        bar.update(3)
        bar.close()
        stream.flush()
        screen = b""
        while select.select([master], [], [], 0.5)[0]:
            screen += os.read(master, 65536)
        screen = screen.decode()
    finally:
        stream.close()
        os.close(master)
        setup_console_logging(True)
    assert re.search(r"train epoch 1/1: +\d+%\|.*\| [23]/4 \[\d\d:\d\d<\d\d:\d\d", screen), screen
    assert "loss 2.0000" in screen
    assert "step: 2 epoch: 0.5 FPS: 10.0 loss: 2.000\r\n" in screen  # its own line, kept
    assert re.search(r"3/4 \[\d\d:\d\d<\d\d:\d\d", screen.rsplit("loss: 2.000", 1)[1])


def test_disabled_or_empty_progress_writes_nothing():
    buf = io.StringIO()
    for bar in (Progress(10, "x", enabled=False, stream=buf), Progress(0, "y", stream=buf)):
        bar.update(0)
        bar.update(5, loss=1.0)
        bar.close()
    assert buf.getvalue() == ""
