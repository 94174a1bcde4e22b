"""Progress output of the long commands (``train``, ``data``, ``bench``), in one place.

On a terminal (the stream, stderr by default, is a TTY) progress is an updating tqdm bar (when
tqdm is installed). Anywhere else (a log file, a pipe, CI) it is a few complete lines, at 25, 50,
75 and 100 %, so that a redirected log gets neither one long line of carriage-return updates nor
a line per step::

    bar = progress_bar(len(items), "digit-scenes train")   # None when enabled=False
    for item in items:
        ...
        bar.update(1)
    bar.close()
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

__all__ = ["ProgressLines", "is_terminal", "progress_bar", "progress_iter"]

T = TypeVar("T")


def is_terminal(stream: Optional[TextIO] = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressLines:
    """Progress as plain lines: ``<desc>: <n>/<total> (<pct>%) <postfix>`` each time the count
    reaches a quarter of ``total`` (so at most four lines, however it is updated). The part of
    tqdm's interface the commands use: ``update``, ``set_postfix_str``, ``write``, ``close``."""

    def __init__(self, total: int, desc: str, stream: Optional[TextIO] = None, parts: int = 4) -> None:
        self.total, self.desc, self.n, self.post = int(total), desc, 0, ""
        self.stream = sys.stderr if stream is None else stream
        self.marks = sorted({max(1, round(self.total * q / parts)) for q in range(1, parts + 1)}) \
            if self.total > 0 else []
        self._next = 0

    def update(self, k: int = 1) -> None:
        self.n += k
        crossed = False
        while self._next < len(self.marks) and self.n >= self.marks[self._next]:
            self._next, crossed = self._next + 1, True
        if crossed:
            pct = 100 * self.n // self.total
            self.write(f"{self.desc}: {self.n}/{self.total} ({pct}%)" + (f" {self.post}" if self.post else ""))

    def set_postfix_str(self, s: str) -> None:
        self.post = s

    def write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, enabled: bool = True, stream: Optional[TextIO] = None):
    """A progress display for ``total`` steps on ``stream`` (default ``sys.stderr``): a tqdm
    bar on a terminal, :class:`ProgressLines` otherwise (or without tqdm); ``None`` when not
    ``enabled``.

    Args:
        total: the number of steps (``update(1)`` calls) to completion.
        desc: what is progressing, e.g. ``"epoch 3/10"``.
        enabled: False for no output at all (``--quiet``, non-zero ranks).
        stream: where to write.
    """
    if not enabled:
        return None
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=stream)
    return ProgressLines(total, desc, stream)


def progress_iter(items: Iterable[T], desc: str, total: Optional[int] = None, enabled: bool = True,
                  stream: Optional[TextIO] = None) -> Iterator[T]:
    """``items`` with a :func:`progress_bar` advanced after each (``total``: ``len(items)``)."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    bar = progress_bar(len(items) if total is None else total, desc, enabled, stream)  # type: ignore[arg-type]
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
