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
