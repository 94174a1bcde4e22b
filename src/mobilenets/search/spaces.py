"""The shipped search spaces, each around the hand-designed MobileNetV4 model it contains
(MobileNetV4, Qin et al. 2024, https://arxiv.org/abs/2404.10518, Tables 10, 11 and 13), and
:func:`load_space` (a name, a ``.json`` space file or a dict)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from ..archs import mobilenetv4
from .space import MQAOption, SearchSpace, StageSpace, round_filters


def _mnv4_space(name: str, key: str, insert_at: int, n_search: int, depths, mults=(0.5, 0.75, 1.0, 1.25, 1.5),
                mqa: Sequence[Optional[MQAOption]] = (), note: str = "") -> SearchSpace:
    """A space around the MNv4 model ``SPECS[key]``: its stages ``insert_at .. +n_search``
    searched (each with the depths given and its filters times ``mults``), the rest fixed."""
    spec = mobilenetv4.SPECS[key]
    searched = spec.stages[insert_at:insert_at + n_search]
    frame = spec.replace(stages=spec.stages[:insert_at] + spec.stages[insert_at + n_search:])
    stages = tuple(StageSpace(depths=tuple(d), filters=tuple(sorted({round_filters(st[0].out, m) for m in mults})),
                              stride=st[0].stride, mqa=(tuple(mqa) + (None,) * n_search)[i])
                   for i, (st, d) in enumerate(zip(searched, depths)))
    return SearchSpace(name, frame, insert_at, stages, contains=(f"mobilenetv4_{key}",), note=note)


#: the shipped spaces, each around the MobileNetV4 model it contains (MNv4 Tables 10, 11, 13)
SPACES: dict[str, SearchSpace] = {s.name: s for s in (
    _mnv4_space("mnv4_conv_small", "conv_small", 2, 2, [range(3, 9), range(3, 9)],
                note="MNv4-Conv-S's two UIB stages (stride 16, 32) searched; its conv stem stages and 1x1 960 fixed"),
    _mnv4_space("mnv4_conv_medium", "conv_medium", 1, 3, [range(1, 5), range(5, 11), range(8, 14)],
                note="MNv4-Conv-M's three UIB stages (stride 8, 16, 32) searched; stem, FusedIB stage and 1x1 960 fixed"),
    _mnv4_space("mnv4_hybrid_medium", "hybrid_medium", 1, 3, [range(1, 5), range(8, 14), range(12, 17)],
                mqa=(None, MQAOption(4, 64, 2), MQAOption(4, 64, 1)),
                note="MNv4-Hybrid-M: as mnv4_conv_medium with Mobile MQA offered in the last two stages"),
)}


def list_spaces() -> list[str]:
    return sorted(SPACES)


def load_space(source: Union[str, Path, Mapping, SearchSpace]) -> SearchSpace:
    """A space by name (:data:`SPACES`), from a JSON file (:meth:`SearchSpace.to_dict`'s form) or
    a dict of that form."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, Mapping):
        return SearchSpace.from_dict(source)
    text = str(source)
    if text in SPACES:
        return SPACES[text]
    path = Path(text)
    if path.suffix.lower() != ".json":
        close = difflib.get_close_matches(text, list(SPACES), n=1)
        raise ValueError(f"unknown search space {text!r}" + (f"; did you mean {close[0]}?" if close else "")
                         + f" (expected one of {', '.join(list_spaces())}, or a .json space file)")
    if not path.is_file():
        raise FileNotFoundError(f"search space file {text!r} does not exist")
    try:
        return SearchSpace.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"search space file {text!r}: {e}") from None
