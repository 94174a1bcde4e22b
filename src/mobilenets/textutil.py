"""Plain-text formatting shared by the library and the command line (no CLI dependency)."""

from __future__ import annotations

from typing import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[bool]) -> str:
    """Plain-text table with aligned columns (``right[i]``: right-align column i)."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if rt else c.ljust(w)  # noqa: E731
                              for c, w, rt in zip(r, widths, right)).rstrip()
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)
