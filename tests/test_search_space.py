"""Spec strings everywhere a name goes, and search spaces as data (issue 25, item 1)."""

import json
import random
import re

import pytest
import torch

import mobilenets
from mobilenets.archs.spec import NetSpec, model_label, parse_net
from mobilenets.cli import main
from mobilenets.models.registry import _REGISTRY, get_entry, is_model
from mobilenets.search.space import MQAOption, SearchSpace, StageSpace, round_filters
from mobilenets.search.spaces import SPACES, load_space

NETSPEC_NAMES = sorted(n for n, e in _REGISTRY.items() if isinstance(e.spec, NetSpec))


def test_every_netspec_model_is_covered():
    # V1-V4, the TF ports, EdgeTPU (MobileNetV5 and Mobile-Former have their own spec records)
    assert len(NETSPEC_NAMES) >= 35
    assert {"mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv4_hybrid_large",
            "tf_mobilenetv3_small_minimal_100", "mobilenet_edgetpu_v2_m"} <= set(NETSPEC_NAMES)


@pytest.mark.parametrize("name", NETSPEC_NAMES)
def test_spec_string_and_json_round_trip(name):
    spec = mobilenets.model_spec(name)
    text = str(spec)
    assert re.fullmatch(r"[A-Za-z0-9_.,:=\-]+", text), text  # shell-safe: no quoting needed
    assert parse_net(text) == spec and str(parse_net(text)) == text
    assert NetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.width_mult == get_entry(name).defaults["width_mult"]


@pytest.mark.parametrize("name", ["mobilenetv4_conv_small_050", "mobilenetv3_large_100", "tf_mobilenetv3_small_075",
                                  "mobilenetv2_120d", "mobilenet_edgetpu_v2_xs"])
def test_spec_string_builds_the_registry_model(name, tmp_path):
    ref = mobilenets.create_model(name, num_classes=7).eval()
    text = str(mobilenets.model_spec(name))
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(mobilenets.model_spec(name).to_dict()))
    x = torch.randn(2, 3, 64, 80)
    for source in (text, str(path)):
        model = mobilenets.create_model(source, num_classes=7).eval()
        assert mobilenets.count_params(model) == mobilenets.count_params(ref)
        model.load_state_dict(ref.state_dict())  # strict: the same keys and shapes
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
        assert mobilenets.model_info(model).name == text and mobilenets.model_info(model).family == ref.spec.family


def test_create_model_options_apply_on_top_of_a_spec():
    text = str(mobilenets.model_spec("mobilenetv4_conv_small_050"))  # width 0.5 in the spec
    wider = mobilenets.create_model(text, width_mult=1.0)              # the keyword overrides it
    assert mobilenets.count_params(wider) == mobilenets.count_params(mobilenets.create_model("mobilenetv4_conv_small"))
    feats = mobilenets.create_model(text, features_only=True, out_indices=(2, 3))
    assert [f.shape[1] for f in feats(torch.randn(1, 3, 64, 64))] == feats.feature_info.channels()


def test_header_carries_only_what_differs():
    spec = mobilenets.model_spec("mobilenetv4_conv_small")
    header = str(spec).split(":")[1]
    assert header == "stem=32,act=relu,fix_stem_below=1,head=1280,head_norm=1"
    assert "width_mult=0.5" in str(mobilenets.model_spec("mobilenetv4_conv_small_050"))
    assert spec.replace(paper="elsewhere") == spec  # documentation, not architecture


@pytest.mark.parametrize("text, message", [
    ("mobilenetv4:", "header then at least one stage"),
    ("mobilenetv4:stem=32,act=relu", "header then at least one stage"),
    ("mobilenetv4:uir_r1_k3_s2_e4_c32", "header then at least one stage"),
    ("mobilenetv4:stem=32,act=relu,widht_mult=0.5:cn_r1_k3_s2_c32", "did you mean width_mult"),
    ("mobilenetv4:stem=3x,act=relu:cn_r1_k3_s2_c32", "stem must be a whole number"),
    ("mobilenetv4:stem=32,act=relu,fixed_norm=yes:cn_r1_k3_s2_c32", "fixed_norm must be 0 or 1"),
    ("mobilenetv4:stem=32,act=relu::cn_r1_k3_s2_c32", "stage 0 is empty"),
    ("mobilenetv4:stem=32,act=relu:uir_r1_k4_s2_e4_c32", "kernel (k) must be an odd size"),
    ("mobilenetv4:stem=32,act:cn_r1_k3_s2_c32", "is not key=value"),
    ("MobileNet:stem=32,act=relu:cn_r1_k3_s2_c32", "lower-case identifier"),
    ("mobilenetv4:stem=32,act=relu,width_mult=0:cn_r1_k3_s2_c32", "width_mult must be a number > 0"),
])
def test_bad_spec_strings_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        mobilenets.create_model(text)
    assert not is_model(text)


