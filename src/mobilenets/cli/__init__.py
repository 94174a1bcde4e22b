"""``mobilenets <command>``: the command-line interface.

Commands: ``list`` (models with params and MACs), ``info`` (per-stage shapes and feature
levels), ``profile`` and ``roofline`` (hardware-aware analysis), ``train``, ``eval`` and
``predict`` (training), ``export`` and ``bench`` (deployment), ``search`` (architecture search). Every handler returns an exit
code; user errors print their message on stderr and exit with 2, bugs a traceback and 1 (see
:func:`mobilenets.cli.common.run_handler`). Every command spells the shared options the same
way (:mod:`mobilenets.cli.common`): ``--json [FILE]``, ``--input-size N | H W``, ``--batch-size``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .common import run_handler


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from .analysis import add_commands as add_analysis
    from .deploy import add_commands as add_deploy
    from .models import add_commands as add_models
    from .search import add_commands as add_search
    from .train import add_commands as add_train

    parser = argparse.ArgumentParser(prog="mobilenets", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_models(sub)
    add_analysis(sub)
    add_train(sub)
    add_deploy(sub)
    from .data import register as add_data
    add_data(sub)
    add_search(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_handler(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
