"""Detection data (mobilenets.data): the generated digit-scenes, the v2 augmentations,
COCO / YOLO writers and readers with their bad-input handling, and ``mobilenets data``."""

import argparse
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mobilenets.data import DIGITS_SPLIT_SEED, DIGITS_VAL_FRACTION, load_digits_tensors, stratified_split
from mobilenets.data import (CocoDetection, DataWarning, DigitScenes, YoloDetection, detection_collate,
                                   detection_transforms, open_detection_data, semantic_mask, write_coco,
                                   write_yolo)


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """xyxy pixel-edge boxes of (N, H, W) masks (x2 = last column + 1)."""
    out = []
    for m in masks.bool():
        rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
        out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _assert_same_item(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        va, vb = a[1][k], b[1][k]
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, k


@pytest.fixture(scope="module")
def val_items():
    ds = DigitScenes("val", num_images=24)
    return [ds[i] for i in range(len(ds))]


# --- DigitScenes ----------------------------------------------------------------------------------
def test_items_are_deterministic_per_index_and_seed():
    a, b = DigitScenes("train", num_images=50), DigitScenes("train", num_images=8)
    first = a[7]
    _assert_same_item(first, a[7])                       # same object, twice
    _assert_same_item(first, b[7])                       # another object, another length
    _assert_same_item(a[3], DigitScenes("train", num_images=5)[-2])  # negative index, same item
    assert len({a[i][0].sum().item() for i in range(20)}) == 20  # every item its own scene
    assert not torch.equal(first[0], DigitScenes("train", seed=1)[7][0])  # the seed matters
    assert not torch.equal(first[0], DigitScenes("val")[7][0])  # so does the split
    assert len(DigitScenes("train")) == 2000 and len(DigitScenes("val")) == 500
    with pytest.raises(IndexError):
        b[8]


def test_items_are_pinned_and_independent_of_the_global_rng():
    """Labels, boxes and masks are computed in integers from a seeded generator: these values
    hold on every machine (a change to the generator shows up here first)."""
    torch.manual_seed(123)
    _, t = DigitScenes("val")[0]
    torch.manual_seed(456)
    _assert_same_item(DigitScenes("val")[0], (_, t))
    assert t["labels"].tolist() == [7, 8, 4, 7]
    assert t["boxes"].int().tolist() == [[62, 115, 130, 198], [175, 240, 196, 268], [208, 180, 252, 254],
                                         [117, 64, 179, 158]]
    assert [int(m.sum()) for m in t["masks"]] == [3994, 363, 1950, 3587]
    image, t = DigitScenes("train", seed=3)[123]
    assert t["labels"].tolist() == [1, 1, 10, 3] and [int(m.sum()) for m in t["masks"]] == [383, 567, 257, 479]
    assert abs(image.mean().item() - 0.254) < 2e-3


def test_train_and_val_digits_never_mix():
    _, y = load_digits_tensors(8)
    train_idx, val_idx = (set(s) for s in stratified_split(y.tolist(), DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED))
    for split, allowed in (("train", train_idx), ("val", val_idx)):
        ds = DigitScenes(split, num_images=40)
        used = set()
        for i in range(len(ds)):
            src = ds.source_digits(i)
            labels = ds[i][1]["labels"]
            assert labels.tolist() == [int(y[s]) + 1 for s in src]  # the pasted digits are these
            used |= set(src)
        assert used <= allowed, f"{split} scenes use {len(used - allowed)} digits of the other split"
        assert len(used) > 60  # many distinct digits, not a handful repeated


@pytest.mark.parametrize("size", [320, (200, 256)])
def test_targets_are_exact_and_in_range(size):
    from torchvision.ops import box_iou

    ds = DigitScenes("train", size=size, num_images=30)
    h, w = (size, size) if isinstance(size, int) else size
    counts = set()
    for i in range(len(ds)):
        image, t = ds[i]
        n = len(t["labels"])
        counts.add(n)
        assert image.dtype == torch.float32 and image.shape == (3, h, w)
        assert image.min() >= 0 and image.max() <= 1
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (n, 4)
        assert t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
        assert t["masks"].shape == (n, h, w) and t["image_id"] == i
        assert 1 <= n <= 6
        assert ((t["labels"] >= 1) & (t["labels"] <= 10)).all()
        b = t["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert torch.equal(b, _mask_boxes(t["masks"]))  # tight around the mask
        side = (b[:, 2:] - b[:, :2]).max(1).values
        assert (side >= 16).all() and (side <= 128).all(), side
        iou = box_iou(b, b) - torch.eye(n)
        assert (iou < 0.3).all(), iou
        # the masks cover the digits: brighter than the background around them
        fg = t["masks"].bool().any(0)
        assert image[:, fg].mean() > image[:, ~fg].mean() + 0.2
        assert image[:, ~fg].mean() > 0.03 and image[:, ~fg].std() > 0.005  # not a black, flat canvas
    assert counts >= {1, 6}, counts  # the whole range occurs


def test_digit_sizes_span_the_range():
    sides = torch.cat([(t["boxes"][:, 2:] - t["boxes"][:, :2]).max(1).values
                       for _, t in (DigitScenes("val", num_images=60)[i] for i in range(60))])
    assert sides.min() < 32 and sides.max() > 100, (sides.min(), sides.max())


def test_semantic_mask_top_most_wins(val_items):
    masks = torch.zeros(2, 4, 5, dtype=torch.uint8)
    masks[0, :3, :3] = 1
    masks[1, 2:, 2:] = 1
    sem = semantic_mask({"masks": masks, "labels": torch.tensor([4, 9])})
    assert sem.dtype == torch.int64 and sem[2, 2] == 9 and sem[0, 0] == 4 and sem[0, 4] == 0
    assert sem[3, 4] == 9 and sem[1, 1] == 4
    _, t = val_items[0]
    sem = DigitScenes.semantic_mask(t)
    assert set(sem.unique().tolist()) == {0} | set(t["labels"].tolist())
    assert torch.equal(sem > 0, t["masks"].bool().any(0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'test'"):
        DigitScenes("test")
    with pytest.raises(ValueError, match="smaller than the smallest digit"):
        DigitScenes(size=16)
    with pytest.raises(ValueError, match="num_images must be >= 0"):
        DigitScenes(num_images=-1)


# --- transforms -----------------------------------------------------------------------------------
def _walk(t):
    yield t
    for child in getattr(t, "transforms", []) or []:
        yield from _walk(child)


def test_no_flip_in_the_pipelines():
    from torchvision.transforms import v2

    flips = (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)
    for train in (True, False):
        steps = list(_walk(detection_transforms(train)))
        assert len(steps) > 2
        assert not any(isinstance(s, flips) or "flip" in type(s).__name__.lower() for s in steps), steps
    names = {type(s).__name__ for s in _walk(detection_transforms(True))}
    assert {"RandomPhotometricDistort", "RandomZoomOut", "RandomIoUCrop", "Resize",
            "SanitizeBoundingBoxes"} <= names


def test_train_transforms_never_mirror():
    """An object whose mask is its box's left half (and one whose mask is the top half): a flip
    would move the mask's centroid across the box centre."""
    h, w = 120, 160
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, :, : w // 2] = 1
    masks[1, : h // 2, :] = 1
    target = {"boxes": torch.tensor([[0.0, 0, w, h]] * 2), "labels": torch.tensor([3, 5]), "masks": masks,
              "image_id": 0}
    tr = detection_transforms(True, size=96)
    torch.manual_seed(0)
    for _ in range(40):
        _, t = tr(torch.rand(3, h, w), target)
        assert t["labels"].tolist() == [3, 5]
        for k, axis in ((0, 0), (1, 1)):  # (instance, 0: x / 1: y)
            m = t["masks"][k].bool()
            coords = m.nonzero()[:, 1 - axis].float()
            lo, hi = t["boxes"][k, axis], t["boxes"][k, axis + 2]
            assert coords.mean() < (lo + hi) / 2 - 1, (k, coords.mean(), lo, hi)


def test_train_transforms_keep_targets_consistent():
    ds = DigitScenes("train", num_images=12, transforms=detection_transforms(True, size=160, fill=DigitScenes.mean))
    plain = DigitScenes("train", num_images=12)
    torch.manual_seed(0)
    dropped = 0
    for i in range(len(ds)):
        image, t = ds[i]
        n = len(t["boxes"])
        assert image.shape == (3, 160, 160) and type(t["boxes"]) is torch.Tensor
        assert t["boxes"].dtype == torch.float32 and t["labels"].shape == (n,) and t["masks"].shape == (n, 160, 160)
        b = t["boxes"]
        assert (b[:, 2:] > b[:, :2]).all() and b.min() >= 0 and b.max() <= 160
        # labels stay an in-order subsequence of the original ones (masks and boxes dropped with them)
        orig = iter(plain[i][1]["labels"].tolist())
        assert all(any(lab == o for o in orig) for lab in t["labels"].tolist())
        dropped += len(plain[i][1]["labels"]) - n
        for k in range(n):
            assert t["masks"][k].any(), "a kept box lost its mask"
            # nearest-neighbour masks vs exactly scaled boxes: within a (scaled) pixel or so
            assert (_mask_boxes(t["masks"][k:k + 1])[0] - b[k]).abs().max() <= 3.0, (i, k)
    assert dropped > 0  # the IoU crops did drop some boxes (so the checks above saw it)


def test_transforms_on_a_negative_and_val_resize():
    image = torch.rand(3, 100, 120)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 100, 120, dtype=torch.uint8), "image_id": 1}
    torch.manual_seed(0)
    for _ in range(5):
        out, t = detection_transforms(True, size=64)(image, empty)
        assert out.shape == (3, 64, 64) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    img, t = DigitScenes("val", num_images=1)[0]
    out, t2 = detection_transforms(False, size=(160, 80))(img, t)
    assert out.shape == (3, 160, 80)
    assert torch.allclose(t2["boxes"], t["boxes"] * torch.tensor([0.25, 0.5, 0.25, 0.5]), atol=1e-4)
    assert torch.equal(t2["labels"], t["labels"])


# --- writers and readers: round trips -------------------------------------------------------------
@pytest.fixture(scope="module")
def small_scenes():
    return DigitScenes("val", size=(96, 128), num_images=5)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory, small_scenes):
    out = tmp_path_factory.mktemp("coco")
    write_coco(small_scenes, out, "val")
    return out


@pytest.fixture(scope="module")
def yolo_dir(tmp_path_factory, small_scenes):
    out = tmp_path_factory.mktemp("yolo")
    write_yolo(small_scenes, out, "val")
    return out


def test_coco_round_trip(coco_dir, small_scenes):
    doc = json.loads((coco_dir / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in doc["categories"]] == [str(d) for d in range(10)]
    assert [c["id"] for c in doc["categories"]] == list(range(1, 11))
    assert len(doc["images"]) == 5 and all((coco_dir / "images" / "val" / im["file_name"]).is_file()
                                           for im in doc["images"])
    a = doc["annotations"][0]
    _, t0 = small_scenes[a["image_id"]]
    x1, y1, x2, y2 = t0["boxes"][0].tolist()
    assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1] and a["iscrowd"] == 0
    assert a["category_id"] == int(t0["labels"][0]) and a["area"] == int(t0["masks"][0].sum())

    ds = open_detection_data(coco_dir, "val")
    assert isinstance(ds, CocoDetection) and len(ds) == 5 and ds.classes == DigitScenes.classes
    assert ds.category_ids == list(range(1, 11))
    for i in range(5):
        (img, t), (ref_img, ref) = ds[i], small_scenes[i]
        assert img.dtype == torch.float32 and (img - ref_img).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(t["labels"], ref["labels"]) and t["image_id"] == i
        assert (t["boxes"] - ref["boxes"]).abs().max() <= 1.0
        assert torch.equal(t["masks"], ref["masks"])


def test_yolo_round_trip(yolo_dir, small_scenes):
    import yaml

    meta = yaml.safe_load((yolo_dir / "data.yaml").read_text())
    assert meta["nc"] == 10 and meta["names"] == {d: str(d) for d in range(10)}
    assert meta["train"] == "images/train" and meta["val"] == "images/val"
    assert Path(meta["path"]) == yolo_dir.resolve()
    first = (yolo_dir / "labels" / "val" / "000000.txt").read_text().split()
    assert int(first[0]) == int(small_scenes[0][1]["labels"][0]) - 1  # class = the digit
    assert all(0 < float(v) <= 1 for v in first[1:5])

    ds = open_detection_data(yolo_dir, "val")
    assert isinstance(ds, YoloDetection) and len(ds) == 5 and ds.classes == DigitScenes.classes
    for i in range(5):
        (_, t), (_, ref) = ds[i], small_scenes[i]
        assert torch.equal(t["labels"], ref["labels"])
        assert (t["boxes"] - ref["boxes"]).abs().max() <= 1.0


def test_collate_and_dataloader(coco_dir):
    loader = torch.utils.data.DataLoader(open_detection_data(coco_dir, "val"), batch_size=2,
                                         collate_fn=detection_collate)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2
    assert images[0].shape == (3, 96, 128) and "boxes" in targets[1]


class _Exploding:
    """``inner`` (default: 5 scenes), raising KeyboardInterrupt at item ``n_ok``."""

    def __init__(self, n_ok, inner=None):
        self.inner = inner if inner is not None else DigitScenes("val", size=64, num_images=5)
        self.classes, self.n_ok = self.inner.classes, n_ok

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i >= self.n_ok:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of a split
        return self.inner[i]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("writer", [write_coco, write_yolo])
def test_interrupted_write_leaves_nothing_half_written(writer, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        writer(_Exploding(2), tmp_path, "val")
    assert _tree(tmp_path) == {}  # nothing: no images, labels, annotations, yaml or temp folders
    writer(_Exploding(5), tmp_path, "val")
    before = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        writer(_Exploding(3), tmp_path, "val")  # over a complete split: that split stays whole
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- bad input --------------------------------------------------------------------------------
def _png(path: Path, h=40, w=50):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (30, 60, 90)).save(path)


def _coco(tmp_path: Path, annotations, images=None, categories=None, drop=None) -> Path:
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 50, "height": 40},
                                                {"id": 2, "file_name": "b.png", "width": 50, "height": 40}]
    for im in images:
        _png(tmp_path / "images" / im["file_name"])
    doc = {"images": images, "annotations": annotations,
           "categories": categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    if drop:
        doc.pop(drop)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def _ann(i, image_id, bbox, cat=1):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": 1, "iscrowd": 0}


def test_coco_degenerate_and_outside_boxes_are_counted(tmp_path):
    path = _coco(tmp_path, [_ann(1, 1, [5, 5, 0, 10]),     # zero width: dropped
                            _ann(2, 1, [40, 30, 20, 20]),  # partly outside 50x40: clipped
                            _ann(3, 1, [60, 5, 5, 5]),     # wholly outside: dropped
                            _ann(4, 1, [1, 2, 10, 10], cat=2)])
    with pytest.warns(DataWarning) as rec:
        ds = CocoDetection(path)
    msgs = [str(w.message) for w in rec]
    assert any("2 box(es) with zero width or height" in m and "instances.json" in m and "annotation id 1" in m
               for m in msgs), msgs
    assert any("1 box(es) partly outside the image clipped" in m for m in msgs), msgs
    assert ds.issues == {"degenerate_boxes": 2, "clipped_boxes": 1, "unreadable_images": 0}
    _, t = ds[0]
    assert t["boxes"].tolist() == [[40, 30, 50, 40], [1, 2, 11, 12]] and t["labels"].tolist() == [1, 2]
    _, t = ds[1]  # no annotations: a valid negative
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["labels"].dtype == torch.int64


def test_coco_unknown_category_is_an_error(tmp_path):
    path = _coco(tmp_path, [_ann(7, 1, [1, 1, 5, 5], cat=9)])
    with pytest.raises(ValueError, match=r"instances\.json: annotation id 7 has category_id 9.*valid ids: 1\.\.2"):
        CocoDetection(path)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_coco_category_ids_map_to_contiguous_labels_and_polygons_to_masks(tmp_path, backend, monkeypatch):
    if backend == "faster_coco_eval":  # the fallback when pycocotools is not installed
        pytest.importorskip("faster_coco_eval")
        monkeypatch.setitem(sys.modules, "pycocotools", None)
        monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    anns = [_ann(1, 1, [1, 1, 5, 5], cat=90), _ann(2, 1, [10, 8, 20, 10], cat=3)]
    anns[0]["segmentation"] = [[1, 1, 6, 1, 6, 6, 1, 6]]
    anns[1]["segmentation"] = [[10, 8, 30, 8, 30, 18, 10, 18]]
    path = _coco(tmp_path, anns, categories=[{"id": 90, "name": "toaster"}, {"id": 3, "name": "car"}])
    ds = CocoDetection(path)
    assert backend in type(ds.coco).__module__
    assert ds.classes == ["__background__", "car", "toaster"] and ds.category_ids == [3, 90]
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1] and t["masks"].shape == (2, 40, 50)
    assert (_mask_boxes(t["masks"]) - t["boxes"]).abs().max() <= 1


