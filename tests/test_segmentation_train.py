"""Segmenters on the shared training loop (--task segment): exact resume, DDP, the CLI (train,
eval, predict, export), mIoU from one confusion matrix over the whole set, ONNX export checked
in ONNX Runtime."""

import json

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.train import Recipe
from mobilenets.train.loop import train
from test_train import metrics as _metrics, spawn_ddp, train_and_resume_from_epoch_1
from mobilenets.tasks.segmentation.training import evaluate_segmenter, segmentation_loss

pytest.importorskip("torchmetrics")


def tiny(**kw) -> Recipe:
    base = dict(task="segment", model="lraspp_mobilenetv4_conv_small_035", dataset="digit-scenes",
                img_size=96, epochs=2, batch_size=4, scene_images=12, scene_val_images=4, opt="sgd", lr=0.02,
                weight_decay=1e-5, sched="poly", warmup_epochs=0.5, hflip=0.0, label_smoothing=0.0, seed=5)
    base.update(kw)
    return Recipe(**base)


def test_segmentation_run_resumes_exactly(tmp_path, monkeypatch):
    r = tiny(ema_decay=0.9, model="deeplabv3_mobilenetv4_conv_small_035", model_kwargs={"aux_loss": True})
    full, resumed = train_and_resume_from_epoch_1(r, tmp_path, monkeypatch)
    row = full.history[-1]
    assert {"val_miou", "val_pixel_acc", "val_loss", "ema_val_miou", "train_loss"} <= set(row)
    assert "train_top1" not in row and 0.0 <= row["val_miou"] <= 1.0 and row["val_n"] == 4
    assert full.model.aux_loss  # model_kwargs reached the builder
    summary = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert summary["task"] == "segment" and summary["best_metric"] == "miou"
    assert _metrics(resumed.history) == _metrics(full.history)
    sa, sb = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_is_torchvisions_criterion():
    g = torch.Generator().manual_seed(0)
    out = {"out": torch.randn(2, 4, 8, 8, generator=g), "aux": torch.randn(2, 4, 8, 8, generator=g)}
    y = torch.randint(0, 4, (2, 8, 8), generator=g)
    y[0, :3] = 255  # ignored
    ce = torch.nn.functional.cross_entropy
    want = ce(out["out"], y, ignore_index=255) + 0.5 * ce(out["aux"], y, ignore_index=255)
    assert torch.allclose(segmentation_loss(out, y, 0.5), want)
    assert torch.allclose(segmentation_loss({"out": out["out"]}, y), ce(out["out"], y, ignore_index=255))


