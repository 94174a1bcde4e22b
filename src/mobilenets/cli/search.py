"""``mobilenets search``: platform-aware architecture search.

``search spaces`` lists the shipped search spaces (size, decisions, the hand-designed model each
contains) or prints one (a name or a ``.json`` space file) with ``--show``.
"""

from __future__ import annotations

import argparse
import math
import sys

from .common import add_json, emit_json, json_only


def _cmd_spaces(args: argparse.Namespace) -> int:
    from ..models.registry import model_spec
    from ..search.spaces import SPACES, load_space
    from ..textutil import table

    spaces = [load_space(s) for s in args.show] if args.show else list(SPACES.values())
    rows, out = [], []
    for space in spaces:
        found = [n for n in space.contains if space.contains_spec(model_spec(n))]
        out.append(dict(space.to_dict(), size=space.size(), decisions=len(space.decisions()), contains=found))
        rows.append([space.name, len(space.stages), len(space.decisions()), f"10^{math.log10(space.size()):.1f}",
                     ", ".join(found) or "-", space.note])
    emit_json(args, out)
    if json_only(args):
        return 0
    if args.show:
        print("\n\n".join(str(s) for s in spaces))
        return 0
    print(table(["space", "searched stages", "decisions", "architectures", "contains", "what"], rows,
                [False, True, True, True, False, False]))
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("search", help="platform-aware architecture search (spaces, ...)",
                              description="Architecture search over a UIB search space (MobileNetV4's TuNAS "
                                          "setting): 'spaces' lists the search spaces.")
    sub = p.add_subparsers(dest="search_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(file=sys.stderr), 2)[1])

    s = sub.add_parser("spaces", help="list the search spaces (size, decisions, the model each contains)",
                       description="List the shipped search spaces: searched stages, decisions, the number of "
                                   "distinct architectures and the hand-designed model each contains (checked "
                                   "by encoding its spec). --show NAME_OR_JSON prints a space in full.")
    s.add_argument("--show", nargs="+", metavar="SPACE", default=[],
                   help="print these spaces in full (shipped names or .json space files)")
    add_json(s, "the spaces")
    s.set_defaults(func=_cmd_spaces)
