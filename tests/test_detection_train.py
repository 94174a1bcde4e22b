"""Detectors on the shared training loop (--task detect): exact resume, the CLI (train, eval,
predict, export), mAP from torchmetrics, ONNX export with NMS checked in ONNX Runtime."""

import json
import re

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

    assert main(["eval", str(out / "best.pt"), "--no-progress"]) == 0   # accepted, as train accepts it
    text = capsys.readouterr().out
    assert "mAP50" in text and "(4 images)" in text

    from mobilenets.data import DigitScenes
    from torchvision.utils import save_image
    img = tmp_path / "scene.png"
    save_image(DigitScenes("val", size=(150, 200), num_images=1)[0][0], img)
    assert main(["predict", str(out / "best.pt"), str(img), "--score-thresh", "0.0", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "scene_detections.png").exists()
    from mobilenets.data import read_rgb
    assert read_rgb(tmp_path / "scene_detections.png").shape == (3, 150, 200)  # drawn on the original
    capsys.readouterr()

    # one unreadable image among readable ones: each readable one is still predicted and drawn, the
    # bad ones get one line each naming the file and the cause, and the exit code says some failed
    (tmp_path / "broken.png").write_bytes(b"not a png")
    save_image(DigitScenes("val", size=(120, 120), num_images=2)[1][0], tmp_path / "later.png")
    argv = ["predict", str(out / "best.pt"), str(img), str(tmp_path / "broken.png"), str(tmp_path / "missing.jpg"),
            str(tmp_path / "later.png"), "--out-dir", str(tmp_path / "pred"), "--score-thresh", "1.0"]
    assert main(argv) == 2
    res = capsys.readouterr()
    assert all((tmp_path / "pred" / f"{n}_detections.png").exists() for n in ("scene", "later"))
    errors = res.err.splitlines()
    assert len(errors) == 3 and "broken.png: cannot read the image" in errors[0] and "missing.jpg" in errors[1]
    assert "2 of 4 image(s) could not be read" in errors[2]
    # nothing reaches the threshold: said, with the best score the model gave
    lines = [ln for ln in res.out.splitlines() if ln.startswith(str(img))]
    assert len(lines) == 1 and "0 detections >= 1.00 (best score 0." in lines[0] and "lower --score-thresh" in lines[0]

    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "det.onnx")]) == 0
    assert "decode + NMS in the graph" in capsys.readouterr().out and (tmp_path / "det.onnx").exists()
    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "q.onnx"), "--int8", "--calib", "fake"]) == 2


@pytest.mark.slow
def test_cli_mobile_detector_export_and_eval(tmp_path, capsys):
    """The SSD's network for ExecuTorch (decode + NMS on the host): fp32, `eval --file` gives the
    checkpoint's own metrics (the same detections); INT8 calibrated on digit-scenes exports and is
    evaluated the same way; bad calibration sources and ONNX detector files are refused."""
    pytest.importorskip("executorch.exir")
    out = tmp_path / "run"
    train(tiny(epochs=1, scene_images=8), out, progress=False, log=lambda s: None)
    ck = str(out / "best.pt")
    assert main(["export", ck, "--format", "executorch", "--out", str(tmp_path / "det.pte")]) == 0
    text = capsys.readouterr().out
    assert "outputs bbox_regression, cls_logits" in text and "every op in XNNPACK" in text
    assert main(["eval", ck, "--file", str(tmp_path / "det.pte"), "--no-progress"]) == 0
    file_line = capsys.readouterr().out.splitlines()[0]
    assert main(["eval", ck, "--no-progress"]) == 0
    eager_line = capsys.readouterr().out.splitlines()[0]
    assert "(ExecuTorch, exported from" in file_line
    assert file_line.split(": mAP", 1)[1] == eager_line.split(": mAP", 1)[1]  # every metric, to 4 decimals
    assert main(["export", ck, "--format", "executorch", "--int8", "--calib", "digit-scenes",
                 "--calib-count", "4", "--out", str(tmp_path / "q.pte")]) == 0
    assert re.search(r"INT8 \(PT2E static, per-channel weights, auto: (mse|average)(; [^();]+ (mse|average|minmax))* "
                     r"\(output error mse [\d.e+-]+, average [\d.e+-]+(; mixed [\d.e+-]+)?\) ranges, calibrated on 4 "
                     r"images from digit-scenes\)", capsys.readouterr().out)
    assert main(["eval", ck, "--file", str(tmp_path / "q.pte"), "--no-progress"]) == 0
    assert "mAP50" in capsys.readouterr().out
    assert main(["eval", ck, "--file", str(tmp_path / "det.onnx")]) == 2  # refused by its suffix, before reading
    assert "an ONNX detector file has decode + NMS in its graph" in capsys.readouterr().err
    assert main(["export", ck, "--format", "executorch", "--int8", "--calib", "digits",
                 "--out", str(tmp_path / "b.pte")]) == 2
    assert "detector calibration data must be one of digit-scenes, fake or an image folder; got 'digits'" in \
        capsys.readouterr().err


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
    # the file's outputs, in this order for every family (torchvision's SSD / RetinaNet dicts are
    # boxes, scores, labels; Faster R-CNN's boxes, labels, scores)
    import onnx
    from onnx import TensorProto
    outputs = onnx.load(str(path)).graph.output
    assert [(o.name, o.type.tensor_type.elem_type) for o in outputs] == [
        ("boxes", TensorProto.FLOAT), ("labels", TensorProto.INT64), ("scores", TensorProto.FLOAT)]
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
    from mobilenets.tasks.detection.task import DetectionTask
    from mobilenets.tasks.detection.training import evaluate_detector
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