def test_spec_files_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mobilenets.create_model(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        mobilenets.create_model(str(bad))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({**mobilenets.model_spec("mobilenetv1_100").to_dict(), "stemm": 3}))
    with pytest.raises(ValueError, match="unknown NetSpec field 'stemm'; did you mean stem"):
        mobilenets.create_model(str(unknown))


def test_model_spec_of_other_families_and_task_models():
    assert mobilenets.model_spec("mobileformer_96m").token_dim > 0   # Mobile-Former's own spec record
    with pytest.raises(ValueError, match="its backbone's: model_spec"):
        mobilenets.model_spec("ssdlite320_mobilenetv3_large_100")
    with pytest.raises(mobilenets.UnknownModelError, match="did you mean"):
        mobilenets.model_spec("mobilenetv4_conv_smal")


def test_model_label():
    text = str(mobilenets.model_spec("mobilenetv4_conv_small"))
    label = model_label(text)
    assert label.startswith("mobilenetv4-spec-") and len(label) == len("mobilenetv4-spec-") + 8
    assert model_label(text) == label and model_label(text + ",cn_r1_k1_s1_c8") != label
    assert model_label("runs/found.json") == "found" and model_label("mobilenetv1_100") == "mobilenetv1_100"


# -- search spaces -------------------------------------------------------------------------------

@pytest.mark.parametrize("space", list(SPACES.values()), ids=list(SPACES))
def test_shipped_space_contains_its_model(space):
    assert space.contains
    for name in space.contains:
        spec = mobilenets.model_spec(name)
        choice = space.encode(spec)
        assert space.to_spec(choice) == spec
        assert space.encode(str(spec)) == choice


@pytest.mark.parametrize("space", list(SPACES.values()), ids=list(SPACES))
def test_sampled_choices_round_trip(space):
    rng = random.Random(0)
    for _ in range(25):
        choice = space.sample(rng)
        spec = space.to_spec(choice)
        assert space.encode(spec) == choice
        assert space.encode(parse_net(str(spec))) == choice
        assert space.canonical(choice) == choice


@pytest.mark.parametrize("space", list(SPACES.values()), ids=list(SPACES))
def test_sampled_specs_build_forward_and_backward(space):
    rng = random.Random(1)
    for _ in range(2):
        spec = space.to_spec(space.sample(rng))
        model = mobilenets.create_model(str(spec), num_classes=5, width_mult=0.25)
        out = model(torch.randn(2, 3, 64, 64))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        out.sum().backward()


def test_space_size_is_the_number_of_distinct_architectures():
    tiny = SearchSpace("tiny", mobilenets.model_spec("mobilenetv4_conv_small").replace(
        stages=mobilenets.model_spec("mobilenetv4_conv_small").stages[:1]), 1,
        (StageSpace(depths=(1, 2), filters=(16, 24), ops=((0, 0), (0, 3), (3, 5)), expansions=(2, 4),
                    stride=2, mqa=MQAOption(2, 8)),))
    seen = set()
    rng = random.Random(0)
    for _ in range(4000):
        seen.add(str(tiny.to_spec(tiny.sample(rng))))
    # depth 1: 2 filters x (2 ops, FFN cannot stride) x 2 e = 8; depth 2: 8 x (3 ops x 2 e + mqa) = 56
    assert tiny.size() == 64 == len(seen)


