"""timm's pretrained_cfg on our models: per name and per tag, equal to timm's field by field; the
ModelInfo built from it; timm's (and our) resolve_data_config / create_transform on our models;
tagged names through create_model, list_models and the CLI."""

import math

import pytest
import torch

import mobilenets
from mobilenets import create_model, model_info
from mobilenets.data import create_transform, resolve_data_config, transform_for
from mobilenets.models.registry import _REGISTRY

timm = pytest.importorskip("timm")
from timm.models import get_pretrained_cfg  # noqa: E402

# every registered name timm has the architecture of (the generator reads the same list), and
# every tag timm's registry has for it
SHARED = sorted(n for n, e in _REGISTRY.items() if e.reference.get("timm"))
TAGGED = [f"{n}.{c.split('.', 1)[1]}" if "." in c else n for n in SHARED  # untagged: timm's MNv5 encoder
          for c in timm.models.get_arch_pretrained_cfgs(_REGISTRY[n].reference["timm"])]
OURS_ONLY = sorted(n for n, e in _REGISTRY.items() if e.task == "classification" and not e.reference.get("timm"))
# where our module layout names differ from timm's: timm's MobileNets have conv_stem / classifier at
# the top level; ours a stem (stem.conv, stem.bn) and a head (head.fc) shared by every family
LAYOUT = {"first_conv": "stem.conv", "classifier": "head.fc"}


TIMM = {n: _REGISTRY[n].reference["timm"] for n in SHARED}


def _timm_name(tagged: str) -> str:
    arch, _, tag = tagged.partition(".")
    return TIMM[arch] + (f".{tag}" if tag else "")


def _timm_cfg(tagged: str) -> dict:
    """The dict timm.create_model(tagged) attaches as model.pretrained_cfg (without building it),
    its ``architecture`` our name (the same as timm's for every name so far)."""
    return {**get_pretrained_cfg(_timm_name(tagged)).to_dict(), "architecture": tagged.split(".")[0]}


def _timm_model_cfg(tagged: str, **kw) -> dict:
    """timm's model's pretrained_cfg with our names: the architecture's and our modules'."""
    with torch.device("meta"):
        theirs = timm.create_model(_timm_name(tagged), pretrained=False, **kw)
    return {**theirs.pretrained_cfg, "architecture": tagged.split(".")[0], **LAYOUT}, theirs


def _meta(name: str, **kw):
    with torch.device("meta"):  # the structure and the attributes, without the weights' cost
        return create_model(name, **kw)


def test_the_lists_are_complete():
    """Every shared name is in the generated table (regenerate with tools/gen_timm_cfgs.py when
    a registered name with reference['timm'] is missing) and every tag of it is."""
    assert len(SHARED) >= 24 and len(TAGGED) >= 43
    for n in SHARED:
        timm_tags = [c.split(".", 1)[1] for c in timm.models.get_arch_pretrained_cfgs(TIMM[n]) if "." in c]
        assert list(_REGISTRY[n].tags) == timm_tags, f"{n}: regenerate with PYTHONPATH=src python tools/gen_timm_cfgs.py"
        assert len(_REGISTRY[n].pretrained_cfgs) == len(timm.models.get_arch_pretrained_cfgs(TIMM[n])), n


@pytest.mark.parametrize("tagged", TAGGED)
def test_every_tag_equals_timm_field_by_field(tagged):
    model = _meta(tagged)
    ours, theirs = model.pretrained_cfg, _timm_cfg(tagged)
    assert model.default_cfg is ours
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        if k == "classifier" and not theirs["num_classes"] and model.get_classifier() is not None \
                and not list(model.get_classifier().parameters()):
            assert ours[k] in (None, LAYOUT[k])  # no classifier (MNv5's encoder): none named, or our slot
        elif k in LAYOUT:  # our module names: real parameters of ours, where timm's are its own
            assert v != LAYOUT[k] and ours[k] == LAYOUT[k]
            if k == "first_conv" or theirs["num_classes"]:  # as timm's check: no classifier, no weight
                assert ours[k] + ".weight" in model.state_dict()
        else:
            assert ours[k] == v, k
    # the record is built from the cfg: timm's data pipeline and ours read the same preprocessing
    info = model_info(model)
    assert (info.input_size, info.mean, info.std, info.crop_pct, info.interpolation, info.crop_mode) == \
        (theirs["input_size"], theirs["mean"], theirs["std"], theirs["crop_pct"], theirs["interpolation"],
         theirs["crop_mode"])
    assert info.num_classes == theirs["num_classes"] == model.num_classes
    with torch.device("meta"):  # timm's pool_size is what our model gives at the input size
        out = model.eval().forward_features(torch.zeros(1, *theirs["input_size"]))
    assert tuple(out.shape[-2:]) == ours["pool_size"]
    for test_size in (False, True):
        want = timm.data.resolve_data_config(pretrained_cfg=theirs, use_test_size=test_size)
        assert timm.data.resolve_data_config({}, model=model, use_test_size=test_size) == want
        assert resolve_data_config({}, model=model, use_test_size=test_size) == want


