"""mobilenets.integrations.ultralytics: our backbones inside Ultralytics YOLO11, the pip-installed
Ultralytics unmodified.

Ultralytics runs offline here (``YOLO_OFFLINE``: no DNS probe, no pip auto-install; settings in a
temporary folder; ``plots=False``: no font download; ONNX export with ``simplify=False``: no
onnxslim install attempt).
"""

import copy
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="mobilenets-yolo-settings-"))
os.environ.setdefault("YOLO_VERBOSE", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import mobilenets  # noqa: E402
from mobilenets.integrations import ultralytics as mu  # noqa: E402
from mobilenets.integrations.ultralytics import layout  # noqa: E402
from mobilenets.models.registry import task_backbones  # noqa: E402
from test_models import EDGETPU_V2_UNBUILDABLE  # noqa: E402  (the widths neither timm nor we build)

try:
    import ultralytics  # noqa: F401
    from ultralytics.nn import tasks
    HAVE_ULTRALYTICS = True
except ImportError:  # pragma: no cover - dev installs it
    HAVE_ULTRALYTICS = False

needs_ultralytics = pytest.mark.skipif(not HAVE_ULTRALYTICS, reason="ultralytics not installed (pip install "
                                       "'mobilenets[yolo]')")
HEADLINE = dict(scale="n", backbone="mobilenetv4_conv_small", width=0.75)

# The widely copied tutorial layout, as users have it: the backbone row is layer 0 and stands for
# layers 0-4 (P2..P5), SPPF is layer 5, the head concats the backbone's P4 (layer 3) and P3 (2)
TUTORIAL_YAML = """\
nc: 80
scales:
  n: [0.50, 0.25, 1024]
backbone:
  - [-1, 1, {module}, [{args}]]  # 0-4 P1/2 ... P5/32
  - [-1, 1, SPPF, [1024, 5]]  # 5
  - [-1, 2, C2PSA, [1024]]  # 6
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]  # 7
  - [[-1, 3], 1, Concat, [1]]  # 8 cat backbone P4
  - [-1, 2, C3k2, [512, False]]  # 9
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]  # 10
  - [[-1, 2], 1, Concat, [1]]  # 11 cat backbone P3
  - [-1, 2, C3k2, [256, False]]  # 12 (P3/8-small)
  - [-1, 1, Conv, [256, 3, 2]]  # 13
  - [[-1, 9], 1, Concat, [1]]  # 14 cat head P4
  - [-1, 2, C3k2, [512, False]]  # 15 (P4/16-medium)
  - [-1, 1, Conv, [512, 3, 2]]  # 16
  - [[-1, 6], 1, Concat, [1]]  # 17 cat head P5
  - [-1, 2, C3k2, [1024, True]]  # 18 (P5/32-large)
  - [[12, 15, 18], 1, Detect, [nc]]  # 19 Detect(P3, P4, P5)
"""


@pytest.fixture(autouse=True)
def _fresh_hook():
    """Each test starts without the hook (register() is what a user calls)."""
    mu.unregister()
    yield
    mu.unregister()


@pytest.fixture(scope="module")
def headline_shapes():
    """Parameter and buffer shapes of ``yolo(**HEADLINE)``, built once."""
    if not HAVE_ULTRALYTICS:
        pytest.skip("ultralytics not installed")
    return _shapes(mu.yolo(**HEADLINE))


def _layers(model):
    return list(model.model.model)


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.model.state_dict().items()}


# --- the model yolo() builds --------------------------------------------------------------------