def test_a_320_detector_trains_and_exports_at_320(capsys):
    # --recipe fasterrcnn is sized for its own model (800); the _320_fpn model given with --model
    # trains at its own 320 (torchvision's min_size 320, max_size 640), unless a size is given
    from mobilenets.tasks.detection.models import native_size
    from mobilenets.tasks.detection.task import DetectionTask
    from mobilenets.train.recipe import Recipe

    def resolved(*extra):
        assert main(["train", "--task", "detect", "--recipe", "fasterrcnn", "--data", "digit-scenes", "--print-recipe",
                     "--model", "fasterrcnn_mobilenetv4_conv_small_320_fpn", *extra]) == 0
        lines = dict(ln.split(" = ", 1) for ln in capsys.readouterr().out.splitlines())
        return Recipe(task=lines["task"], model=lines["model"], dataset=lines["dataset"],
                      img_size=int(lines["img_size"]))

    r = resolved()
    assert r.img_size == 320
    model = DetectionTask().build_model(r.replace(scene_images=2, scene_val_images=2), 11)
    assert model.transform.min_size == (320,) and model.transform.max_size == 640 == 2 * r.img_size
    image = DetectionTask().build_data(r.replace(scene_images=2, scene_val_images=2)).train[0][0]
    assert tuple(image.shape) == (3, 320, 320)   # the size the model sees: no resize inside it
    assert resolved("--input-size", "512").img_size == 512 and resolved("--set", "img_size=400").img_size == 400
    # the recipe's own model keeps its 800; export of a registry name uses the model's own size
    assert main(["train", "--task", "detect", "--recipe", "fasterrcnn", "--data", "x", "--print-recipe"]) == 0
    assert "img_size = 800" in capsys.readouterr().out
    assert native_size("fasterrcnn_mobilenetv4_conv_small_320_fpn") == 320
    assert native_size("fasterrcnn_mobilenetv4_conv_small_fpn") == 800 == native_size("retinanet_mobilenetv2_050_fpn")
    assert native_size("ssdlite320_mobilenetv2_050") == 320


def test_drawn_detections_one_colour_per_class_and_tags_never_overlap():
    from mobilenets.tasks.detection.infer import class_color, draw_detections, place_labels
    assert class_color(1) != class_color(2) and class_color(1) == class_color(21)   # a fixed palette
    image = torch.zeros(3, 100, 160, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 30.0, 60.0, 80.0], [12.0, 32.0, 62.0, 82.0], [100.0, 20.0, 150.0, 90.0]])
    from torchvision.transforms.v2.functional import pil_to_tensor
    drawn = pil_to_tensor(draw_detections(image, boxes, [1, 2, 1], ["a 0.90", "b 0.80", "a 0.70"], [0.9, 0.8, 0.7]))
    assert tuple(drawn[:, 55, 10].tolist()) == class_color(1)    # left edges of the first two boxes
    assert tuple(drawn[:, 60, 12].tolist()) == class_color(2)
    assert tuple(drawn[:, 55, 149].tolist()) == class_color(1)   # the third box: class 1 again
    # two near-identical boxes: the second tag goes elsewhere; a box with no free place gets none
    places = place_labels(boxes.tolist(), [(40, 14)] * 3, [0.9, 0.8, 0.7], (100, 160))
    assert places[0] == (10, 16, 50, 30) and places[1] == (12, 32, 52, 46)
    rects = [p for p in places if p is not None]
    assert all(not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
               for i, a in enumerate(rects) for b in rects[i + 1:])
    crowded = place_labels([[0.0, 0.0, 20.0, 20.0]] * 5, [(20, 20)] * 5, [0.5] * 5, (20, 20))
    assert crowded[0] is not None and crowded[1:] == [None] * 4


def test_eval_help_documents_data_for_every_task(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "detection (default: the run's validation data): digit-scenes | PATH to a COCO or YOLO folder" in text
    assert "segmentation (default: the run's validation data): digit-scenes | PATH to a VOC-style folder" in text
    assert "--no-progress" in text
