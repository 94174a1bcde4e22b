"""The dataset writers (mobilenets.data.writers): the files they wrote before the numpy /
worker-process rewrite, byte for byte, with or without workers; YOLO labels that the library's
own reader reads back without clipping."""

import io
import json
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import (DataWarning, DigitScenes, SceneSegmentation, YoloDetection, voc_colormap,
                                   write_coco, write_voc, write_yolo)
from mobilenets.data.writers import _yolo_extent


# --- the writers' per-item work as it was (torch ops), the reference ------------------------------
def _old_png(image: torch.Tensor) -> bytes:
    a = (image.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="png", compress_level=6)
    return buf.getvalue()


def _old_rle(mask: torch.Tensor) -> dict:
    h, w = mask.shape
    flat = mask.t().reshape(-1).to(torch.int8)
    change = (flat[1:] != flat[:-1]).nonzero()[:, 0] + 1
    bounds = torch.cat([torch.tensor([0]), change, torch.tensor([flat.numel()])])
    counts = (bounds[1:] - bounds[:-1]).tolist()
    if flat.numel() and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": counts}


def _old_annotations(items) -> list:
    anns = []
    for i, (_, t) in enumerate(items):
        for k, ((x1, y1, x2, y2), label) in enumerate(zip(t["boxes"].double().tolist(), t["labels"].tolist())):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": label,
                         "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                         "area": int(t["masks"][k].bool().sum()), "iscrowd": 0,
                         "segmentation": _old_rle(t["masks"][k])})
    return anns