@pytest.mark.parametrize("tagged", ["mobilenetv1_100.ra4_e3600_r224_in1k", "mobilenetv3_large_075.untrained",
                                    "mobilenetv4_conv_small.e3600_r256_in1k"])
def test_timm_models_carry_the_same_cfg(tagged):
    """The dict compared above is what timm's own model carries (a few cheap models here, every
    tag in the slow test below)."""
    ours = _meta(tagged)
    want, theirs = _timm_model_cfg(tagged)
    assert want == ours.pretrained_cfg
    assert timm.data.resolve_data_config(model=ours) == timm.data.resolve_data_config(model=theirs)


@pytest.mark.slow
@pytest.mark.parametrize("tagged", TAGGED)
def test_every_tag_equals_timms_model(tagged):
    ours = _meta(tagged)
    want, theirs = _timm_model_cfg(tagged)
    assert want == ours.pretrained_cfg
    for test_size in (False, True):
        assert timm.data.resolve_data_config({}, model=ours, use_test_size=test_size) == \
            timm.data.resolve_data_config({}, model=theirs, use_test_size=test_size)


def test_the_brief_s_fourteen_corrected_names():
    """The names where timm's generic defaults were wrong: mean / std 0.5, 256 / 384 / 448 inputs
    with crop 0.95, bilinear."""
    want = {"mobilenetv1_100": ((0.5,) * 3, 224, 0.875, "bicubic"),
            "mobilenetv4_conv_small_050": ((0.5,) * 3, 224, 0.875, "bicubic"),
            "mobilenetv4_conv_medium": ((0.485, 0.456, 0.406), 256, 0.95, "bicubic"),
            "mobilenetv4_conv_large": ((0.485, 0.456, 0.406), 384, 0.95, "bicubic"),
            "mobilenetv4_conv_aa_large": ((0.485, 0.456, 0.406), 448, 0.95, "bicubic"),
            "mobilenetv3_large_075": ((0.485, 0.456, 0.406), 224, 0.875, "bilinear")}
    for name, (mean, size, crop, interp) in want.items():
        c = timm.data.resolve_data_config({}, model=_meta(name))
        assert (c["mean"], c["input_size"], c["crop_pct"], c["interpolation"]) == (mean, (3, size, size), crop, interp)


@pytest.mark.parametrize("name", OURS_ONLY)
def test_names_timm_lacks_get_a_cfg_from_the_model_info_defaults(name):
    model = _meta(name).eval()
    cfg, info = model.pretrained_cfg, model_info(model)
    assert info == mobilenets.ModelInfo(name, family=_REGISTRY[name].family)  # the defaults
    assert (cfg["input_size"], cfg["mean"], cfg["std"], cfg["crop_pct"], cfg["interpolation"], cfg["crop_mode"]) == \
        (info.input_size, info.mean, info.std, info.crop_pct, info.interpolation, info.crop_mode)
    assert cfg["architecture"] == name and "tag" not in cfg and "hf_hub_id" not in cfg
    assert cfg["num_classes"] == 1000 and not _REGISTRY[name].tags
    sd = model.state_dict()
    assert cfg["first_conv"] + ".weight" in sd and cfg["classifier"] + ".weight" in sd
    with torch.device("meta"):  # shapes only
        out = model.forward_features(torch.zeros(1, *info.input_size))
    fmap = out.map if hasattr(out, "map") else out  # Mobile-Former: MapAndTokens
    assert cfg["pool_size"] == tuple(fmap.shape[-2:])  # the model's real stride-32 output
    assert timm.data.resolve_data_config({}, model=model) == resolve_data_config(model=model) == \
        {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": info.mean, "std": info.std,
         "crop_pct": 0.875, "crop_mode": "center"}


