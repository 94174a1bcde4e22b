"""Detection on every backbone: exact to torchvision's MobileNetV3-Large detectors, and the
torchvision contract, parameter counts, cut points, freezing and checkpoint errors for all."""

import warnings

import pytest
import torch
import torchvision
from torchvision.models import detection as tvd

import mobilenets
from conftest import MAX_ACTIVATION_RMS, activation_scale, randomize_bn
from mobilenets.tasks.detection import ssdlite_taps, units

TV_BUILDERS = {
    "ssdlite320_mobilenetv3_large_100": tvd.ssdlite320_mobilenet_v3_large,
    "fasterrcnn_mobilenetv3_large_100_fpn": tvd.fasterrcnn_mobilenet_v3_large_fpn,
    "fasterrcnn_mobilenetv3_large_100_320_fpn": tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
}


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    # one square image at the model's size and one non-square one
    return [torch.rand(3, 320, 320, generator=g), torch.rand(3, 241, 403, generator=g)]


def _targets():
    return [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [200.0, 40.0, 300.0, 90.0]]),
             "labels": torch.tensor([3, 7])},
            {"boxes": torch.tensor([[10.0, 12.0, 200.0, 230.0]]), "labels": torch.tensor([5])}]


@pytest.fixture(scope="module")
def tv_models():
    """torchvision's three MobileNetV3-Large detectors with random weights and BatchNorm
    statistics calibrated on real images (well conditioned; asserted in the test)."""
    out = {}
    for name, build in TV_BUILDERS.items():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = build(weights=None, weights_backbone=None, num_classes=11)
        randomize_bn(m, calib=_images(1))
        out[name] = m.eval()
    return out


def _same_detections(ref, ours, box_tol=1e-3):
    assert len(ref) == len(ours)
    for r, o in zip(ref, ours):
        assert r["boxes"].shape == o["boxes"].shape and len(r["boxes"]) > 0
        assert torch.equal(r["labels"], o["labels"])
        assert (r["boxes"] - o["boxes"]).abs().max() <= box_tol
        assert (r["scores"] - o["scores"]).abs().max() <= 1e-5


@pytest.mark.parametrize("name", list(TV_BUILDERS))
def test_torchvision_detector_checkpoint_gives_the_same_detections(name, tv_models, tmp_path):
    ref = tv_models[name]
    images = _images()
    assert activation_scale(ref.backbone, torch.stack([images[0]])) <= MAX_ACTIVATION_RMS  # well conditioned
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    ours = mobilenets.create_model(name, num_classes=11, pretrained=path).eval()
    with torch.no_grad():
        _same_detections(ref(images), ours(images))


@pytest.mark.parametrize("name", list(TV_BUILDERS))
def test_torchvision_detector_same_losses_in_train_mode(name, tv_models):
    ref = tv_models[name]
    # the same modules as torchvision's model built without weights (BatchNorm2d, all trainable)
    ours = mobilenets.create_model(name, num_classes=11, pretrained=ref.state_dict(), frozen_bn=False) \
        if "fasterrcnn" in name else mobilenets.create_model(name, num_classes=11, pretrained=ref.state_dict())
    ref, ours = ref.train(), ours.train()
    try:
        losses = []
        for m in (ref, ours):
            torch.manual_seed(123)
            losses.append(m(_images(), _targets()))
    finally:
        ref.eval()
    assert set(losses[0]) == set(losses[1]) and len(losses[0]) >= 2
    for k in losses[0]:
        assert torch.allclose(losses[0][k], losses[1][k], rtol=1e-4, atol=1e-6), (k, losses[0][k], losses[1][k])


def test_pinned_parameter_counts_match_torchvision():
    # torchvision's weight metadata (models/detection): SSDLite 3,440,060; Faster R-CNN 19,386,354 with torchvision's
    # FrozenBatchNorm2d backbone (its convention when weights are loaded), 19,410,754 with BatchNorm2d
    count = mobilenets.count_params
    assert count(mobilenets.create_model("ssdlite320_mobilenetv3_large_100")) == 3_440_060
    for name in ("fasterrcnn_mobilenetv3_large_100_fpn", "fasterrcnn_mobilenetv3_large_100_320_fpn"):
        assert count(mobilenets.create_model(name, frozen_bn=True)) == 19_386_354
        assert count(mobilenets.create_model(name)) == 19_410_754


