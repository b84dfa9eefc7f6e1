"""Progress display: nothing when disabled, log lines off a terminal, a rich bar on one."""

import io

from mechalang.runtime.progress import LogProgress, Progress, RichProgress, make_progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_disabled_shows_nothing_but_counts():
    stream = io.StringIO()
    with make_progress(10, 1000, enabled=False, stream=stream) as bar:
        bar.advance(3, 300)
        bar.advance(0, 50)
    assert type(bar) is Progress
    assert (bar.keys, bar.bytes) == (3, 350)
    assert stream.getvalue() == ""


def test_log_lines_when_not_a_terminal():
    stream = io.StringIO()
    with make_progress(4, 4_000_000, stream=stream, interval=0.0) as bar:
        assert isinstance(bar, LogProgress)
        bar.advance(1, 1_000_000)
        bar.advance(3, 3_000_000)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("mecha: merging: 1/4 keys, 1.0 MB of 4.0 MB, ")
    assert "MB/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("mecha: merging: done, 4 keys, 4.0 MB in ")


def test_log_lines_are_periodic():
    stream = io.StringIO()
    with make_progress(100, 100, stream=stream, interval=3600) as bar:
        for _ in range(100):
            bar.advance(1, 1)
    assert len(stream.getvalue().splitlines()) == 1  # only the final line


def test_no_final_line_after_a_failure():
    stream = io.StringIO()
    try:
        with make_progress(2, 2, stream=stream, interval=3600) as bar:
            bar.advance(1, 1)
            raise RuntimeError
    except RuntimeError:
        pass
    assert stream.getvalue() == ""


def test_rich_bar_on_a_terminal():
    stream = FakeTTY()
    with make_progress(5, 5_000_000, stream=stream) as bar:
        assert isinstance(bar, RichProgress)
        bar.advance(5, 5_000_000)
    text = stream.getvalue()
    assert "5/5 keys" in text and "5.0" in text and "MB" in text