@pytest.mark.parametrize("drop", ["images", "annotations", "categories"])
def test_coco_missing_top_level_field(tmp_path, drop):
    path = _coco(tmp_path, [], drop=drop)
    with pytest.raises(ValueError, match=rf"instances\.json: the file has no '{drop}' field"):
        CocoDetection(path)


def test_coco_annotation_without_bbox(tmp_path):
    ann = _ann(1, 1, [1, 1, 5, 5])
    del ann["bbox"]
    with pytest.raises(ValueError, match=r"instances\.json: annotations\[0\] has no 'bbox' field"):
        CocoDetection(_coco(tmp_path, [ann]))
    with pytest.raises(ValueError, match="'bbox' must be 4 numbers"):
        CocoDetection(_coco(tmp_path, [_ann(1, 1, [1, 1, 5])]))


def test_coco_corrupt_images_are_skipped_and_counted(tmp_path):
    path = _coco(tmp_path, [_ann(1, 1, [1, 1, 5, 5]), _ann(2, 2, [2, 2, 5, 5], cat=2)],
                 images=[{"id": i, "file_name": f"{i}.png", "width": 50, "height": 40} for i in (1, 2, 3)])
    (tmp_path / "images" / "1.png").write_bytes(b"this is not a png")
    with pytest.warns(DataWarning, match=r"1 unreadable image\(s\) skipped \(first: .*1\.png"):
        ds = CocoDetection(path)
    assert len(ds) == 2 and ds.issues["unreadable_images"] == 1
    assert ds[0][1]["labels"].tolist() == [2]
    # a file with a valid header but truncated data fails only when decoded: skipped then
    from PIL import Image
    noisy = tmp_path / "images" / "2.png"
    Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy()).save(noisy)
    noisy.write_bytes(noisy.read_bytes()[:3000])  # the header survives, the pixel data does not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = CocoDetection(path)
    with pytest.warns(DataWarning, match=r"unreadable image.*2\.png"):
        _, t = ds[0]
    assert t["image_id"] == 3 and ds.issues["unreadable_images"] == 2


