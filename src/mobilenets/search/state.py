"""The saved state of a resumable search run (``search run``'s ``search.pt``, ``search adapt``'s
``adapt.pt``): read back only when it was written with the same settings, so running the same
command again resumes and a changed command never silently continues another run."""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Optional

import torch


def load_run_state(path: Path, settings: dict, may_change: Collection[str] = (), what: str = "a search",
                   weights_only: bool = True, error: type = ValueError) -> Optional[dict]:
    """The state at ``path`` (``None`` when there is none), after checking that it was saved
    with ``settings`` (its ``"settings"`` entry; keys in ``may_change`` may differ, e.g. a time
    budget). A difference raises ``error`` naming each setting, saved and given."""
    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=weights_only)
    saved = ck.get("settings") or {}
    differ = [k for k in settings if k not in may_change and settings[k] != saved.get(k)]
    if differ:
        diff = ", ".join(f"{k}: {saved.get(k)!r} there, {settings[k]!r} given" for k in differ)
        raise error(f"{path} is {what} with other settings ({diff}); use another --out to start a new one")
    return ck