def test_encode_names_what_is_outside_the_space():
    space = SPACES["mnv4_conv_small"]
    with pytest.raises(ValueError, match="expected 5 stages"):
        space.encode(mobilenets.model_spec("mobilenetv4_conv_large").replace(stages=mobilenets.model_spec(
            "mobilenetv4_conv_large").stages[:4]))
    with pytest.raises(ValueError, match="the fixed part differs in stages"):
        space.encode(mobilenets.model_spec("mobilenetv4_conv_medium"))
    spec = mobilenets.model_spec("mobilenetv4_conv_small")
    odd = spec.replace(stages=spec.stages[:2] + (spec.stages[2][:1] + (spec.stages[2][1].__class__(
        "uir", 96, 1, k=7, a=0, e=2.0),) + spec.stages[2][2:],) + spec.stages[3:])
    with pytest.raises(ValueError, match=r"searched stage 0 block 1 .* op a0k7 is not a choice"):
        space.encode(odd)
    with pytest.raises(ValueError, match="the fixed part differs in stem"):
        space.encode(spec.replace(stem=16))
    with pytest.raises(ValueError, match="did you mean s0.depth"):
        space.to_spec({**space.sample(random.Random(0)), "s0.dpth": 1})
    with pytest.raises(ValueError, match=r"takes an index in \[0, 6\)"):
        space.to_spec({**space.sample(random.Random(0)), "s0.depth": 6})


def test_two_stage_schedule():
    space = SPACES["mnv4_conv_medium"]
    coarse = space.coarse()
    assert all(st.ops == ((0, 3),) and st.expansions == (4.0,) for st in coarse.stages)
    cc = coarse.sample(random.Random(0))
    fine = space.fine(cc)
    coarse_spec, fine_spec = coarse.to_spec(cc), fine.to_spec(fine.sample(random.Random(1)))
    for a, b in zip(coarse_spec.stages, fine_spec.stages):  # depth and widths kept
        assert len(a) == len(b) and [x.out for x in a] == [x.out for x in b]
    assert all(b.kind == "uir" and b.e == 4 for st in fine_spec.stages[1:4] for b in st)
    assert all(space.contains_spec(s) for s in (coarse_spec, fine_spec))  # both stages stay in the space


def test_space_json_round_trip_and_errors(tmp_path):
    for space in SPACES.values():
        path = tmp_path / f"{space.name}.json"
        path.write_text(json.dumps(space.to_dict()))
        assert load_space(str(path)) == space and load_space(space.name) is space
    with pytest.raises(ValueError, match="did you mean mnv4_conv_small"):
        load_space("mnv4_conv_smal")
    bad = SPACES["mnv4_conv_small"].to_dict()
    bad["stages"][0]["deptsh"] = [1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown stage space field 'deptsh'; did you mean depths"):
        load_space(str(path))
    with pytest.raises(ValueError, match="FFN form"):
        StageSpace(depths=(1,), filters=(16,), ops=((0, 0),), stride=2)
    with pytest.raises(ValueError, match="repeated choices"):
        StageSpace(depths=(1, 1), filters=(16,))
    assert round_filters(96, 0.75) == 72 and round_filters(80, 0.5) == 40 and round_filters(20, 0.1) == 8


def test_search_spaces_command(capsys):
    assert main(["search", "spaces", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in out} == set(SPACES)
    assert all(s["contains"] == list(SPACES[s["name"]].contains) for s in out)
    assert main(["search", "spaces", "--show", "mnv4_conv_small"]) == 0
    assert "contains mobilenetv4_conv_small" in capsys.readouterr().out
    assert main(["search", "spaces", "--show", "nope"]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err


def test_cli_takes_spec_strings(tmp_path, capsys):
    spec = SPACES["mnv4_conv_small"].with_width(0.25)
    text = str(spec.to_spec(spec.sample(random.Random(3))))
    assert main(["info", text]) == 0
    assert "stages.3" in capsys.readouterr().out
    assert main(["export", text, "--format", "onnx", "--input-size", "64", "--out", str(tmp_path / "m.onnx")]) == 0
    assert "checked with ONNX Runtime" in capsys.readouterr().out
    info = mobilenets.deploy.read_model_info(tmp_path / "m.onnx")
    assert info.name == text
    for cmd in (["profile", text, "--input-size", "64"], ["roofline", text, "--input-size", "64"],
                ["bench", text, "--paths", "eager", "--batch-size", "1", "--input-size", "64", "--repeats", "3"]):
        assert main(cmd) == 0, cmd
        out = capsys.readouterr().out
        assert model_label(text) in out or "total" in out   # tables name a spec by its short label