def test_coco_without_pycocotools_names_the_install(tmp_path, monkeypatch):
    path = _coco(tmp_path, [])
    for mod in ("pycocotools", "pycocotools.coco", "faster_coco_eval"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        CocoDetection(path)


def _yolo(tmp_path: Path, labels: dict, names=("cat", "dog"), yaml_text=None) -> Path:
    (tmp_path / "labels" / "val").mkdir(parents=True)
    for stem, text in labels.items():
        _png(tmp_path / "images" / "val" / f"{stem}.png")
        if text is not None:
            (tmp_path / "labels" / "val" / f"{stem}.txt").write_text(text)
    (tmp_path / "data.yaml").write_text(yaml_text or f"train: images/train\nval: images/val\nnames: {list(names)}\n")
    return tmp_path


def test_yolo_bad_boxes_are_counted_and_negatives_kept(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0 0.2\n1 0.9 0.5 0.4 0.2\n\n0 0.2 0.3 0.2 0.4\n",
                            "b": "", "c": None, "d": "1 1.5 1.5 0.2 0.2\n"})
    with pytest.warns(DataWarning) as rec:
        ds = YoloDetection(root, "val")
    msgs = " | ".join(str(w.message) for w in rec)
    assert "2 box(es) with zero width or height" in msgs and "a.txt, line 1" in msgs
    assert "1 box(es) partly outside the image clipped" in msgs and "a.txt, line 2" in msgs
    assert ds.issues == {"degenerate_boxes": 2, "clipped_boxes": 1, "unreadable_images": 0}
    _, t = ds[0]  # 50x40 image
    assert t["labels"].tolist() == [2, 1]
    assert torch.allclose(t["boxes"], torch.tensor([[35.0, 16, 50, 24], [5, 4, 15, 20]]))
    for i in (1, 2, 3):  # empty label file, no label file, only a box outside: negatives
        assert ds[i][1]["boxes"].shape == (0, 4) and ds[i][1]["labels"].shape == (0,)


