"""Shared helpers of the command-line interface: aligned tables and user-error handling."""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A bad argument: reported as one line on stderr, exit code 2."""


def table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[bool]) -> str:
    """Plain-text table with aligned columns (``right[i]``: right-align column i)."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if rt else c.ljust(w)  # noqa: E731
                              for c, w, rt in zip(r, widths, right)).rstrip()
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def run_handler(fn: Callable, args) -> int:
    """Call a command handler; user errors become one stderr line and exit code 2.

    A subcommand may name more exception types it raises for user errors in
    ``args.user_errors`` (``parser.set_defaults(user_errors=(...))``)."""
    errors = (UserError, ValueError, KeyError, ImportError, FileNotFoundError,
              *getattr(args, "user_errors", ()))
    try:
        return fn(args)
    except errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mobilenets {args.command}: error: {msg}".splitlines()[0], file=sys.stderr)
        return 2