def test_real_coco_checkpoint_layout_loads(tmp_path):
    # torchvision's COCO checkpoints are state dicts of these very models (91 classes,
    # FrozenBatchNorm2d backbone: no num_batches_tracked): that layout loads strictly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    sd = {k: v for k, v in tv.state_dict().items() if not (k.startswith("backbone.body") and
                                                             k.endswith("num_batches_tracked"))}
    torch.save(sd, tmp_path / "coco.pth")
    m = mobilenets.create_model("fasterrcnn_mobilenetv3_large_100_320_fpn", pretrained=tmp_path / "coco.pth")
    assert m.num_classes == 91


def test_every_backbone_has_the_four_detectors():
    # every classification backbone but the families NOT_TASK_BACKBONES names (MobileNetV5), and why
    from mobilenets.models.registry import NOT_TASK_BACKBONES, task_backbones
    backbones = task_backbones()
    assert set(mobilenets.list_models(task="classification")) - set(backbones) == {
        n for n in mobilenets.list_models(task="classification") if mobilenets.get_entry(n).family in NOT_TASK_BACKBONES}
    det = set(mobilenets.list_models(task="detection"))
    for b in backbones:
        assert {f"ssdlite320_{b}", f"fasterrcnn_{b}_fpn", f"fasterrcnn_{b}_320_fpn", f"retinanet_{b}_fpn"} <= det
    assert len(det) == 4 * len(backbones)
    assert mobilenets.list_models("ssdlite*") == sorted(f"ssdlite320_{b}" for b in backbones)


SMOKE = ["mobilenetv1_025", "mobilenetv2_050", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium_075",
         "mobileformer_26m"]