@pytest.mark.parametrize("name", ["mobilenetv4_conv_medium.e180_r384_in12k", "mobileformer_26m"])
def test_features_only_extractors_carry_timms_features_cfg(name):
    fx = _meta(name, features_only=True)
    full = _meta(name)
    assert fx.default_cfg is fx.pretrained_cfg
    # timm's pretrained_cfg_for_features: no classifier fields
    assert fx.pretrained_cfg == {k: v for k, v in full.pretrained_cfg.items()
                                 if k not in ("num_classes", "classifier", "first_conv")} | {"first_conv": "model.stem.conv"}
    assert fx.pretrained_cfg["first_conv"] + ".weight" in fx.state_dict()
    assert resolve_data_config(model=fx) == resolve_data_config(model=full)


def test_task_models_carry_a_cfg_of_their_record():
    det = _meta("ssdlite320_mobilenetv3_large_100")
    cfg, info = det.pretrained_cfg, model_info(det)
    assert (cfg["input_size"], cfg["crop_pct"], cfg["mean"], cfg["num_classes"]) == \
        (info.input_size, info.crop_pct, info.mean, info.num_classes) == ((3, 320, 320), 1.0, (0.5,) * 3, 91)
    assert cfg["classifier"] is None and cfg["first_conv"] + ".weight" in det.state_dict()
    assert timm.data.resolve_data_config({}, model=det)["input_size"] == (3, 320, 320)
    with pytest.raises(mobilenets.UnknownTagError, match="has no pretrained tags"):
        create_model("ssdlite320_mobilenetv3_large_100.coco")


# --- tagged names -----------------------------------------------------------------------------
def test_tagged_names_through_create_model():
    m = _meta("mobilenetv3_large_100.miil_in21k")
    assert m.pretrained_cfg["tag"] == "miil_in21k" and m.num_classes == 11221   # the tag's classes, as timm
    assert model_info(m).name == "mobilenetv3_large_100"  # the record names the architecture
    assert _meta("mobilenetv3_large_100.miil_in21k", num_classes=10).num_classes == 10
    assert _meta("mobilenetv3_large_100").pretrained_cfg["tag"] == "ra_in1k"  # timm's default tag
    assert _meta("mobilenetv3_large_100", pretrained_cfg="miil_in21k_ft_in1k").pretrained_cfg == \
        _meta("mobilenetv3_large_100.miil_in21k_ft_in1k").pretrained_cfg
    assert mobilenets.get_entry("mobilenetv4_conv_small.e3600_r256_in1k").name == "mobilenetv4_conv_small"
    from mobilenets.models.registry import is_model
    assert is_model("mobilenetv4_conv_small.e3600_r256_in1k") and not is_model("mobilenetv4_conv_small.pth")
    with pytest.raises(ValueError, match=r"pretrained='hf-hub:timm/mobilenetv3_large_100.miil_in21k'"):
        create_model("mobilenetv3_large_100.miil_in21k", pretrained=True)


def test_an_unknown_tag_names_the_known_ones_closest_first():
    with pytest.raises(mobilenets.UnknownTagError) as e:
        create_model("mobilenetv3_large_100.miil_in21")
    msg = str(e.value)
    assert "unknown pretrained tag 'miil_in21' for mobilenetv3_large_100" in msg
    assert "did you mean mobilenetv3_large_100.miil_in21k?" in msg
    assert "closest first: miil_in21k, miil_in21k_ft_in1k, ra_in1k, ra4_e3600_r224_in1k" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(mobilenets.UnknownTagError, match="mobilenetv1_025 has no pretrained tags"):
        mobilenets.get_entry("mobilenetv1_025.in1k")
    with pytest.raises(mobilenets.UnknownTagError, match="closest first: e500_r256_in1k"):
        create_model("mobilenetv4_conv_medium", pretrained_cfg="e500_r265_in1k")
    with pytest.raises(mobilenets.UnknownModelError, match="did you mean mobilenetv3_large_100"):
        create_model("mobilenetv3_larg_100.ra_in1k")


