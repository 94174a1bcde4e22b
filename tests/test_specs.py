"""Spec dataclasses, their compact string form, and make_divisible."""

import pytest
from hypothesis import given, strategies as st

import mobilenets
from mobilenets.archs import BlockSpec, parse_block, parse_stages
from mobilenets.layers import make_divisible


@pytest.mark.parametrize("v,expected", [
    (32 * 0.35, 16),   # 11.2 -> 8 would lose > 10% -> 16
    (32 * 0.5, 16), (32 * 0.75, 24), (1280 * 1.4, 1792), (16 * 0.25, 8), (72 / 4, 24),
    (88 * 0.25, 24), (960 * 0.25, 240), (24 * 4.5, 112), (24 * 3.67, 88), (100, 104),
])
def test_make_divisible(v, expected):
    assert make_divisible(v) == expected


def test_make_divisible_never_loses_more_than_10_percent():
    for v in range(1, 2000):
        d = make_divisible(v / 7)
        assert d % 8 == 0 and d >= 8 and d >= 0.9 * v / 7


@st.composite
def block_specs(draw):
    # valid specs only (BlockSpec refuses the rest: tests/test_fuzz_specs.py): kernel 0 and a
    # start kernel are UIB-only, squeeze-excite is ds/dsa/ir-only, attention does not stride
    kind = draw(st.sampled_from(["cn", "ds", "dsa", "ir", "er", "uir", "mqa"]))
    uir = kind == "uir"
    kw = dict(kind=kind, out=draw(st.integers(1, 2048)),
              stride=draw(st.sampled_from([1] if kind == "mqa" else [1, 2])),
              k=draw(st.sampled_from([0, 1, 3, 5, 7] if uir else [1, 3, 5, 7])),
              a=draw(st.sampled_from([0, 3, 5] if uir else [0])),
              e=draw(st.sampled_from([1.0, 2.0, 2.5, 3.67, 4.5, 6.0])),
              se=draw(st.sampled_from([0.0, 0.25] if kind in ("ds", "dsa", "ir") else [0.0])),
              act=draw(st.sampled_from([None, "relu", "hard_swish", "gelu", "relu6", "silu"])),
              width=draw(st.sampled_from(["scale", "max", "fixed"])),
              gs=draw(st.sampled_from([0, 16, 64] if kind == "er" else [0])), skip=draw(st.booleans()))
    if uir and kw["stride"] == 2 and not (kw["a"] or kw["k"]):
        kw["k"] = 3  # a strided UIB needs a depthwise conv
    if kind == "mqa":
        kw.update(heads=draw(st.integers(1, 16)), key_dim=draw(st.integers(8, 128)),
                  kv_stride=draw(st.sampled_from([1, 2])), query_stride=draw(st.sampled_from([1, 2])))
    return BlockSpec(**kw)


@given(block_specs())
def test_block_string_round_trip(spec):
    assert parse_block(spec.to_string()) == [spec]


def test_repeat_keeps_stride_on_first_only():
    blocks = parse_block("uir_r4_a0_k3_s2_e2_c96")
    assert [b.stride for b in blocks] == [2, 1, 1, 1]
    assert all(b.out == 96 and b.a == 0 and b.k == 3 and b.e == 2.0 for b in blocks)


@pytest.mark.parametrize("name", mobilenets.list_models("mobilenetv*") + mobilenets.list_models("tf_mobilenetv3*")
                         + mobilenets.list_models("mobilenet_edgetpu*"))
def test_registered_specs_round_trip(name):
    spec = mobilenets.get_entry(name).spec
    assert parse_stages(spec.to_rows()) == spec.stages


@pytest.mark.parametrize("text,match", [
    ("xx_r1_c8", "unknown block kind"),
    ("ir_r1_k3_s3_e6_c24", "stride must be 1 or 2"),
    ("ir_r1_k3_s1_e6", "no output channels"),
    ("ir_r1_k3_zz9_c8", "unknown option"),
    ("ir_r1_k3_s1_e6_c24_???", "cannot parse token"),
    ("mqa_r1_k3_s1_c64", "heads"),
    ("ir_r1_k3_s1_e4_gs64_c64", "group size"),
])
def test_parse_errors_name_the_problem(text, match):
    with pytest.raises(ValueError, match=match):
        parse_block(text)


def test_group_size_and_noskip_tokens():
    (b,) = parse_block("er_r1_k3_s1_e4_gs64_c48_noskip")
    assert (b.gs, b.skip) == (64, False) and b.to_string() == "er_r1_k3_s1_e4_c48_gs64_noskip"


@pytest.mark.parametrize("repeats,mult", [([1], 1.2), ([2], 1.2), ([4], 1.4), ([1, 1, 2], 1.2), ([1, 3], 1.2),
                                          ([3], 1.4), ([1, 1, 2], 1.5), ([2, 2], 0.5), ([1], 2.0)])
def test_depth_scaling_matches_timm(repeats, mult):
    builder = pytest.importorskip("timm.models._efficientnet_builder")
    from mobilenets.archs import scale_repeats

    scaled = builder._scale_stage_depth(list(range(len(repeats))), repeats, mult, "ceil")
    assert scale_repeats(repeats, mult) == [scaled.count(i) for i in range(len(repeats))]


def test_depth_mult_scales_stages_and_keeps_fixed_ones():
    rows = [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r1_k3_s1_e6_c320"]]
    stages = parse_stages(rows, depth_mult=1.2, fixed_depth=(0, 2))
    assert [len(st) for st in stages] == [1, 3, 1]
    assert [b.stride for b in stages[1]] == [2, 1, 1]
    assert [len(st) for st in parse_stages(rows, depth_mult=1.2)] == [2, 3, 2]
    with pytest.raises(ValueError, match="depth_mult must be > 0"):
        parse_stages(rows, depth_mult=0)


def test_v4_tables_match_reference():
    """Spot-check the block tables against the MobileNetV4 paper's tables (Qin et al. 2024, Appendix)."""
    from mobilenets.archs.mobilenetv4 import CONV_SMALL, HYBRID_MEDIUM
    s3 = CONV_SMALL[3]
    assert [(b.a, b.k, b.stride, b.e, b.out) for b in s3] == [
        (3, 3, 2, 6, 128), (5, 5, 1, 4, 128), (0, 5, 1, 4, 128), (0, 5, 1, 3, 128),
        (0, 3, 1, 4, 128), (0, 3, 1, 4, 128)]
    mqa = [b for st in HYBRID_MEDIUM for b in st if b.kind == "mqa"]
    assert [(b.heads, b.key_dim, b.kv_stride, b.out) for b in mqa] == [(4, 64, 2, 160)] * 4 + [(4, 64, 1, 256)] * 4
