"""Shared pieces of the command-line interface: the one argument set every command uses,
aligned tables, JSON output and the user-error / bug handling of every handler.

The shared arguments (every command that takes the concept uses these, nothing else):

- ``--json [FILE]`` (:func:`add_json`): ``--json`` alone prints JSON on stdout instead of the
  table; ``--json FILE`` prints the table as usual and also writes the JSON to FILE.
- ``--input-size N | H W`` (:func:`add_input_size`), aliases ``--img-size`` and ``--size``:
  one number for a square input, two for height and width.
- ``--batch-size B [B ...]`` (:func:`add_batch_size`), alias ``--batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from ..textutil import table  # noqa: F401  (re-exported: the commands print tables)

#: ``args.json`` when ``--json`` is given without FILE: JSON goes to stdout.
JSON_STDOUT = "-"
#: Old spellings kept working; the first name is the canonical one shown in the docs.
INPUT_SIZE_FLAGS = ("--input-size", "--img-size", "--size")
BATCH_SIZE_FLAGS = ("--batch-size", "--batch")


class UserError(Exception):
    """A bad argument the CLI itself detects: its message on stderr, exit code 2."""


# --- the shared arguments -----------------------------------------------------------------------
def add_json(p: argparse.ArgumentParser, what: str = "the results") -> None:
    """``--json [FILE]``: ``args.json`` is None (off), :data:`JSON_STDOUT` or the file name."""
    p.add_argument("--json", nargs="?", const=JSON_STDOUT, default=None, metavar="FILE",
                   help=f"{what} as JSON: on stdout instead of the table, or (with FILE) also "
                        "written to FILE; put FILE right after --json, and --json last or "
                        "before another option when printing")


def json_only(args: argparse.Namespace) -> bool:
    """True when ``--json`` was given without FILE: stdout carries the JSON and nothing else."""
    return getattr(args, "json", None) == JSON_STDOUT


def emit_json(args: argparse.Namespace, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` where ``--json`` says: stdout (no FILE), FILE (and a 'wrote' line), or
    nowhere (no ``--json``)."""
    dest = getattr(args, "json", None)
    if dest is None:
        return
    text = json.dumps(obj, indent=indent, default=float)
    if dest == JSON_STDOUT:
        print(text)
    else:
        Path(dest).write_text(text + "\n")
        print(f"wrote {dest}")


class _SizeAction(argparse.Action):
    """Stores ``N`` as ``(N, N)`` and ``H W`` as ``(H, W)``; anything else is a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 2):
            parser.error(f"{option_string}: expected N or H W, got {len(values)} numbers {values}")
        setattr(namespace, self.dest, (values[0], values[-1]))


def add_input_size(p: argparse.ArgumentParser, default: Optional[tuple[int, int]] = None,
                   help: str = "input size", square: bool = False, dest: str = "input_size") -> None:
    """``--input-size N | H W`` (aliases ``--img-size``, ``--size``): ``args.<dest>`` is an
    ``(H, W)`` tuple, or ``default``. ``square``: the command takes N only (the help says so;
    the handler checks with :func:`square_size`)."""
    p.add_argument(*INPUT_SIZE_FLAGS, dest=dest, nargs="+", type=int, action=_SizeAction,
                   default=default, metavar="N",
                   help=help + ("; square: N" if square else "; N (square) or H W"))


def square_size(size: Optional[tuple[int, int]], command: str) -> Optional[int]:
    """The side of a square ``(N, N)`` size (None stays None); :class:`UserError` otherwise."""
    if size is None:
        return None
    h, w = size
    if h != w:
        raise UserError(f"{command} takes a square input (--input-size N), got {h} {w}")
    return h


def add_batch_size(p: argparse.ArgumentParser, default: Any = None, multiple: bool = False,
                   help: str = "batch size", dest: str = "batch_size") -> None:
    """``--batch-size B`` (alias ``--batch``); ``multiple``: one or more (``args.<dest>`` a list)."""
    p.add_argument(*BATCH_SIZE_FLAGS, dest=dest, type=int, default=default,
                   nargs="+" if multiple else None, metavar="B",
                   help=help)


def add_torch_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for a command that trains (0: torch's default)."""
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")


def set_torch_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (:func:`add_torch_threads`)."""
    if args.threads < 0:
        raise UserError(f"--threads must be >= 1 (or 0: torch's default), got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


# --- running a handler --------------------------------------------------------------------------
#: Exceptions that mean "the user asked for something that cannot be done", whatever raised them.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError, ImportError)


def run_handler(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command handler and turn its exceptions into an exit code.

    User errors print their WHOLE message (every line: a checkpoint's missing / unexpected
    keys and the "it appears to be a checkpoint for ..." hint included) as
    ``mobilenets <command>: error: ...`` on stderr, no traceback, and return 2. They are:

    - :class:`UserError`: a bad argument the CLI detects itself;
    - ``ValueError`` and so its subclasses: ``CheckpointError`` (unreadable checkpoint, or one
      that does not fit the model), ``UnknownModelError`` (also a ``KeyError``; names the close
      matches), ``UnknownRecipeError``, ``DatasetError``, ``TeacherError``, bad sizes, opsets,
      calibration data, ...;
    - ``OSError``: ``FileNotFoundError`` for a missing checkpoint / image / folder, a file that
      cannot be written (``PermissionError``, ``IsADirectoryError``);
    - ``ImportError``: an optional dependency is missing (matplotlib, onnxruntime,
      huggingface_hub); the message says what to ``pip install``;
    - whatever the subcommand adds in ``args.user_errors``.

    A closed output pipe (``mobilenets list | head``) ends the command quietly with 0;
      (``parser.set_defaults(user_errors=(...))``, e.g. ``TrainingError``).

    Anything else (``TypeError``, ``AttributeError``, a bare ``KeyError``, ``RuntimeError``, ...)
    is a bug: its traceback is printed on stderr and the exit code is 1.
    """
    errors = USER_ERRORS + tuple(getattr(args, "user_errors", ()))
    command = getattr(args, "command", None) or "?"
    try:
        return fn(args)
    except BrokenPipeError:  # the reader stopped (`mobilenets list | head`): not an error of ours
        # nothing more can be written; point stdout at /dev/null so the interpreter's final
        # flush does not raise again on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mobilenets {command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"mobilenets {command}: internal error (a bug, not your input); please report it "
              "with the traceback above", file=sys.stderr)
        return 1