def test_list_models_and_list_pretrained_as_timm():
    def ours(names):  # timm's names as ours
        back = {t: n for n, t in TIMM.items()}
        return sorted(back[t.split(".")[0]] + t[len(t.split(".")[0]):] for t in names)

    for n in SHARED:
        assert mobilenets.list_pretrained(n) == ours(timm.list_pretrained(TIMM[n]))
        assert mobilenets.list_models(n, include_tags=True) == ours(timm.list_models(TIMM[n], include_tags=True))
        assert mobilenets.list_models(n, pretrained=True, include_tags=False) == \
            ours(timm.list_models(TIMM[n], pretrained=True, include_tags=False))
    timm_names = set(TIMM.values())
    assert mobilenets.list_models(pretrained=True) == \
        ours(t for t in timm.list_models(pretrained=True) if t.split(".")[0] in timm_names)
    assert "mobilenetv2_035.untrained" not in mobilenets.list_pretrained() and \
        "mobilenetv2_035.untrained" in mobilenets.list_models("mobilenetv2*", include_tags=True)
    # names timm lacks are listed untagged with include_tags (as timm does), never as pretrained
    assert "mobilenetv1_025" in mobilenets.list_models("mobilenetv1*", include_tags=True)
    assert mobilenets.list_pretrained("mobilenetv1*") == ["mobilenetv1_100.ra4_e3600_r224_in1k",
                                                          "mobilenetv1_100h.ra4_e3600_r224_in1k",
                                                          "mobilenetv1_125.ra4_e3600_r224_in1k"]
    assert mobilenets.list_models("mobilenetv4_conv_medium.e180*", include_tags=True,
                                  exclude_filters="*_ad_*") == ["mobilenetv4_conv_medium.e180_r384_in12k"]
    assert mobilenets.list_models("mobilenetv3_large_100") == ["mobilenetv3_large_100"]   # untagged by default


def test_tagged_names_through_the_cli(capsys):
    from mobilenets.cli import main

    assert main(["info", "mobilenetv4_conv_small.e3600_r256_in1k"]) == 0
    out = capsys.readouterr().out
    assert "pretrained tag: e3600_r256_in1k" in out and "hf-hub:timm/mobilenetv4_conv_small.e3600_r256_in1k" in out
    assert "preprocessing: 256x256, crop_pct 0.95 (center), bicubic, mean (0.5, 0.5, 0.5)" in out
    assert "other tags: e2400_r224_in1k, e1200_r224_in1k" in out
    assert main(["info", "mobilenetv4_conv_small.e3600"]) == 2
    assert "did you mean mobilenetv4_conv_small.e3600_r256_in1k?" in capsys.readouterr().err
    assert main(["profile", "mobilenetv3_large_100.miil_in21k", "--input-size", "64", "--json"]) == 0
    assert "11221" in capsys.readouterr().out  # the tag's classifier


def test_export_takes_a_tagged_name_and_its_preprocessing(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from mobilenets.cli import main
    from mobilenets.deploy import read_model_info

    out = tmp_path / "m.onnx"
    assert main(["export", "mobilenetv4_conv_small.e3600_r256_in1k", "--out", str(out), "--num-classes", "5"]) == 0
    assert "input 1x3x256x256" in capsys.readouterr().out   # the tag's input size
    info = read_model_info(out)
    assert (info.input_size, info.mean, info.crop_pct, info.interpolation) == ((3, 256, 256), (0.5,) * 3, 0.95, "bicubic")


# --- overlay and explicit cfgs ----------------------------------------------------------------
def test_pretrained_cfg_overlay_as_timm():
    overlay = dict(crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), test_input_size=(3, 288, 288))
    ours = _meta("mobilenetv3_small_050", pretrained_cfg_overlay=overlay)
    assert ours.pretrained_cfg == _timm_model_cfg("mobilenetv3_small_050", pretrained_cfg_overlay=overlay)[0]
    info = model_info(ours)
    assert (info.crop_pct, info.mean, info.std) == (1.0, (0.5,) * 3, (0.5,) * 3)   # the record follows
    assert transform_for(info)(torch.zeros(3, 300, 200, dtype=torch.uint8)).eq(-1).all()
    # a weight source resets custom_load, as timm's
    assert _meta("mobilenetv2_100", pretrained_cfg_overlay=dict(file="w.pth")).pretrained_cfg["custom_load"] is False
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['crop_pcnt'\]; did you mean 'crop_pct'"):
        create_model("mobilenetv2_100", pretrained_cfg_overlay=dict(crop_pcnt=1.0))
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        create_model("mobilenetv2_100", pretrained_cfg_overlay=dict(crop_mode="middle"))


def test_a_dict_pretrained_cfg_is_completed_with_timms_defaults():
    given = dict(input_size=(3, 160, 160), interpolation="bilinear", num_classes=10)
    ours = _meta("mobilenetv2_050", pretrained_cfg=given)
    want, theirs = _timm_model_cfg("mobilenetv2_050", pretrained_cfg=given)
    # timm leaves pool_size None for a cfg without one; ours gives the model's (5x5 at 160)
    assert ours.pretrained_cfg == {**want, "pool_size": (5, 5)}
    assert ours.num_classes == theirs.num_classes == 10
    assert model_info(ours).input_size == (3, 160, 160)