def test_yolo_class_out_of_range_is_an_error(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(ValueError, match=r"a\.txt, line 2: class id 5 is outside the 2 classes.*valid: 0\.\.1"):
        YoloDetection(root, "val")


def test_yolo_missing_yaml_or_labels_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.yaml"):
        YoloDetection(tmp_path, "val")
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"})
    (root / "labels" / "val" / "a.txt").unlink()
    (root / "labels" / "val").rmdir()
    with pytest.raises(FileNotFoundError, match=r"labels folder not found: .*labels/val"):
        YoloDetection(root, "val")
    with pytest.raises(ValueError, match=r"no 'test' entry"):
        YoloDetection(root, "test")


def test_yolo_corrupt_image_is_skipped(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n", "b": "1 0.5 0.5 0.1 0.1\n"})
    (root / "images" / "val" / "a.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(DataWarning, match=r"1 unreadable image\(s\) skipped"):
        ds = YoloDetection(root, "val")
    assert len(ds) == 1 and ds[0][1]["labels"].tolist() == [2]


def test_open_detection_data_rejects_unknown_specs(tmp_path):
    for spec in (tmp_path / "nope", tmp_path, "digits"):
        with pytest.raises(ValueError, match="expected 'digit-scenes', a COCO folder .* YOLO folder"):
            open_detection_data(spec, "val")
    ds = open_detection_data("digit-scenes", "val", num_images=3, size=64)
    assert isinstance(ds, DigitScenes) and len(ds) == 3 and ds.size == (64, 64)


# --- the CLI --------------------------------------------------------------------------------------
def _cli(argv):
    from mobilenets.cli.common import run_handler
    from mobilenets.cli.data import register

    parser = argparse.ArgumentParser(prog="mobilenets")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return run_handler(args.func, args)


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_cli_writes_both_formats(fmt, tmp_path, capsys):
    out = tmp_path / fmt
    assert _cli(["data", "digit-scenes", "--format", fmt, "--out", str(out), "--train-images", "3",
                 "--val-images", "2", "--size", "64", "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"as {fmt.upper()} to {out}: train 3 images" in line and "val 2 images" in line
    for split, n in (("train", 3), ("val", 2)):
        ds = open_detection_data(out, split)
        assert type(ds) is (CocoDetection if fmt == "coco" else YoloDetection) and len(ds) == n
        ref = DigitScenes(split, size=64, num_images=n)
        assert torch.equal(ds[n - 1][1]["labels"], ref[n - 1][1]["labels"])


def test_cli_json_and_user_errors(tmp_path, capsys):
    assert _cli(["data", "digit-scenes", "--format", "yolo", "--out", str(tmp_path), "--train-images", "0",
                 "--val-images", "2", "--size", "48", "64", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == [48, 64] and summary["splits"]["val"]["images"] == 2 and "train" not in summary["splits"]
    assert summary["splits"]["val"]["boxes"] >= 2
    assert _cli(["data", "digit-scenes", "--format", "coco", "--out", str(tmp_path), "--val-images", "-1"]) == 2
    assert "mobilenets data: error: --val-images must be >= 0, got -1" in capsys.readouterr().err
    assert _cli(["data", "digit-scenes", "--format", "coco", "--out", str(tmp_path), "--size", "8"]) == 2
    assert "smaller than the smallest digit" in capsys.readouterr().err
    assert _cli(["data"]) == 2
