"""Detectors on the shared training loop (--task detect): exact resume, the CLI (train, eval,
predict, export), mAP from torchmetrics, ONNX export with NMS checked in ONNX Runtime."""

import json

import pytest
import torch

import mobilenets
from conftest import randomize_bn
from mobilenets.cli import main
from mobilenets.train import Recipe
from mobilenets.train.loop import train
from test_train import metrics as _metrics, spawn_ddp, train_and_resume_from_epoch_1

pytest.importorskip("torchmetrics")
pytest.importorskip("faster_coco_eval")


def tiny(**kw) -> Recipe:
    base = dict(task="detect", model="ssdlite320_mobilenetv4_conv_small_035", dataset="digit-scenes",
                img_size=128, epochs=2, batch_size=4, scene_images=12, scene_val_images=4, opt="sgd", lr=0.01,
                weight_decay=4e-5, warmup_epochs=0.5, hflip=0.0, label_smoothing=0.0, seed=5)
    base.update(kw)
    return Recipe(**base)


def test_detection_run_resumes_exactly(tmp_path, monkeypatch):
    r = tiny(ema_decay=0.9)
    full, resumed = train_and_resume_from_epoch_1(r, tmp_path, monkeypatch)
    row = full.history[-1]
    assert {"val_map", "val_map50", "val_map75", "ema_val_map", "train_loss"} <= set(row)
    assert "train_top1" not in row and 0.0 <= row["val_map"] <= 1.0
    summary = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert summary["task"] == "detect" and summary["best_metric"] == "map"
    assert _metrics(resumed.history) == _metrics(full.history)
    sa, sb = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_channels_last_detection_training(tmp_path):
    # the images are a list of CHW tensors (no channels_last layout of their own): the model's
    # weights carry the format, and the run trains and validates as with the default layout
    res = train(tiny(channels_last=True, epochs=1), tmp_path, progress=False, log=lambda s: None)
    assert 0.0 <= res.history[-1]["val_map"] <= 1.0 and res.history[-1]["train_loss"] > 0
    conv = next(m for m in res.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_detection_recipe_checks():
    with pytest.raises(ValueError, match="for task 'detect'"):
        tiny(dataset="digits").validate()
    with pytest.raises(ValueError, match="needs data_dir"):
        tiny(dataset="folder").validate()
    with pytest.raises(ValueError, match="needs a detection model"):
        train(tiny(model="mobilenetv2_050"), "/tmp/never", progress=False)


def test_cli_train_eval_predict_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "detect", "--model", "ssdlite320_mobilenetv4_conv_small_035",
                 "--set", "scene_images=8", "--set", "scene_val_images=4", "--set", "epochs=1",
                 "--input-size", "128", "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "final val mAP" in text and (out / "best.pt").exists() and (out / "curves.png").exists()

    assert main(["eval", str(out / "best.pt")]) == 0
    text = capsys.readouterr().out
    assert "mAP50" in text and "(4 images)" in text

    from mobilenets.tasks.data import DigitScenes
    from torchvision.utils import save_image
    img = tmp_path / "scene.png"
    save_image(DigitScenes("val", size=(150, 200), num_images=1)[0][0], img)
    assert main(["predict", str(out / "best.pt"), str(img), "--score-thresh", "0.0", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "scene_detections.png").exists()
    from mobilenets.data import read_rgb
    assert read_rgb(tmp_path / "scene_detections.png").shape == (3, 150, 200)  # drawn on the original

    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "det.onnx")]) == 0
    assert "decode + NMS in the graph" in capsys.readouterr().out and (tmp_path / "det.onnx").exists()
    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "q.onnx"), "--int8", "--calib", "fake"]) == 2


@pytest.mark.parametrize("name", ["ssdlite320_mobilenetv4_conv_small_050", "fasterrcnn_mobilenetv3_large_100_320_fpn",
                                  "ssdlite320_mobileformer_26m"])
def test_onnx_export_with_nms_matches_eager(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from mobilenets.tasks.detection.export import export_detector_onnx, verify_detector_onnx
    torch.manual_seed(0)
    kw = {"score_thresh": 0.2} if name.startswith("ssdlite") else {}
    model = mobilenets.create_model(name, num_classes=11, **kw)
    images = [torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    randomize_bn(model, calib=images)
    path = export_detector_onnx(model.eval(), tmp_path / "m.onnx", (320, 320), images=images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    # boxes within 1e-3 px of the eager model's (BatchNorm folded, NMS in the graph)
    assert verify_detector_onnx(path, model, images) <= 1e-3
    # a wrong graph is refused: the same file against a model with other weights
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    with pytest.raises(RuntimeError, match="differ|detections"):
        verify_detector_onnx(path, model, images)


def test_ddp_detection_identical_replicas_and_whole_set_map(tmp_path):
    from mobilenets.tasks.detection.infer import load_detector_checkpoint
    from mobilenets.tasks.detection.training import DetectionTask, evaluate_detector
    r = tiny(epochs=1, scene_images=8, scene_val_images=6)
    a, _ = spawn_ddp(tmp_path, r)  # the classification DDP test's workers; identical replicas checked
    row = a["history"][-1]
    assert row["val_n"] == 6  # both ranks' validation shards, each image once
    # the mAP of the sharded, gathered evaluation is the mAP over the whole validation set
    model, _ = load_detector_checkpoint(tmp_path / "last.pt")
    data = DetectionTask().build_data(r)
    loader = torch.utils.data.DataLoader(data.val, batch_size=4, collate_fn=DetectionTask.collate_fn)
    whole = evaluate_detector(model, loader)
    assert whole["n"] == 6 and abs(whole["map"] - row["val_map"]) <= 1e-6, (whole["map"], row["val_map"])


def test_model_kwargs_reach_the_detector_and_its_checkpoint(tmp_path):
    from mobilenets.train import apply_overrides
    from mobilenets.tasks.detection.infer import load_detector_checkpoint
    r = apply_overrides(tiny(epochs=1, scene_images=4, scene_val_images=2), ['model_kwargs={"anchor_ratios": [0.1, 0.5]}'])
    assert r.model_kwargs == {"anchor_ratios": [0.1, 0.5]}
    with pytest.raises(ValueError, match="expected a JSON object"):
        apply_overrides(r, ["model_kwargs=anchor_ratios"])
    res = train(r, tmp_path, progress=False)
    assert res.model.anchor_generator.scales[0] == pytest.approx(0.1)
    model, _ = load_detector_checkpoint(tmp_path / "best.pt")  # rebuilt with the same anchors
    assert model.anchor_generator.scales[0] == pytest.approx(0.1)
