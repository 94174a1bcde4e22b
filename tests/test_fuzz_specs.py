"""Fuzzed architecture specs: random valid and invalid block rows and spec fields either build a
model that forwards, or fail with a ValueError that names the field; never an IndexError,
AttributeError or a shape error from inside torch. Bounded: a few dozen examples per property."""

import re

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mobilenets.archs.spec import BLOCK_KINDS, BlockSpec, NetSpec, parse_block  # noqa: E402
from mobilenets.models import MobileNet  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# the option letters of the compact form and the values a fuzzer should try (edge values included)
_OPTION_VALUES = {
    "r": st.integers(0, 3), "k": st.integers(0, 7), "s": st.integers(0, 3),
    "e": st.sampled_from(["0", "0.5", "1", "2.5", "4", "6"]), "c": st.integers(0, 40),
    "a": st.integers(0, 6), "se": st.sampled_from(["0", "0.25", "1", "1.5"]),
    "h": st.integers(0, 4), "d": st.integers(0, 24), "v": st.integers(0, 3), "q": st.integers(0, 3),
}
_FLAGS = ["nre", "hs", "gelu", "re6", "wmax", "wfix", "act-silu", "act-nope", "zz9", "k", "c-1", ""]


@st.composite
def block_strings(draw) -> str:
    kind = draw(st.sampled_from([*BLOCK_KINDS, *BLOCK_KINDS, "xx", "IR", ""]))
    letters = draw(st.lists(st.sampled_from(sorted(_OPTION_VALUES)), max_size=8, unique=True))
    tokens = [kind] + [f"{k}{draw(_OPTION_VALUES[k])}" for k in letters]
    tokens += draw(st.lists(st.sampled_from(_FLAGS), max_size=2))
    return "_".join(draw(st.permutations(tokens)) if draw(st.booleans()) else tokens)


def _field_named(msg: str) -> bool:
    # a useful message names the row, a field / option letter, or what was expected
    return bool(re.search(r"block|kernel|stride|channels|expansion|squeeze|heads|key_dim|repeat|"
                          r"option|token|activation|width|expected|must", msg))


def _tiny_net(blocks: list, act: str = "relu", **kw) -> NetSpec:
    return NetSpec("fuzz", (tuple(blocks),), stem=8, act=act, **kw)


def _forward(spec: NetSpec, size=(32, 40)) -> torch.Tensor:
    model = MobileNet(spec, num_classes=3).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
    assert y.shape == (1, 3) and torch.isfinite(y).all()
    return y


@FUZZ
@given(block_strings())
def test_random_block_strings_build_or_name_the_problem(text):
    try:
        blocks = parse_block(text)
    except ValueError as e:
        assert _field_named(str(e)), str(e)
        return
    assert blocks and all(isinstance(b, BlockSpec) for b in blocks)
    # what parses round-trips, and builds a model that forwards
    assert parse_block(blocks[0].to_string(len(blocks))) == blocks
    try:
        _forward(_tiny_net(blocks))
    except ValueError as e:  # e.g. an activation name no layer knows ("act-nope")
        assert _field_named(str(e)), str(e)


@FUZZ
@given(st.lists(block_strings(), min_size=1, max_size=4), st.sampled_from([(32, 32), (47, 33), (64, 40)]))
def test_random_valid_stacks_forward(rows, size):
    blocks = []
    for text in rows:
        try:
            blocks += parse_block(text)
        except ValueError:
            continue
    blocks = [b for b in blocks if b.act in (None, "relu", "hard_swish", "gelu", "relu6", "silu")]
    if not blocks:
        return
    _forward(_tiny_net(blocks), size)


_BAD_FIELDS = [
    ({"kind": "ir", "out": 0}, "output channels"), ({"kind": "ir", "out": 8, "k": 4}, "kernel"),
    ({"kind": "cn", "out": 8, "k": 0}, "kernel"), ({"kind": "uir", "out": 8, "a": 2}, "start depthwise"),
    ({"kind": "uir", "out": 8, "stride": 2, "a": 0, "k": 0}, "cannot downsample"),
    ({"kind": "ir", "out": 8, "a": 3}, "uir option"), ({"kind": "ir", "out": 8, "e": 0}, "expansion"),
    ({"kind": "ir", "out": 8, "se": 2.0}, "squeeze-excite"), ({"kind": "er", "out": 8, "se": 0.25}, "squeeze-excite"),
    ({"kind": "mqa", "out": 8}, "heads"), ({"kind": "mqa", "out": 8, "heads": 2, "key_dim": 8, "stride": 2}, "stride"),
    ({"kind": "mqa", "out": 8, "heads": 2, "key_dim": 8, "kv_stride": 3}, "kv_stride"),
    ({"kind": "ds", "out": 8, "heads": 2}, "mqa options"), ({"kind": "ds", "out": 8, "stride": 3}, "stride"),
    ({"kind": "ds", "out": 8, "width": "big"}, "width"), ({"kind": "conv", "out": 8}, "unknown block kind"),
]


@pytest.mark.parametrize("kw,field", _BAD_FIELDS, ids=[f[1] for f in _BAD_FIELDS])
def test_bad_block_fields_are_named(kw, field):
    with pytest.raises(ValueError, match=field):
        BlockSpec(**kw)


@pytest.mark.parametrize("kw,field", [
    ({"stem": 0}, "stem"), ({"aa": "max"}, "aa"), ({"layer_scale": 0.0}, "layer_scale"),
    ({"norm_eps": 0.0}, "norm_eps"), ({"drop_rate": 1.0}, "drop_rate"),
    ({"stages": ()}, "stages"), ({"stages": (("ir_k3_c8",),)}, "BlockSpec"),
    ({"act": "nope"}, "activation"),
])
def test_bad_net_fields_are_named(kw, field):
    base = dict(family="fuzz", stages=((BlockSpec("ir", 8, e=2),),), stem=8, act="relu")
    with pytest.raises(ValueError, match=field):
        _forward(NetSpec(**{**base, **kw}))


@FUZZ
@given(st.integers(1, 3), st.sampled_from([0, 3, 5]), st.sampled_from([0, 3, 5]), st.sampled_from([1, 2]),
       st.sampled_from([1, 2]), st.sampled_from([(32, 32), (45, 37)]))
def test_random_hybrid_stacks_forward(heads, a, k, stride, kv, size):
    # UIB variants (IB / ConvNeXt / ExtraDW / FFN) and MQA with K/V downsampling, with layer scale
    hypothesis.assume(stride == 1 or a or k)  # a strided FFN is refused (test_bad_block_fields_are_named)
    blocks = [BlockSpec("uir", 16, stride, k=k, a=a, e=2),
              BlockSpec("mqa", 16, heads=heads, key_dim=8, kv_stride=kv, k=3)]
    _forward(_tiny_net(blocks, layer_scale=1e-5), size)