@pytest.mark.parametrize("backbone", SMOKE)
@pytest.mark.parametrize("kind", ["ssdlite320_{}", "fasterrcnn_{}_320_fpn", "retinanet_{}_fpn"])
def test_detector_contract_on_every_family(kind, backbone):
    name = kind.format(backbone)
    kw = {"min_size": 256, "max_size": 320} if "retinanet" in name else {}
    torch.manual_seed(0)
    model = mobilenets.create_model(name, num_classes=5, **kw)
    images = [torch.rand(3, 256, 256), torch.rand(3, 200, 288)]
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images):
        assert set(o) == {"boxes", "labels", "scores"}
        assert o["boxes"].ndim == 2 and o["boxes"].shape[1] == 4
        assert o["boxes"].shape[0] == o["labels"].shape[0] == o["scores"].shape[0]
        if len(o["boxes"]):
            h, w = img.shape[1:]
            assert o["boxes"][:, 2].max() <= w + 1e-3 and o["boxes"][:, 3].max() <= h + 1e-3
            assert o["labels"].min() >= 1 and o["labels"].max() < 5
    model.train()
    losses = model(images, [{"boxes": torch.tensor([[10.0, 10.0, 90.0, 120.0]]), "labels": torch.tensor([2])},
                            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    body = model.backbone.body.body
    assert all(p.grad is not None for p in body.parameters() if p.requires_grad)


def test_ssdlite_cut_points_follow_torchvision_on_mnv3_and_fall_back_elsewhere():
    v3 = mobilenets.create_model("mobilenetv3_large_100")
    # torchvision: stage_indices [0, 2, 4, 7, 13, 16]; C4 = block 13's expansion, then the last conv
    assert units(v3) == [0, 2, 4, 7, 13, 16]
    assert ssdlite_taps(v3) == [("pre_stride", 13), ("out", 16)]
    det = mobilenets.create_model("ssdlite320_mobilenetv4_conv_small")
    assert det.backbone.out_channels[:2] == [576, 960]  # UIB 96 -> x6 expansion at stride 16
    mf = mobilenets.create_model("mobileformer_26m")
    kind, _ = ssdlite_taps(mf)[0]
    assert kind == "out"  # Mobile-Former downsamples in its first depthwise: the stride-16 map


def test_mobileformer_tokens_are_exposed_to_heads():
    det = mobilenets.create_model("ssdlite320_mobileformer_26m").eval()
    with torch.no_grad():
        maps, tokens = det.backbone.forward_with_tokens(torch.rand(1, 3, 320, 320))
    assert len(maps) == 6 and tokens.shape == (1, 3, 128)
    det = mobilenets.create_model("ssdlite320_mobilenetv4_conv_small").eval()
    with torch.no_grad():
        assert det.backbone.forward_with_tokens(torch.rand(1, 3, 320, 320))[1] is None


def test_pretrained_backbone_and_trainable_layers(tmp_path):
    cls = mobilenets.create_model("mobilenetv4_conv_small", num_classes=10)
    mobilenets.save_weights(cls, tmp_path / "cls.safetensors")
    det = mobilenets.create_model("fasterrcnn_mobilenetv4_conv_small_320_fpn", num_classes=11,
                                  pretrained_backbone=tmp_path / "cls.safetensors", trainable_backbone_layers=2)
    body = det.backbone.body.body
    assert torch.equal(body.stem.conv.weight, cls.stem.conv.weight)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())  # frozen, as torchvision
    trainable = {n.split(".")[:2][-1] for n, p in body.named_parameters() if p.requires_grad}
    assert not body.stem.conv.weight.requires_grad and trainable
    n_units = len(units(mobilenets.create_model("mobilenetv4_conv_small")))
    with pytest.raises(ValueError, match=f"0..{n_units}"):
        mobilenets.create_model("fasterrcnn_mobilenetv4_conv_small_fpn", pretrained_backbone=tmp_path / "cls.safetensors",
                                trainable_backbone_layers=n_units + 1)
    other = mobilenets.create_model("mobilenetv2_050")
    mobilenets.save_weights(other, tmp_path / "v2.safetensors")
    with pytest.raises(mobilenets.CheckpointError, match="not a checkpoint of the backbone mobilenetv4_conv_small"):
        mobilenets.create_model("ssdlite320_mobilenetv4_conv_small", pretrained_backbone=tmp_path / "v2.safetensors")


def test_detector_checkpoint_round_trip_and_mismatch(tmp_path):
    a = mobilenets.create_model("ssdlite320_mobilenetv2_050", num_classes=4).eval()
    torch.save(a.state_dict(), tmp_path / "det.pth")
    b = mobilenets.create_model("ssdlite320_mobilenetv2_050", num_classes=4, pretrained=tmp_path / "det.pth").eval()
    x = [torch.rand(3, 320, 320)]
    with torch.no_grad():
        assert torch.equal(a(x)[0]["scores"], b(x)[0]["scores"])
    with pytest.raises(mobilenets.CheckpointError, match="num_classes"):
        mobilenets.create_model("ssdlite320_mobilenetv2_050", num_classes=7, pretrained=tmp_path / "det.pth")


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="detection model"):
        mobilenets.create_model("ssdlite320_mobilenetv2_050", features_only=True)
    with pytest.raises(ValueError, match="fixed at 320x320"):
        mobilenets.create_model("ssdlite320_mobilenetv2_050", size=(300, 300))
    with pytest.raises(ValueError, match="MobileNetV3 option"):
        mobilenets.create_model("ssdlite320_mobilenetv2_050", reduced_tail=True)
    with pytest.raises(ValueError, match="no feature map at stride"):
        mobilenets.create_model("retinanet_mobilenetv4_conv_small_fpn", backbone_kwargs={"output_stride": 16})
    with pytest.raises(TypeError, match="did you mean box_score_thresh"):
        mobilenets.create_model("fasterrcnn_mobilenetv2_050_fpn", box_score_thres=0.3)