@needs_ultralytics
def test_yolo_is_yolo11_on_our_backbone():
    model = mu.yolo(**HEADLINE)
    assert isinstance(model, ultralytics.YOLO) and model.task == "detect"
    layers = _layers(model)
    assert isinstance(layers[0], mu.MobileNetBackbone)
    assert [(type(m).__name__, m.f, m.index) for m in layers[1:5]] == [("Index", 0, i) for i in range(4)]
    assert layers[0].width_list == [24, 48, 72, 720] and layers[0].strides == [4, 8, 16, 32]
    assert model.model.stride.tolist() == [8.0, 16.0, 32.0]

    # from SPPF on, YOLO11n's own layers (ultralytics/cfg/models/11/yolo11n.yaml), renumbered: layer
    # i here is layer i + 4 there, its P3 / P4 / P5 (layers 4 / 6 / 8) are our layers 2 / 3 / 4
    stock = tasks.DetectionModel("yolo11n.yaml", verbose=False)
    renumber = {4: 2, 6: 3, 8: 4}

    def ours(f):
        return [ours(x) for x in f] if isinstance(f, list) else (f if f == -1 else renumber.get(f, f - 4))

    theirs = list(stock.model)[9:]
    assert len(layers) == 5 + len(theirs) == 20
    differ = []
    for mine, ref in zip(layers[5:], theirs):
        assert (type(mine), mine.f) == (type(ref), ours(ref.f)), (mine.i, ref.i)
        if mine.np != ref.np:
            differ.append(mine.i)
    # only the layers reading the backbone's maps (other channel counts) differ in size
    assert differ == [5, 9, 12]
    assert layers[-1].nc == 80 and layers[-1].f == [12, 15, 18]

    # Ultralytics' own summary (model.info()), pinned
    layers_n, params, grads, gflops = model.info(verbose=True)
    assert (layers_n, params, grads) == (336, 2_853_872, 2_853_856)
    assert round(gflops, 1) == 6.1
    assert mu.summary_line(model) == ("YOLO11n-mobilenetv4_conv_small-0.75 summary: 336 layers, 2,853,872 "
                                      "parameters, 2,853,856 gradients, 6.1 GFLOPs")


@pytest.mark.parametrize("backbone, width", [("mobilenetv4_conv_small", 0.35), ("mobilenetv2_100", 0.6),
                                             ("mobilenetv3_large_075", 1.0), ("mobileformer_294m", 1.5)])
def test_width_goes_through_width_mult(backbone, width):
    bb = mu.MobileNetBackbone(backbone, width)
    base = mobilenets.get_entry(backbone).defaults["width_mult"]
    ref = mobilenets.create_model(backbone, num_classes=0, width_mult=base * width)
    levels = {f["reduction"]: f["num_chs"] for f in ref.feature_info}
    assert bb.width_list == [levels[s] for s in (4, 8, 16, 32)]
    # the same network, weight for weight (the classifier pruned)
    ref_sd = ref.state_dict()
    assert {k: v.shape for k, v in bb.body.model.state_dict().items()} == {
        k: ref_sd[k].shape for k in bb.body.model.state_dict()}
    if backbone == "mobilenetv4_conv_small":
        # make_divisible, not int(c * factor): 32 * 0.35 -> 16, where int() gives 11
        assert bb.width_list == [16, 24, 32, 336] and all(c % 8 == 0 for c in bb.width_list)
    if backbone == "mobilenetv3_large_075":
        # the factor multiplies the name's own width: _075 at 1.0 is itself
        assert bb.width_list == [24, 32, 88, 720]


@pytest.mark.parametrize("backbone, width", [("mobilenetv4_hybrid_medium", 0.5), ("mobilenetv4_hybrid_medium", 1.5),
                                             ("mobilenetv4_hybrid_large", 0.5), ("mobilenetv4_hybrid_large", 1.5)])
def test_hybrid_attention_scales_as_timm(backbone, width):
    """The MobileNetV4 hybrids at width 0.5 / 1.5 are timm's models at that channel multiplier:
    Mobile MQA keeps its heads and key / value dims while its in / out channels scale, and timm's
    weights fit strictly (every key and shape). That the blocks compute what timm's compute is
    the parity tests' job (tests/test_parity.py, widths 1.0 and 0.75); inside YOLO11n they run in
    the contract guard below."""
    pytest.importorskip("timm")
    from timm.models.mobilenetv3 import _gen_mobilenet_v4

    from mobilenets.weights import _fits, detect_layout

    with torch.device("meta"):   # shapes only: no memory, no init
        ref = _gen_mobilenet_v4(backbone, width)
        ours = mobilenets.create_model(backbone, width_mult=width)
    theirs = [(m.num_heads, m.key_dim, m.value_dim, m.query.proj.in_channels, m.output.proj.out_channels)
              for m in ref.modules() if type(m).__name__ == "MultiQueryAttention2d"]
    mine = [(m.num_heads, m.key_dim, m.value_dim, m.q.in_channels, m.proj.out_channels)
            for m in ours.modules() if type(m).__name__ == "MultiQueryAttention2d"]
    assert theirs and mine == theirs
    assert {h[:3] for h in mine} == {h[:3] for h in _attention_dims(backbone, 1.0)}   # not scaled
    sd = ref.state_dict()
    assert detect_layout(sd) == "timm" and _fits(sd, "timm", ours)   # what load_weights(strict=True) checks
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def _attention_dims(backbone, width):
    with torch.device("meta"):
        net = mobilenets.create_model(backbone, width_mult=width)
    return [(m.num_heads, m.key_dim, m.value_dim) for m in net.modules()
            if type(m).__name__ == "MultiQueryAttention2d"]