def test_the_cfg_stays_a_view_of_the_record():
    """Replacing the record (a training run, a checkpoint) rewrites the cfg's preprocessing; grey
    input averages mean / std, as ModelInfo does."""
    from mobilenets.models.info import set_model_info, trained_info

    m = _meta("mobilenetv1_100")
    set_model_info(m, trained_info(model_info(m), recipe={"img_size": 96, "crop_pct": 1.0, "mean": (0.1, 0.2, 0.3)}))
    c = m.pretrained_cfg
    assert m.default_cfg is c and c["tag"] == "ra4_e3600_r224_in1k"
    assert (c["input_size"], c["crop_pct"], c["mean"], c["interpolation"]) == ((3, 96, 96), 1.0, (0.1, 0.2, 0.3), "bilinear")
    grey = _meta("mobilenetv1_100", in_chans=1)
    assert grey.pretrained_cfg["input_size"] == (1, 224, 224) and grey.pretrained_cfg["mean"] == (0.5,)
    assert timm.data.resolve_data_config({}, model=grey)["input_size"] == (1, 224, 224)


# --- transforms -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    # smooth content (resize differences show) plus noise, not square
    y, x = np.mgrid[0:231, 0:347]
    base = np.stack([(x * 0.7) % 256, (y * 1.1) % 256, ((x + y) * 0.4) % 256], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("tagged,changes", [
    ("mobilenetv1_100.ra4_e3600_r224_in1k", {}),                        # mean / std 0.5, bicubic
    ("mobilenetv4_conv_medium.e250_r384_in12k_ft_in1k", {}),             # crop 0.95 at 384
    ("mobilenetv3_large_075.untrained", {}),                             # bilinear
    ("mobilenetv4_conv_small.e2400_r224_in1k", {"crop_mode": "squash"}),
    ("mobilenetv4_conv_small.e2400_r224_in1k", {"crop_mode": "border"}),
    ("mobilenetv2_100.ra_in1k", {"input_size": (3, 160, 200), "crop_pct": 0.9}),  # not square
])
def test_create_transform_equals_timms(image, tagged, changes):
    config = {**resolve_data_config({}, model=_meta(tagged)), **changes}
    assert config == {**timm.data.resolve_data_config(pretrained_cfg=_timm_cfg(tagged)), **changes}
    ours = create_transform(**config)(image)
    theirs = timm.data.create_transform(**config)(image)
    assert ours.dtype == theirs.dtype == torch.float32 and ours.shape == theirs.shape == (3, *config["input_size"][1:])
    assert torch.equal(ours, theirs)
    if not changes:  # the record's transform is the same one
        assert torch.equal(transform_for(model_info(_meta(tagged)))(image), ours)


def test_resolve_data_config_precedence_as_timm():
    m = _meta("mobilenetv4_conv_medium")
    for args in ({}, {"img_size": 200}, {"input_size": (3, 100, 120), "crop_pct": 1.0},
                 {"mean": (0.3,), "std": (0.2,), "interpolation": "bilinear", "crop_mode": "squash"}):
        assert resolve_data_config(args, model=m) == timm.data.resolve_data_config(args, model=m)
    other = _timm_cfg("mobilenetv4_conv_small.e3600_r256_in1k")
    assert resolve_data_config(pretrained_cfg=other, model=m) == timm.data.resolve_data_config(pretrained_cfg=other)
    assert mobilenets.data.resolve_model_data_config(m, use_test_size=True)["input_size"] == (3, 320, 320)
    # a module create_model did not build: its derived record, not timm's generic defaults
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    assert resolve_data_config(model=net)["input_size"] == (1, 224, 224)
    with pytest.raises(ValueError, match="needs a model, args or a pretrained_cfg"):
        resolve_data_config()
    with pytest.raises(ValueError, match="is_training=False"):
        create_transform(224, is_training=True)
    assert math.floor(224 / 0.95) == 235   # timm's floor (a round would give 236): the resize below
    tf = create_transform(224, crop_pct=0.95, interpolation="bicubic")
    assert tf.transforms[0].size == [235]


def test_int8_calibration_resizes_as_the_model_expects():
    """Calibration images go through the model's transform, its interpolation and crop mode included."""
    from mobilenets.data import eval_transform
    from mobilenets.deploy.calibration import calibration_set

    # the "fake" source: random uint8 images at the size, drawn with the seed (0)
    imgs = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = calibration_set("fake", 2, (64, 64), crop_pct=0.9, interpolation="bicubic", crop_mode="squash").images
    assert torch.equal(got, eval_transform((64, 64), 0.9, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                           "bicubic", "squash")(imgs))
    assert not torch.equal(got, calibration_set("fake", 2, (64, 64), crop_pct=0.9).images)