class _Fixed(torch.nn.Module):
    """A 'model' that returns given logits for each batch in order."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.i = logits, 0

    def forward(self, x):
        out = self.logits[self.i]
        self.i += 1
        return {"out": out}


def _confusion_miou(preds, targets, c):
    """The reference definition (torchvision's references ConfusionMatrix): one matrix over all
    pixels, IoU per class, mean over the classes that occur in labels or predictions."""
    cm = np.zeros((c, c), dtype=np.int64)
    for p, t in zip(preds, targets):
        keep = t != 255
        np.add.at(cm, (t[keep], p[keep]), 1)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()), float(inter.sum() / cm.sum())


def test_miou_is_one_confusion_matrix_over_the_whole_set_and_absent_classes_do_not_count():
    g = torch.Generator().manual_seed(3)
    c = 5  # class 4 occurs nowhere: it must not enter the mean as 0
    targets = [torch.randint(0, 4, (2, 6, 7), generator=g) for _ in range(3)]
    targets[0][0, 0] = 255
    # batches of very different agreement: a per-batch mean of mIoUs differs from the whole-set one
    preds = [t.clone() for t in targets]
    preds[0][preds[0] != 255] = 0
    preds[2] = torch.randint(0, 4, preds[2].shape, generator=g)
    logits = [torch.nn.functional.one_hot(p.clamp(max=c - 1), c).permute(0, 3, 1, 2).float() for p in preds]
    loader = list(zip([torch.zeros(2, 3, 6, 7)] * 3, targets))
    res = evaluate_segmenter(_Fixed(logits), loader, c)
    want, acc = _confusion_miou([p.numpy() for p in preds], [t.numpy() for t in targets], c)
    assert res["miou"] == pytest.approx(want, abs=1e-6) and res["pixel_acc"] == pytest.approx(acc, abs=1e-6)
    assert res["per_class"][4] is None and res["n"] == 6
    per_batch = np.mean([_confusion_miou([p.numpy()], [t.numpy()], c)[0] for p, t in zip(preds, targets)])
    assert abs(per_batch - want) > 0.01  # the pitfall the issue warns about is really avoided
    # counting the absent class as IoU 0 (a mean over all 5) would give another, lower figure
    naive = sum(v or 0.0 for v in res["per_class"]) / c
    assert res["miou"] - naive > 0.05


def test_segmentation_recipe_checks():
    with pytest.raises(ValueError, match="for task 'segment'"):
        tiny(dataset="digits").validate()
    with pytest.raises(ValueError, match="needs data_dir"):
        tiny(dataset="folder").validate()
    with pytest.raises(ValueError, match="needs a segmentation model"):
        train(tiny(model="ssdlite320_mobilenetv2_050"), "/tmp/never", progress=False)
    with pytest.raises(ValueError, match="poly_power"):
        tiny(poly_power=0).validate()


def test_poly_schedule():
    from mobilenets.train.optim import LRSchedule
    s = LRSchedule(tiny(lr=0.1, epochs=10, warmup_epochs=0, poly_power=0.9), steps_per_epoch=10)
    assert s(0) == pytest.approx(0.1) and s(50) == pytest.approx(0.1 * 0.5 ** 0.9) and s(100) == 0.0


def test_cli_train_eval_predict_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "segment", "--model", "lraspp_mobilenetv4_conv_small_035",
                 "--set", "scene_images=8", "--set", "scene_val_images=4", "--set", "epochs=1",
                 "--input-size", "96", "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "final val mIoU" in text and (out / "best.pt").exists() and (out / "curves.png").exists()

    assert main(["eval", str(out / "best.pt")]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "(4 images)" in text and "__background__" in text
    from mobilenets.tasks.segmentation.infer import eval_segmenter_checkpoint
    assert main(["eval", str(out / "best.pt"), "--input-size", "64"]) == 0  # the same scenes, resized
    assert "(4 images at 64px)" in capsys.readouterr().out
    low = eval_segmenter_checkpoint(out / "best.pt", img_size=64)
    assert low["n"] == 4 and low != eval_segmenter_checkpoint(out / "best.pt")

    from mobilenets.data import read_rgb
    from mobilenets.data import DigitScenes
    from torchvision.utils import save_image
    img = tmp_path / "scene.png"
    save_image(DigitScenes("val", size=(150, 200), num_images=1)[0][0], img)
    assert main(["predict", str(out / "best.pt"), str(img), "--out-dir", str(tmp_path / "pred")]) == 0
    assert "__background__" in capsys.readouterr().out
    drawn = read_rgb(tmp_path / "pred" / "scene_segmentation.png")
    assert drawn.shape[1] == 150 and drawn.shape[2] > 200  # the original size, plus the legend strip
    # an unreadable image: one line naming it, the next image still segmented, exit code 2
    (tmp_path / "broken.png").write_bytes(b"not a png")
    save_image(DigitScenes("val", size=(96, 96), num_images=2)[1][0], tmp_path / "later.png")
    assert main(["predict", str(out / "best.pt"), str(tmp_path / "broken.png"), str(tmp_path / "later.png"),
                 "--out-dir", str(tmp_path / "pred")]) == 2
    res = capsys.readouterr()
    assert "broken.png: cannot read the image" in res.err and "1 of 2 image(s) could not be read" in res.err
    assert f"{tmp_path / 'later.png'}: __background__" in res.out
    assert (tmp_path / "pred" / "later_segmentation.png").exists()

    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "seg.onnx")]) == 0
    assert "checked with ONNX Runtime" in capsys.readouterr().out and (tmp_path / "seg.onnx").exists()
    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "q.onnx"), "--int8", "--calib", "fake"]) == 2


@pytest.mark.parametrize("name,kw", [("deeplabv3_mobilenetv3_large_100", {"aux_loss": True}),
                                     ("lraspp_mobileformer_26m", {})])
def test_onnx_export_matches_eager_and_refuses_a_wrong_graph(name, kw, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from conftest import randomize_bn
    from mobilenets.deploy import export_onnx, ort_session

    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name, num_classes=6, **kw), calib_size=(160, 192)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(160, 192))
    x = torch.randn(1, 3, 160, 192)
    outs = ort_session(path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert len(outs) == len(ref)
    for o, (k, r) in zip(outs, ref.items()):
        assert float(np.abs(o - r.numpy()).max() / r.abs().max()) <= 1e-4, k
    # the verification refuses a graph that computes something else, and leaves no file
    import mobilenets.deploy.mobile as driver  # the export driver swaps in the export forms
    real = driver.swap_for_export

    def broken(net, **kw):
        net = real(net, **kw)
        with torch.no_grad():
            net.classifier.low_classifier.bias.add_(1.0) if hasattr(net.classifier, "low_classifier") \
                else net.classifier[-1].bias.add_(1.0)
        return net

    monkeypatch.setattr(driver, "swap_for_export", broken)
    with pytest.raises(RuntimeError, match="differs from eager"):
        export_onnx(model, tmp_path / "bad.onnx", input_size=(160, 192))
    assert not (tmp_path / "bad.onnx").exists()


def test_ddp_segmentation_identical_replicas_and_whole_set_miou(tmp_path):
    from mobilenets.tasks.segmentation.infer import load_segmenter_checkpoint
    from mobilenets.tasks.segmentation.task import SegmentationTask
    from mobilenets.tasks.segmentation.training import Normalize
    r = tiny(epochs=1, scene_images=8, scene_val_images=6)
    a, _ = spawn_ddp(tmp_path, r)  # the classification DDP test's workers; identical replicas checked
    row = a["history"][-1]
    assert row["val_n"] == 6  # both ranks' validation shards, each image once
    # the mIoU of the sharded evaluation (states summed over ranks) is the whole-set mIoU
    model, info = load_segmenter_checkpoint(tmp_path / "last.pt")
    data = SegmentationTask().build_data(r)
    loader = torch.utils.data.DataLoader(data.val, batch_size=4, collate_fn=SegmentationTask.collate_fn)
    whole = evaluate_segmenter(model, loader, len(info["classes"]), Normalize(r.mean, r.std))
    assert whole["n"] == 6 and abs(whole["miou"] - row["val_miou"]) <= 1e-6, (whole["miou"], row["val_miou"])


def test_crop_size_sets_the_training_crop_and_keeps_the_eval_size():
    from mobilenets.tasks.segmentation.task import SegmentationTask
    from mobilenets.train import apply_overrides
    r = apply_overrides(tiny(img_size=128, scene_images=2, scene_val_images=1), ["crop_size=64"])
    data = SegmentationTask().build_data(r)
    assert data.train[0][0].shape == (3, 64, 64) and data.train[0][1].shape == (64, 64)
    assert data.val[0][0].shape == (3, 128, 128)
    with pytest.raises(ValueError, match="crop_size must be >= 32"):
        tiny(crop_size=16).validate()
    with pytest.raises(ValueError, match="seg_scale must be"):
        tiny(seg_scale=(2.0, 1.0)).validate()
    with pytest.raises(ValueError, match="crop_size: expected an integer"):
        apply_overrides(r, ["crop_size=2.5"])


def test_input_size_caps_the_recipes_crop(capsys):
    """digit_scenes_seg crops 192 px of its 320 px scenes; --input-size below the crop trains on
    crops of that size (not on crops padded with the ignore label), above it keeps the crop, and
    an explicit crop_size wins."""
    from mobilenets.cli.train import main as train_main

    def recipe(*argv):
        assert train_main(["train", "--task", "segment", *argv, "--print-recipe"]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {k: v for k, _, v in (ln.partition(" = ") for ln in lines)}

    assert recipe()["crop_size"] == "192" and recipe()["img_size"] == "320"
    assert recipe("--input-size", "96")["crop_size"] == "96"
    assert recipe("--input-size", "520")["crop_size"] == "192"
    assert recipe("--input-size", "96", "--set", "crop_size=64")["crop_size"] == "64"
