"""ModelInfo: one frozen record of what a model is and how to feed it, set by create_model, replaced
by a training run's recipe, saved in checkpoints and ONNX files, read back by loading and predict."""

import dataclasses

import pytest
import torch
import torch.nn as nn

import mobilenets
from mobilenets import ModelInfo, model_info
from mobilenets.data import transform_for
from mobilenets.train import Recipe, load_checkpoint, train


def test_create_model_sets_the_record_for_every_task():
    m = mobilenets.create_model("mobilenetv3_small_050", num_classes=7)
    # the preprocessing is that of timm's default tag (mobilenetv3_small_050.lamb_in1k: bicubic,
    # ImageNet mean / std, 224, crop 0.875); a name timm lacks keeps the ModelInfo defaults
    assert model_info(m) == ModelInfo("mobilenetv3_small_050", "classification", "mobilenetv3", None, 3, 7,
                                      interpolation="bicubic")
    assert model_info(mobilenets.create_model("mobilenetv1_025")) == ModelInfo("mobilenetv1_025", family="mobilenetv1")
    det = model_info(mobilenets.create_model("ssdlite320_mobilenetv2_035", num_classes=5))
    assert (det.task, det.family, det.backbone, det.num_classes, det.img_size, det.crop_pct) == \
        ("detection", "ssdlite", "mobilenetv2_035", 5, (320, 320), 1.0)
    frcnn = model_info(mobilenets.create_model("fasterrcnn_mobilenetv2_035_320_fpn"))
    assert frcnn.img_size == (320, 320) and frcnn.family == "fasterrcnn"  # its transform's min_size
    seg = model_info(mobilenets.create_model("lraspp_mobilenetv2_035"))
    assert (seg.task, seg.backbone, seg.num_classes, seg.img_size) == ("segmentation", "mobilenetv2_035", 21, (520, 520))
    grey = model_info(mobilenets.create_model("mobilenetv2_035", in_chans=1, features_only=True))
    assert grey.in_chans == 1 and grey.input_size == (1, 224, 224) and grey.mean == (0.449,) and grey.std == (0.226,)


def test_the_record_is_frozen_and_checked():
    info = model_info(mobilenets.create_model("mobilenetv1_025"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 3
    with pytest.raises(ValueError, match="crop_pct must be in"):
        info.replace(crop_pct=1.5)
    with pytest.raises(ValueError, match=r"mean and std need one value per input channel \(3\)"):
        info.replace(mean=(0.5,))
    with pytest.raises(ValueError, match="task must be one of"):
        info.replace(task="classify")
    assert ModelInfo.from_dict({**info.to_dict(), "from_a_newer_version": 1}) == info


def test_a_foreign_module_gets_a_derived_record():
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    info = model_info(net)
    assert (info.name, info.in_chans, info.num_classes, info.input_size) == ("Sequential", 1, 5, (1, 224, 224))


def test_training_records_the_recipe_preprocessing_and_loading_restores_it(tmp_path):
    r = Recipe(model="mobilenetv3_small_050", dataset="fake", fake_samples=32, fake_classes=3, img_size=48,
               epochs=1, batch_size=16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), crop_pct=0.9, seed=0)
    res = train(r, tmp_path, progress=False)
    want = ModelInfo("mobilenetv3_small_050", family="mobilenetv3", num_classes=3, mean=(0.4, 0.5, 0.6),
                     std=(0.2, 0.3, 0.4), input_size=(3, 48, 48), crop_pct=0.9)
    assert model_info(res.model) == want
    assert ModelInfo.from_dict(load_checkpoint(tmp_path / "best.pt")["model_info"]) == want
    model, info = mobilenets.model_from_checkpoint(tmp_path / "best.pt")
    assert model_info(model) == want == info["model_info"]
    tf = transform_for(model_info(model))   # what predict feeds the model
    x = tf(torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8))
    assert x.shape == (3, 48, 48)
    # a checkpoint written before the record existed: the recipe says the same
    ck = load_checkpoint(tmp_path / "best.pt")
    del ck["model_info"]
    torch.save(ck, tmp_path / "old.pt")
    assert model_info(mobilenets.model_from_checkpoint(tmp_path / "old.pt")[0]) == want


def test_onnx_files_carry_the_record(tmp_path):
    pytest.importorskip("onnxruntime")
    from mobilenets.deploy import export_onnx, read_model_info

    model = mobilenets.create_model("mobilenetv2_035", num_classes=4).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(96, 128))
    assert read_model_info(path) == model_info(model).replace(input_size=(3, 96, 128))