# --- YAMLs: register(), the tutorial layout, the shipped files -------------------------------------

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _map_strides(model, layers, size=256):
    """Stride of the map each of ``layers``' inputs comes from, in one forward pass."""
    seen = {}

    def hook(i):
        def record(_m, args):
            xs = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
            seen[i] = [size // x.shape[-1] for x in xs]
        return record

    handles = [model.model.model[i].register_forward_pre_hook(hook(i)) for i in layers]
    try:
        with torch.no_grad():
            model.model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return seen


@needs_ultralytics
def test_tutorial_layout_builds_as_is(tmp_path, headline_shapes):
    """The tutorial's YAML, unchanged, with the pip-installed Ultralytics: the backbone row is
    layer 0 and stands for layers 0-4, the head reads P4 as layer 3 and P3 as layer 2."""
    path = _write(tmp_path, "yolo11n-mnv4.yaml",
                  TUTORIAL_YAML.format(module="MobileNetBackbone", args="mobilenetv4_conv_small, 0.75"))
    with pytest.raises(KeyError, match="MobileNetBackbone"):
        ultralytics.YOLO(path)   # Ultralytics alone does not know the name
    mu.register()
    model = ultralytics.YOLO(path)
    layers = _layers(model)
    assert isinstance(layers[0], mu.MobileNetBackbone) and type(layers[5]).__name__ == "SPPF"
    assert [m.i for m in layers] == list(range(20)) and layers[19].f == [12, 15, 18]
    # layer 8 concatenates the upsampled neck with P4 (stride 16), layer 11 with P3 (stride 8), SPPF reads P5
    seen = _map_strides(model, [5, 8, 11])
    assert seen == {5: [32], 8: [16, 16], 11: [8, 8]}
    # the model yolo() builds: the same architecture, weight for weight
    assert _shapes(model) == headline_shapes
    # the tutorial's own module name, with its args ([width]), builds the same model
    alias = ultralytics.YOLO(_write(tmp_path, "yolo11n-alias.yaml",
                                    TUTORIAL_YAML.format(module="MobileNetV4ConvSmall", args="0.75")))
    assert _shapes(alias) == _shapes(model)
    # Ultralytics' parser is wrapped, never edited: unwrapping gives back its own function
    assert tasks.parse_model.__wrapped__.__module__ == "ultralytics.nn.tasks"


@needs_ultralytics
def test_explicit_index_rows_pass_through(tmp_path, headline_shapes):
    """A YAML that already spells out the Index rows is not expanded again."""
    text = TUTORIAL_YAML.format(module="MobileNetBackbone", args="mobilenetv4_conv_small, 0.75").replace(
        "  # 0-4 P1/2 ... P5/32\n",
        "\n" + "".join(f"  - [0, 1, Index, [{c}, {i}]]\n" for i, c in enumerate([24, 48, 72, 720])))
    d = __import__("yaml").safe_load(text)
    assert mu.expand_layout(copy.deepcopy(d))["backbone"] == d["backbone"]
    mu.register()
    assert _shapes(ultralytics.YOLO(_write(tmp_path, "yolo11n-explicit.yaml", text))) == headline_shapes


def test_shipped_yamls_are_the_generated_ones():
    pytest.importorskip("ultralytics")
    from mobilenets.integrations.ultralytics.__main__ import stale_yamls

    names = set(mu.shipped_yamls())
    assert len(names) == 35 and names == {f"yolo11{s}-{b}.yaml" for s in "nsmlx" for b in mu.SHIPPED_BACKBONES}
    assert stale_yamls() == []   # each file is byte for byte what the generator writes now
    # and the generator follows the installed YOLO11: its neck and head rows, renumbered
    tail, head = layout.yolo11_neck_head()
    stock = layout.stock_yolo11()
    assert [r[2:] for r in tail + head] == [r[2:] for r in stock["backbone"][9:] + stock["head"]]
    assert [r[0] for r in tail + head] == [-1, -1, -1, [-1, 3], -1, -1, [-1, 2], -1, -1, [-1, 9], -1, -1,
                                           [-1, 6], -1, [12, 15, 18]]


def _meta_build(d: dict, scale: str, size=(640, 384)):
    """Ultralytics' parse_model on the meta device (no memory, no init) and a forward through
    Ultralytics' own layer loop: every row parses, every shape fits."""
    d = dict(copy.deepcopy(d), scale=scale)
    with torch.device("meta"):
        seq, save = tasks.parse_model(d, ch=3, verbose=False)
        seq.train()   # Detect returns its three maps
        out = tasks.BaseModel._predict_once(types.SimpleNamespace(model=seq, save=save), torch.empty(1, 3, *size))
    feats = out["feats"] if isinstance(out, dict) else out
    return seq, [tuple(f.shape[-2:]) for f in feats]


def _shipped_cases(full: bool):
    """(scale, backbone) pairs: all 35 (slow), or one scale per backbone, every scale covered."""
    pairs = [(s, b) for b in mu.SHIPPED_BACKBONES for s in mu.SCALES]
    if full:
        return pairs
    return [(mu.SCALES[i % len(mu.SCALES)], b) for i, b in enumerate(mu.SHIPPED_BACKBONES)]


def _default_and_slow(default, full):
    """pytest params: ``default`` in the default run, the rest of ``full`` marked slow."""
    return list(default) + [pytest.param(*c, marks=pytest.mark.slow) for c in sorted(set(full) - set(default))]


@needs_ultralytics
@pytest.mark.parametrize("scale, backbone", _default_and_slow(_shipped_cases(False), _shipped_cases(True)))
def test_shipped_yaml_builds(scale, backbone):
    import yaml

    mu.register()
    d = yaml.safe_load(mu.yaml_path(scale, backbone).read_text())
    seq, maps = _meta_build(d, scale)
    assert maps == [(80, 48), (40, 24), (20, 12)]
    assert isinstance(seq[0], mu.MobileNetBackbone) and seq[0].model_name == backbone


@needs_ultralytics
def test_shipped_yaml_through_ultralytics_yolo():
    mu.register()
    model = ultralytics.YOLO(str(mu.yaml_path("s", "mobileformer_294m")))
    assert model.model.stride.tolist() == [8.0, 16.0, 32.0] and model.model.yaml["scale"] == "s"
    assert _shapes(model) == _shapes(mu.yolo("s", "mobileformer_294m", 1.0))


def test_shipped_yamls_are_package_data(tmp_path):
    """A wheel built from the source tree carries the YAMLs (pyproject's package-data)."""
    pytest.importorskip("setuptools")
    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    import shutil

    shutil.copytree(root / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(root / f, tmp_path / f)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist")], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("mobilenets-*.whl")
    names = {Path(n).name for n in zipfile.ZipFile(wheel).namelist()
             if n.startswith("mobilenets/integrations/ultralytics/cfg/")}
    assert names == set(mu.shipped_yamls())


# --- through Ultralytics: train, val, predict, export, save / load, pretrained backbones ---------

@pytest.fixture(scope="module")
def yolo_data(tmp_path_factory):
    """A few digit-scenes in the YOLO layout, written by ``mobilenets data digit-scenes``."""
    from mobilenets.cli import main

    out = tmp_path_factory.mktemp("scenes-yolo")
    assert main(["data", "digit-scenes", "--format", "yolo", "--out", str(out), "--train-images", "16",
                 "--val-images", "8", "--input-size", "160", "--quiet"]) == 0
    return out / "data.yaml"


def _backbone_sd(model):
    return {k: v.clone() for k, v in mu.backbone_of(model).body.model.state_dict().items()}


CHILD = textwrap.dedent("""
    import os, sys, torch
    from ultralytics import YOLO
    from ultralytics.nn import tasks
    x = torch.load(sys.argv[1])
    outs = {}
    for name in sys.argv[3:]:
        model = YOLO(name)   # unpickles our backbone: mobilenets is imported by the pickle
        net = model.model.float().eval()
        with torch.no_grad():
            outs[name] = net(x)[0]
        # Ultralytics' trainer rebuilds from model.yaml: the hook came back with the unpickling
        rebuilt = tasks.DetectionModel(net.yaml, nc=net.yaml["nc"], verbose=False)
        rebuilt.load(net)
        with torch.no_grad():
            outs[name + ":rebuilt"] = rebuilt.eval()(x)[0]
    outs["modules"] = sorted(m for m in sys.modules if m.startswith("mobilenets.integrations"))
    torch.save(outs, sys.argv[2])
""")


@needs_ultralytics
def test_train_val_predict_export_save_load(tmp_path, yolo_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # our own classification checkpoint of the backbone (a 10-class classifier, as `mobilenets train` saves)
    classifier = mobilenets.create_model("mobilenetv4_conv_small", num_classes=10, width_mult=0.75)
    ckpt = mobilenets.save_weights(classifier, tmp_path / "classifier.safetensors")
    model = mu.yolo(**{**HEADLINE, "nc": 10}, pretrained_backbone=ckpt)
    loaded = _backbone_sd(model)
    ref = classifier.state_dict()
    assert loaded and all(torch.equal(v, ref[k]) for k, v in loaded.items())
    model.save(str(tmp_path / "untrained.pt"))

    # train: the trainer rebuilds the model from its YAML and starts from this model's weights
    at_start = {}
    model.add_callback("on_train_start", lambda trainer: at_start.update(_backbone_sd(trainer.model)))
    results = model.train(data=str(yolo_data), epochs=1, imgsz=160, batch=8, workers=0, plots=False,
                          device="cpu", project=str(tmp_path), name="run", exist_ok=True, verbose=False)
    assert at_start.keys() == loaded.keys() and all(torch.equal(at_start[k], v) for k, v in loaded.items())
    assert 0.0 <= results.results_dict["metrics/mAP50(B)"] <= 1.0
    best = tmp_path / "run" / "weights" / "best.pt"
    assert best.is_file() and isinstance(mu.backbone_of(model), mu.MobileNetBackbone)   # model is now best.pt

    metrics = model.val(data=str(yolo_data), imgsz=160, batch=8, plots=False, device="cpu",
                        project=str(tmp_path), name="val", verbose=False)
    assert 0.0 <= metrics.box.map50 <= 1.0 and metrics.box.map <= metrics.box.map50
    images = sorted((yolo_data.parent / "images" / "val").glob("*.png"))[:2]
    preds = model.predict([str(p) for p in images], imgsz=160, device="cpu", conf=0.001, verbose=False)
    assert len(preds) == 2
    for r in preds:
        assert r.boxes.xyxy.shape[1] == 4 and r.orig_shape == (160, 160)
        assert ((r.boxes.cls >= 0) & (r.boxes.cls < 10)).all()

    # ONNX, checked in ONNX Runtime against the PyTorch model
    ort = pytest.importorskip("onnxruntime")
    onnx_file = model.export(format="onnx", imgsz=320, simplify=False, device="cpu")
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        want = model.model.float().eval()(x)[0]
    assert got.shape == want.shape == (1, 4 + 10, 2100)
    assert (got[:, :4] - want[:, :4]).abs().max() <= 1e-3      # boxes, in pixels
    assert (got[:, 4:] - want[:, 4:]).abs().max() <= 1e-4      # class scores

    # the .pt files load in a fresh process (our backbone unpickles), and rebuild from their YAML there
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "x.pt"), str(tmp_path / "out.pt"),
                          str(best), str(tmp_path / "untrained.pt")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    outs = torch.load(tmp_path / "out.pt")
    assert "mobilenets.integrations.ultralytics.hook" in outs["modules"]
    for name in (str(best), str(tmp_path / "untrained.pt")):
        parent = ultralytics.YOLO(name).model.float().eval()
        with torch.no_grad():
            want = parent(x)[0]
        torch.testing.assert_close(outs[name], want, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(outs[name + ":rebuilt"], want, rtol=1e-5, atol=1e-4)


@needs_ultralytics
def test_pretrained_backbone_from_a_timm_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models.mobilenetv3 import _gen_mobilenet_v4

    ref = _gen_mobilenet_v4("mobilenetv4_conv_small", 0.75, num_classes=5)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    model = mu.yolo(**HEADLINE, pretrained_backbone=tmp_path / "timm.pth")
    # every backbone tensor is timm's (our layout of it: a strict load of the same file)
    want = mobilenets.create_model("mobilenetv4_conv_small", num_classes=5, width_mult=0.75,
                                   pretrained=tmp_path / "timm.pth").state_dict()
    got = _backbone_sd(model)
    assert got and all(torch.equal(v, want[k]) for k, v in got.items())
    # every backbone weight came from the file; BatchNorm is Ultralytics' (as the trainer rebuilds it)
    fresh = mu.MobileNetBackbone("mobilenetv4_conv_small", 0.75)
    report = fresh.load_pretrained(tmp_path / "timm.pth")
    assert report.layout == "timm" and report.loaded == len(fresh.body.model.state_dict())
    assert not report.missing and not report.mismatched and report.unexpected   # timm's head, not used
    assert {m.eps for m in fresh.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    # a checkpoint of another width does not fit: the width its shapes fit is named, then every
    # mis-shaped key
    torch.save(_gen_mobilenet_v4("mobilenetv4_conv_small", 1.0).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(mobilenets.CheckpointError, match=r"not a checkpoint of the backbone mobilenetv4_conv_small "
                                                         r"at width 0.75\n  the checkpoint is mobilenetv4_conv_small "
                                                         r"at width 1.0 \(the width its shapes fit\).*or pass "
                                                         r"width=1.0:\n  mis-shaped"):
        mu.yolo(**HEADLINE, pretrained_backbone=tmp_path / "wide.pth")
    del timm


def _classifier_checkpoint(path, width_mult=None):
    """A classifier checkpoint as ``mobilenets train`` writes it (the digits recipe, its width in
    ``model_kwargs`` as ``--set model_kwargs='{"width_mult": ...}'`` records it)."""
    from mobilenets.train import Recipe
    kw = {} if width_mult is None else {"width_mult": width_mult}
    net = mobilenets.create_model("mobilenetv4_conv_small", num_classes=10, **kw)
    sd = net.state_dict()
    torch.save({"state_dict": sd, "model": sd, "recipe": Recipe(model_kwargs=kw).to_dict(),
                "classes": [str(i) for i in range(10)],
                "mobilenets_meta": {"format": "mobilenets", "arch": "mobilenetv4_conv_small"}}, path)
    return sd


@needs_ultralytics
def test_pretrained_backbone_of_another_width_says_so_in_words(tmp_path):
    # the README's yolo(..., width=0.75, pretrained_backbone="runs/<digits run>/best.pt") with the
    # checkpoint `mobilenets train` writes by default (width 1.0): the error says which widths differ
    # and both fixes, then the keys
    _classifier_checkpoint(tmp_path / "best.pt")
    with pytest.raises(mobilenets.CheckpointError) as e:
        mu.yolo(**HEADLINE, nc=10, pretrained_backbone=tmp_path / "best.pt")
    first, words = str(e.value).splitlines()[:2]
    assert first.endswith("not a checkpoint of the backbone mobilenetv4_conv_small at width 0.75")
    assert words == ("  the checkpoint is mobilenetv4_conv_small at width 1.0 (its training recipe), the backbone is "
                     "width 0.75: train the classifier at width 0.75 (mobilenets train --model mobilenetv4_conv_small "
                     "--set model_kwargs='{\"width_mult\": 0.75}'), or pass width=1.0:")
    with pytest.raises(mobilenets.CheckpointError, match=r"the checkpoint is mobilenetv4_conv_small at width 1.0 "
                                                         r"\(its training recipe\), the backbone is "
                                                         r"mobilenetv4_conv_medium: pass "
                                                         r"backbone='mobilenetv4_conv_small', width=1.0"):
        mu.MobileNetBackbone("mobilenetv4_conv_medium", 1.0).load_pretrained(tmp_path / "best.pt")
    # the documented fix: a classifier trained at 0.75 loads, and `mobilenets eval / predict / export`
    # rebuild it at its width from the recipe
    sd = _classifier_checkpoint(tmp_path / "best075.pt", 0.75)
    model = mu.yolo(**HEADLINE, nc=10, pretrained_backbone=tmp_path / "best075.pt")
    got = _backbone_sd(model)
    assert got and all(torch.equal(v, sd[k]) for k, v in got.items())
    from mobilenets.factory import model_from_checkpoint
    rebuilt, _ = model_from_checkpoint(tmp_path / "best075.pt")
    assert all(torch.equal(v, sd[k]) for k, v in rebuilt.state_dict().items())


@needs_ultralytics
def test_shipped_yaml_builds_without_calling_register():
    # yaml_path() registers our module names (the fixture removed them): no KeyError 'MobileNetBackbone'
    assert not mu.is_registered()
    model = ultralytics.YOLO(str(mu.yaml_path("n", "mobilenetv4_conv_small")))
    assert mu.is_registered() and isinstance(model.model.model[0], mu.MobileNetBackbone)


# --- the contract Ultralytics relies on, for every registry backbone ------------------------------

WIDTHS = (0.25, 0.5, 1.0, 1.5)
BACKBONES = task_backbones()  # every classification backbone but MobileNetV5 (NOT_TASK_BACKBONES says why)


#: the default run's share of the matrix: every family at every width, on its cheaper members
#: (the full 34 x 4 matrix is marked slow); V4's anti-aliased, conv and hybrid (Mobile MQA) models
#: appear, the hybrids at 0.5 and 1.5
DEFAULT_GUARD = [
    ("mobileformer_26m", 0.25), ("mobileformer_52m", 0.5), ("mobileformer_96m", 1.0), ("mobileformer_26m", 1.5),
    ("mobilenetv1_050", 0.25), ("mobilenetv1_025", 0.5), ("mobilenetv1_025", 1.0), ("mobilenetv1_050", 1.5),
    ("mobilenetv2_100", 0.25), ("mobilenetv2_050", 0.5), ("mobilenetv2_035", 1.0), ("mobilenetv2_050", 1.5),
    ("mobilenetv3_large_100", 0.25), ("mobilenetv3_small_100", 0.5), ("mobilenetv3_small_050", 1.0),
    ("mobilenetv3_small_075", 1.5),
    ("mobilenetv4_conv_aa_medium", 0.25), ("mobilenetv4_hybrid_medium", 0.5), ("mobilenetv4_conv_small_050", 1.0),
    ("mobilenetv4_hybrid_medium_075", 1.5),
    # EdgeTPU-v1 at every width (v2's grouped fused blocks need widths whose channels split into
    # their 64-channel groups: the full matrix leaves out the ones that cannot, as timm cannot build
    # them either; test_edgetpu_v2_widths_that_cannot_build_say_so checks their error)
    ("mobilenet_edgetpu_100", 0.25), ("mobilenet_edgetpu_100", 0.5), ("mobilenet_edgetpu_100", 1.0),
    ("mobilenet_edgetpu_100", 1.5),
]


def _guard_cases(full: bool):
    """Every backbone at every width that builds (slow; not the EdgeTPU-V2 widths of
    ``EDGETPU_V2_UNBUILDABLE``), or :data:`DEFAULT_GUARD`."""
    if not full:
        return list(DEFAULT_GUARD)
    return [(b, w) for b in BACKBONES for w in WIDTHS if (b, w) not in EDGETPU_V2_UNBUILDABLE]


@needs_ultralytics
@pytest.mark.parametrize("backbone, width", _default_and_slow(_guard_cases(False), _guard_cases(True)))
def test_every_backbone_at_every_width_inside_yolo11n(backbone, width):
    """The contract Ultralytics relies on: strides 8/16/32 at the head, a list of four maps at
    strides 4..32 from the backbone, their channels = ``width_list`` = the registry model's feature
    levels at that ``width_mult``; forwards at 640x640 and at a non-square 384x640."""
    model = mu.yolo("n", backbone, width)
    bb = mu.backbone_of(model)
    base = mobilenets.get_entry(backbone).defaults["width_mult"]
    with torch.device("meta"):
        ref = mobilenets.create_model(backbone, num_classes=0, width_mult=base * width)
    levels = {f["reduction"]: f["num_chs"] for f in ref.feature_info}
    assert bb.width_list == [levels[s] for s in (4, 8, 16, 32)] and bb.strides == [4, 8, 16, 32]
    assert model.model.stride.tolist() == [8.0, 16.0, 32.0]
    maps = []
    handle = bb.register_forward_hook(lambda _m, _a, out: maps.append(out))
    net = model.model.eval()
    try:
        for h, w in ((640, 640), (384, 640)):
            maps.clear()
            with torch.no_grad():
                out = net(torch.rand(1, 3, h, w))[0]
            (feats,) = maps
            assert isinstance(feats, list) and len(feats) == 4
            assert [tuple(f.shape) for f in feats] == [(1, c, -(-h // s), -(-w // s))
                                                       for c, s in zip(bb.width_list, (4, 8, 16, 32))]
            assert out.shape == (1, 4 + 80, sum((h // s) * (w // s) for s in (8, 16, 32)))
            assert torch.isfinite(out).all()
    finally:
        handle.remove()


def test_guard_cases_cover_every_family_at_every_width():
    cases = _guard_cases(full=False)
    families = {mobilenets.get_entry(b).family for b in BACKBONES}
    assert {(mobilenets.get_entry(b).family, w) for b, w in cases} == {(f, w) for f in families for w in WIDTHS}
    assert len(BACKBONES) == 50 and len(_guard_cases(full=True)) == 200 - len(EDGETPU_V2_UNBUILDABLE) == 189
    assert any("hybrid" in b for b, _ in cases) and any("_aa_" in b for b, _ in cases)


@pytest.mark.parametrize("backbone, width", sorted(EDGETPU_V2_UNBUILDABLE))
def test_edgetpu_v2_widths_that_cannot_build_say_so(backbone, width):
    """The widths the matrix leaves out: EdgeTPU-V2's grouped fused blocks cannot split their
    channels into whole groups there (timm cannot build them either: tests/test_models.py's
    test_edgetpu_v2_builds_at_exactly_timms_widths), and YOLO says which block, width and group."""
    with pytest.raises(ValueError, match=rf"at width_mult={width}: fused IB: group_size \d+ must divide"):
        mu.MobileNetBackbone(backbone, width)


# --- bad input: one clear error each --------------------------------------------------------------

def test_unknown_backbone_names_the_closest():
    with pytest.raises(mobilenets.UnknownModelError,
                       match=r"unknown backbone 'mobilenetv4_conv_smal'; did you mean mobilenetv4_conv_small"):
        mu.yolo(backbone="mobilenetv4_conv_smal")
    with pytest.raises(ValueError, match="is a detection model; a YOLO backbone is a classification backbone "
                                         r"\(e.g. mobilenetv4_conv_small\)"):
        mu.MobileNetBackbone("ssdlite320_mobilenetv4_conv_small")
    with pytest.raises(ValueError, match="'mobilenetv5_base' is not offered as a YOLO backbone: MobileNetV5 is"):
        mu.MobileNetBackbone("mobilenetv5_base")


@pytest.mark.parametrize("width, error", [(0, ValueError), (-0.5, ValueError), (2.5, ValueError),
                                          (float("nan"), ValueError), ("0.75", TypeError), (True, TypeError)])
def test_width_outside_0_2(width, error):
    with pytest.raises(error, match=r"width must be .*\(0, 2\]"):
        mu.yolo(width=width)
    with pytest.raises(error, match=r"width must be .*\(0, 2\]"):
        mu.MobileNetBackbone("mobilenetv4_conv_small", width)


def test_backbone_without_a_stride_32_level():
    with pytest.raises(ValueError, match=r"backbone mobilenetv4_conv_medium has no stride-32 feature level \(its "
                                         r"levels are at strides 2, 4, 8, 16\)"):
        mu.MobileNetBackbone("mobilenetv4_conv_medium", 1.0, {"output_stride": 16})
    with pytest.raises(ValueError, match="no stride-32 feature level"):
        mu.yolo(backbone="mobilenetv3_large_100", width=1.0, dilated=True)


def test_options_the_backbone_row_sets_itself():
    with pytest.raises(TypeError, match=r"backbone option width_mult=0.5 is not accepted here: pass width"):
        mu.yolo(width_mult=0.5)
    with pytest.raises(TypeError, match="third argument is a mapping of backbone options"):
        mu.MobileNetBackbone("mobilenetv4_conv_small", 0.75, 5)
    with pytest.raises(ValueError, match="scale must be one of n, s, m, l, x"):
        mu.yolo(scale="q")


def test_ultralytics_missing(monkeypatch):
    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks"):
        monkeypatch.setitem(sys.modules, name, None)   # import raises ImportError
    with pytest.raises(ImportError, match=r"needs Ultralytics, an optional extra \(AGPL-3.0.*pip install "
                                          r"'mobilenets\[yolo\]'"):
        mu.register()
    with pytest.raises(ImportError, match=r"pip install 'mobilenets\[yolo\]'"):
        mu.yolo()


@needs_ultralytics
def test_ultralytics_too_old_for_the_hook(monkeypatch):
    monkeypatch.delattr(tasks, "Index")   # what Ultralytics < 8.3.64 lacks
    with pytest.raises(ImportError, match=r"Ultralytics \S+ is too old for the mobilenets YAML hook: "
                                          r"ultralytics.nn.tasks has no Index .*>= 8.3.64.*pip install -U"):
        mu.register()
    assert not mu.is_registered()


@needs_ultralytics
def test_bad_backbone_rows_in_a_yaml(tmp_path):
    mu.register()
    for args, error, match in (("mobilenetv4_conv_smal, 0.75", mobilenets.UnknownModelError, "did you mean"),
                               ("mobilenetv4_conv_small, 3", ValueError, r"\(0, 2\]"),
                               ("mobilenetv4_conv_small, 0.75, 1, 2", TypeError, "MobileNetBackbone row args")):
        path = _write(tmp_path, "yolo11n-bad.yaml", TUTORIAL_YAML.format(module="MobileNetBackbone", args=args))
        with pytest.raises(error, match=match):
            ultralytics.YOLO(path)


@needs_ultralytics
def test_input_channels_reach_the_backbone():
    """Ultralytics passes a custom module its YAML args only: the hook hands it ``ch``."""
    mu.register()
    d = layout.model_dict("mobilenetv4_conv_small", 0.5, nc=3)
    net = tasks.DetectionModel(dict(d, scale="n", yaml_file="yolo11n-gray.yaml"), ch=1, verbose=False)
    assert mu.backbone_of(net).body.model.in_chans == 1
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 1, 128, 96))[0].shape == (1, 4 + 3, 16 * 12 + 8 * 6 + 4 * 3)
