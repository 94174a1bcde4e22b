"""Shared helpers of the command-line interface: aligned tables and user-error handling."""

from __future__ import annotations

import sys
from typing import Callable

from .textutil import table  # noqa: F401  (re-exported: the commands print tables)


class UserError(Exception):
    """A bad argument: reported as one line on stderr, exit code 2."""


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