def test_cli_list_and_info_for_detectors(capsys):
    from mobilenets.cli import main
    assert main(["list", "ssdlite320_mobilenetv3_large_10*", "--task", "detection", "--json"]) == 0
    import json
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "ssdlite320_mobilenetv3_large_100", "family": "ssdlite",
                     "params_m": 3.44, "backbone": "mobilenetv3_large_100", "macs_m_320": pytest.approx(583.2, abs=1)}]
    assert main(["info", "ssdlite320_mobilenetv3_large_100"]) == 0
    out = capsys.readouterr().out
    assert "expansion of layer 13" in out and "672" in out and "3.440 M" in out
    assert main(["list", "nothing*", "--task", "detection"]) == 2


def _training_checkpoint(path, model, task, recipe_model, classes):
    """A checkpoint laid out as ``mobilenets train`` writes it (mobilenets.train.checkpoint)."""
    from mobilenets.train import Recipe
    sd = model.state_dict()
    torch.save({"state_dict": sd, "model": sd, "recipe": Recipe(task=task, model=recipe_model).to_dict(),
                "classes": classes, "mobilenets_meta": {"format": "mobilenets", "arch": recipe_model}}, path)
    return path


def test_a_checkpoint_of_another_task_says_what_it_is(tmp_path):
    # a detection training checkpoint as a classifier's pretrained= / a backbone's weights (what
    # --set pretrained= does when training a detector), and a classification one as a detector's
    # weights: the error names the checkpoint's task and model, not "unrecognised key layout"
    name = "ssdlite320_mobilenetv2_050"
    det = _training_checkpoint(tmp_path / "det.pt", mobilenets.create_model(name, num_classes=4), "detect", name,
                               ["__background__", "a", "b", "c"])
    cls = _training_checkpoint(tmp_path / "cls.pt", mobilenets.create_model("mobilenetv2_050", num_classes=3),
                               "classify", "mobilenetv2_050", ["a", "b", "c"])
    what = rf"{det}: this is a detection checkpoint of {name} \(mobilenets train --task detect\)"
    with pytest.raises(mobilenets.CheckpointError, match=what + ".*load a classification checkpoint") as e:
        mobilenets.create_model("mobilenetv2_050", pretrained=det)
    assert f"create_model('{name}', num_classes=4, pretrained='{det}')" in str(e.value)
    with pytest.raises(mobilenets.CheckpointError, match=what):
        mobilenets.create_model(name, num_classes=4, pretrained_backbone=det)
    with pytest.raises(mobilenets.CheckpointError, match=f"state dict: this is a detection checkpoint of {name}"):
        mobilenets.create_model("mobilenetv2_050", pretrained=torch.load(det, weights_only=True))  # loaded by the user
    with pytest.raises(mobilenets.CheckpointError, match=rf"{cls}: this is a classification checkpoint of "
                                                         rf"mobilenetv2_050.*pretrained_backbone='{cls}'"):
        mobilenets.create_model(name, num_classes=4, pretrained=cls)
    # what each fits still loads
    mobilenets.create_model(name, num_classes=4, pretrained=det)
    mobilenets.create_model(name, num_classes=4, pretrained_backbone=cls)
    mobilenets.create_model("mobilenetv2_050", num_classes=3, pretrained=cls)


@pytest.mark.parametrize("name", ["ssdlite320_mobilenetv2_050", "fasterrcnn_mobilenetv2_050_320_fpn",
                                  "retinanet_mobilenetv2_050_fpn"])
def test_a_detector_in_train_mode_without_targets_says_to_call_eval(name):
    model = mobilenets.create_model(name, num_classes=3)   # train mode, as every nn.Module is built
    with pytest.raises(ValueError, match=r"in training mode.*call model\.eval\(\) for detections.*or pass targets"):
        model([torch.rand(3, 64, 80)])
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        model(images=[torch.rand(3, 64, 80)])
    assert list(model.eval()([torch.rand(3, 64, 80)])[0]) != []   # inference as before
    model.train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([1])}
    if name.startswith("ssdlite"):   # one image: BatchNorm over its 1x1 maps cannot train
        with pytest.raises(ValueError, match="batches of at least 2 images"):
            model([torch.rand(3, 64, 80)], [target])
    losses = model([torch.rand(3, 64, 80)] * 2, [target] * 2)
    assert set(losses) and all(torch.isfinite(v) for v in losses.values())
