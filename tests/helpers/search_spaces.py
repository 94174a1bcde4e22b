"""A tiny search space for tests: MNv4-Conv-S's frame at width 0.25, each searched stage 1-2 blocks,
two widths, two ops, two expansions (32 distinct parts at 64 px)."""

from mobilenets.search.space import SearchSpace
from mobilenets.search.spaces import SPACES


def tiny_space(name: str = "tiny") -> SearchSpace:
    base = SPACES["mnv4_conv_small"].with_width(0.25)
    stages = tuple(st.restrict(depths=(1, 2), filters=st.filters[1:3], ops=((0, 3), (3, 5)), expansions=(2.0, 4.0))
                   for st in base.stages)
    return SearchSpace(name, base.frame, base.insert_at, stages, contains=())