def _old_mask_png(mask: torch.Tensor) -> bytes:
    colors = SceneSegmentation.colors
    palette = [v for c in colors for v in c] + [v for c in voc_colormap(256)[len(colors):] for v in c]
    im = Image.fromarray(mask.to(torch.uint8).numpy())
    im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="png", optimize=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def scenes():
    ds = DigitScenes("val", num_images=5)
    return ds, [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("workers", [0, 2])
def test_coco_files_are_the_old_ones(workers, scenes, tmp_path):
    ds, items = scenes
    ann = write_coco(ds, tmp_path, "val", workers=workers)
    for i, (image, _) in enumerate(items):
        assert (tmp_path / "images" / "val" / f"{i:06d}.png").read_bytes() == _old_png(image), i
    doc = json.loads(ann.read_text())
    assert doc["annotations"] == _old_annotations(items)
    assert doc["images"] == [{"id": i, "file_name": f"{i:06d}.png", "width": 320, "height": 320} for i in range(5)]
    assert doc["info"]["description"] == "DigitScenes val, written by mobilenets"


@pytest.mark.parametrize("workers", [0, 2])
def test_yolo_files_are_the_old_ones(workers, scenes, tmp_path):
    ds, items = scenes
    write_yolo(ds, tmp_path, "val", workers=workers)
    for i, (image, t) in enumerate(items):
        assert (tmp_path / "images" / "val" / f"{i:06d}.png").read_bytes() == _old_png(image), i
        old = "".join(f"{lab - 1} {(x1 + x2) / 640:.6f} {(y1 + y2) / 640:.6f} {(x2 - x1) / 320:.6f} "
                      f"{(y2 - y1) / 320:.6f}\n"
                      for (x1, y1, x2, y2), lab in zip(t["boxes"].double().tolist(), t["labels"].tolist()))
        assert (tmp_path / "labels" / "val" / f"{i:06d}.txt").read_text() == old  # no box on the border here


@pytest.mark.parametrize("workers", [0, 2])
def test_voc_files_are_the_old_ones(workers, tmp_path):
    ds = SceneSegmentation("val", num_images=4)
    write_voc(ds, tmp_path, "val", workers=workers)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert (tmp_path / "JPEGImages" / "val" / f"{i:06d}.png").read_bytes() == _old_png(image), i
        assert (tmp_path / "SegmentationClass" / "val" / f"{i:06d}.png").read_bytes() == _old_mask_png(mask), i
    assert (tmp_path / "ImageSets" / "Segmentation" / "val.txt").read_text() == "".join(
        f"val/{i:06d}\n" for i in range(4))


class _Some(torch.utils.data.Dataset):
    """Some items of a dataset, re-indexed (and a label that may be broken)."""

    classes = DigitScenes.classes

    def __init__(self, ds, indices, bad_label_at=None):
        self.ds, self.indices, self.bad = ds, indices, bad_label_at

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        image, t = self.ds[self.indices[i]]
        if i == self.bad:
            t = {**t, "labels": t["labels"] + 20}
        return image, t


def test_yolo_boxes_on_the_border_read_back_unclipped(tmp_path):
    # val 461 and 481 are the two default val scenes whose labels, written as they were
    # (centre and size rounded separately), put an edge 5e-7 outside the image
    ds = DigitScenes("val")
    some = _Some(ds, [461, 481, 0])
    write_yolo(some, tmp_path, "val", workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        back = YoloDetection(tmp_path, split="val")
    assert back.issues.get("clipped_boxes", 0) == 0 and len(back) == 3
    for i in range(3):
        want = some[i][1]
        got = back[i][1]
        assert torch.equal(got["labels"], want["labels"])
        assert torch.allclose(got["boxes"], want["boxes"], rtol=0, atol=320 * 2.5e-6)  # 6 decimals, 1-2 steps
    for line in (tmp_path / "labels" / "val" / "000000.txt").read_text().splitlines():
        assert all(0.0 <= float(v) <= 1.0 for v in line.split()[1:])


def test_yolo_extent_rounds_into_the_image():
    assert _yolo_extent(251, 320, 320) == ("0.892188", "0.215624")  # was 0.215625: edge 1.0000005
    rng = random.Random(0)
    for _ in range(20000):
        size = rng.choice([1, 3, 7, 96, 320, 333, 640, 4000])
        lo = rng.randint(0, size - 1) if rng.random() < 0.5 else 0
        hi = size if rng.random() < 0.5 else rng.randint(lo + 1, size)
        c, e = _yolo_extent(lo, hi, size)
        c, e = float(c), float(e)
        assert 0 <= c - e / 2 and c + e / 2 <= 1 and 0 < e <= 1, (lo, hi, size)
        assert abs(c - (lo + hi) / 2 / size) <= 5.1e-7 and -3e-6 <= e - (hi - lo) / size <= 5.1e-7, (lo, hi, size)


def test_worker_errors_and_bad_workers(tmp_path):
    ds = DigitScenes("val", num_images=3)
    with pytest.raises(ValueError, match="write_yolo: image 1 has label .*outside 1..10"):
        write_yolo(_Some(ds, [0, 1, 2], bad_label_at=1), tmp_path, "val", workers=2)
    assert not (tmp_path / "images" / "val").exists()  # nothing half written
    with pytest.raises(ValueError, match=r"workers must be an int >= 0 \(0: write in this process\), got -1"):
        write_coco(ds, tmp_path, "val", workers=-1)


def test_cli_counts_and_names_what_it_wrote(tmp_path, capsys):
    from mobilenets.cli import main
    want = sum(len(DigitScenes("train", size=64, num_images=6)[i][1]["labels"]) for i in range(6))
    assert main(["data", "digit-scenes", "--format", "coco", "--out", str(tmp_path / "c"), "--train-images", "6",
                 "--val-images", "0", "--input-size", "64", "--workers", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["boxes"] == want
    doc = json.loads((tmp_path / "c" / "annotations" / "instances_train.json").read_text())
    assert doc["info"]["description"] == "DigitScenes train, written by mobilenets"  # was "_Counting train"
    pixels = sum(int(((m > 0) & (m < 11)).sum()) for _, m in (SceneSegmentation("val", size=64, num_images=3)[i]
                                                                for i in range(3)))
    assert main(["data", "digit-scenes", "--format", "voc", "--out", str(tmp_path / "v"), "--train-images", "0",
                 "--val-images", "3", "--input-size", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"]["pixels"] == pixels
    assert main(["data", "digit-scenes", "--format", "yolo", "--out", str(tmp_path / "y"), "--workers", "-1"]) == 2
    assert "--workers must be >= 0 (0: write in this process), got -1" in capsys.readouterr().err


class _OldScenes(DigitScenes):
    """DigitScenes with its background computed as it was: the canvas as three broadcast
    products over all of it (then the same strokes and blobs)."""

    def _background(self, g):
        from mobilenets.data.scenes import _hat_weights, _randint
        h, w = self.size
        base = (0.06 + 0.2 * torch.rand(3, generator=g)).numpy()
        field = ((torch.rand(3, 3, 3, generator=g) - 0.5) * 2 * (0.06 * self.noise)).numpy()
        wy, wx = _hat_weights(h), _hat_weights(w)
        rows = np.einsum("cij,yi->cyj", field, wy)
        image = base[:, None, None] + rows[:, :, None, 0] * wx[None, None, :, 0]
        for j in (1, 2):
            image += rows[:, :, None, j] * wx[None, None, :, j]
        image = image.astype(np.float32)
        if self.noise <= 0:
            return np.clip(image, 0, 1, out=image)
        for _ in range(_randint(g, 0, 6)):
            self._stroke(image, g)
        for _ in range(_randint(g, 0, 4)):
            self._blob(image, g)
        return image


@pytest.mark.parametrize("kw", [{}, {"size": (96, 129)}, {"size": (24, 8), "digit_size": (8, 8)},
                                {"size": (8, 41), "digit_size": (8, 8), "noise": 6.0}, {"noise": 0.0},
                                {"split": "train", "seed": 3, "color": False}])
def test_scenes_are_drawn_as_before(kw):
    kw = {"split": "val", **kw}
    new, old = DigitScenes(num_images=6, **kw), _OldScenes(num_images=6, **kw)
    for i in range(6):
        a, b = new.generate(i), old.generate(i)
        assert torch.equal(a[0], b[0]), i
        assert torch.equal(a[1]["boxes"], b[1]["boxes"]) and torch.equal(a[1]["masks"], b[1]["masks"])
