"""The one backbone walk (Backbone.walk) and the static shapes (layer_shapes, Taps.output_shape):
every consumer agrees with the walk, and the shapes known without a forward pass are the ones a
forward pass produces, for every registered backbone (and dilated ones)."""

import pytest
import torch

import mobilenets
from mobilenets.models.state import split_state
from mobilenets.tasks.backbone import Taps, build_backbone
from mobilenets.tasks.detection.backbone import fpn_taps, ssdlite_taps

NAMES = mobilenets.list_models(task="classification")


def _ceil_div(a, b):
    return -(-a // b)


@pytest.mark.parametrize("name", NAMES)
def test_layer_shapes_are_what_a_forward_pass_gives(name):
    model = mobilenets.create_model(name, num_classes=0).eval()
    shapes = model.layer_shapes()
    with torch.no_grad():
        steps = model.walk(torch.zeros(1, model.in_chans, 64, 96), blocks=True)
    assert [s.position for s in steps] == list(range(len(shapes)))
    got = [(split_state(s.state)[0].shape[1], split_state(s.state)[0].shape[2:]) for s in steps]
    assert got == [(c, torch.Size([_ceil_div(64, r), _ceil_div(96, r)])) for c, r in shapes]


@pytest.mark.parametrize("name,output_stride", [("mobilenetv3_large_100", 8), ("mobilenetv4_conv_medium", 16),
                                                ("mobileformer_96m", 16), ("mobilenetv2_100", 8)])
def test_layer_shapes_of_dilated_backbones(name, output_stride):
    model = mobilenets.create_model(name, num_classes=0, output_stride=output_stride).eval()
    shapes = model.layer_shapes()
    assert max(r for _, r in shapes) == output_stride
    with torch.no_grad():
        steps = model.walk(torch.zeros(1, 3, 64, 64), blocks=True)
    assert [tuple(split_state(s.state)[0].shape[1:3]) for s in steps] == [(c, _ceil_div(64, r)) for c, r in shapes]


@pytest.mark.parametrize("name", ["mobilenetv3_small_075", "mobilenetv4_hybrid_medium", "mobileformer_52m"])
def test_every_consumer_is_the_walk(name):
    torch.manual_seed(0)
    model = mobilenets.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        steps = model.walk(x)
        assert [s.position for s in steps] == list(range(len(model.stages) + 1))
        final = model._finish(steps[-1].state)
        ff = model.forward_features(x)
        same = (lambda a, b: all(torch.equal(p, q) for p, q in zip(a, b))) if isinstance(ff, tuple) else torch.equal
        assert same(ff, final)
        outs = model.stage_outputs(x)
        assert [o.name for o in outs] == ["stem"] + [f"stages.{i}" for i in range(len(model.stages))]
        assert all(torch.equal(o.map, split_state(s.state)[0]) for o, s in zip(outs, steps))
        maps = model.forward_intermediates(x, intermediates_only=True)
        pos = model._level_positions()
        assert all(torch.equal(m, split_state(steps[p].state)[0]) for m, p in zip(maps, pos))
        # stopping early runs only what is needed, and keep= returns only what was asked
        short = model.walk(x, until=2, keep={1})
        assert [s.position for s in short] == [1, 2]
        assert torch.equal(split_state(short[0].state)[0], split_state(steps[1].state)[0])


def test_pre_stride_needs_block_positions():
    model = mobilenets.create_model("mobilenetv2_050").eval()
    with pytest.raises(ValueError, match="blocks=True"):
        model.walk(torch.zeros(1, 3, 64, 64), pre_stride={3})


@pytest.mark.parametrize("name,taps", [("mobilenetv3_large_100", ssdlite_taps), ("mobilenetv2_100", ssdlite_taps),
                                       ("mobilenetv4_conv_small", ssdlite_taps), ("mobileformer_96m", fpn_taps),
                                       ("mobilenetv4_hybrid_medium", fpn_taps)])
def test_tap_shapes_are_known_without_running(name, taps):
    body = build_backbone(name)
    t = Taps(body, taps(body))
    shape = t.output_shape()
    t.eval()
    with torch.no_grad():
        maps = t(torch.zeros(1, 3, 128, 96))
    assert list(shape) == list(maps)
    for (n, (c, s)), m in zip(shape.items(), maps.values()):
        assert (m.shape[1], m.shape[2], m.shape[3]) == (c, _ceil_div(128, s), _ceil_div(96, s)), n
    if taps is ssdlite_taps and t.taps[0][0] == "pre_stride":
        assert shape["0"][1] == 16 and shape["1"][1] == 32   # SSDLite's C4 expansion is at stride 16
