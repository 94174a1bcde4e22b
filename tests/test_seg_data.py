"""Segmentation data (mobilenets.data): digit-scenes as class maps, VOC-style folders
(reader, writer, labelmap.txt) with their bad-input handling, the v2 segmentation transforms,
the collate, open_segmentation_data and ``mobilenets data digit-scenes --format voc``."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mobilenets.data import (IGNORE_INDEX, VOC_CLASSES, DataWarning, DigitScenes, SceneSegmentation,
                                   VocSegmentation, open_segmentation_data, segmentation_collate,
                                   segmentation_transforms, semantic_mask, voc_colormap, write_coco, write_voc,
                                   write_yolo)
from mobilenets.data.classification import DatasetError
from test_scenes import _cli, _Exploding, _tree, _walk  # the same helpers as the detection data

DIGIT_NAMES = ["__background__"] + [str(d) for d in range(10)]


# --- SceneSegmentation ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [320, (96, 128)])
def test_scene_items_are_the_scenes_images_and_their_semantic_masks(size):
    seg, det = SceneSegmentation("val", size=size, num_images=6), DigitScenes("val", size=size, num_images=6)
    h, w = (size, size) if isinstance(size, int) else size
    for i in range(len(seg)):
        (image, mask), (ref_image, target) = seg[i], det[i]
        assert image.dtype == torch.float32 and image.shape == (3, h, w) and torch.equal(image, ref_image)
        assert mask.dtype == torch.int64 and mask.shape == (h, w)
        assert torch.equal(mask, semantic_mask(target))
        assert set(mask.unique().tolist()) == {0} | set(target["labels"].tolist())
    assert seg.classes == DIGIT_NAMES == DigitScenes.classes and seg.num_classes == 11
    assert seg.ignore_index == IGNORE_INDEX == 255
    assert len(seg.colors) == 11 and seg.colors[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def test_scene_masks_are_pinned_and_a_later_digit_covers_an_earlier_one():
    # the pinned scenes of test_scenes: val 0 has labels [7, 8, 4, 7] with masks of 3994, 363, 1950,
    # 3587 pixels (disjoint), train seed 3 item 123 labels [1, 1, 10, 3] with 383, 567, 257, 479
    counts = SceneSegmentation("val")[0][1].flatten().bincount(minlength=11).tolist()
    assert counts == [320 * 320 - 9894, 0, 0, 0, 1950, 0, 0, 3994 + 3587, 363, 0, 0]
    counts = SceneSegmentation("train", seed=3)[123][1].flatten().bincount(minlength=11).tolist()
    assert counts == [320 * 320 - 1686, 383 + 567, 0, 479, 0, 0, 0, 0, 0, 0, 257]
    _, t = DigitScenes("val")[2]  # five digits, some overlapping
    _, mask = SceneSegmentation("val")[2]
    masks, labels = t["masks"].bool(), t["labels"]
    covered = masks.sum(0) > 1
    last = (masks * torch.arange(1, len(labels) + 1)[:, None, None]).amax(0) - 1  # top-most instance
    assert covered.sum() > 0
    assert torch.equal(mask[covered], labels[last[covered]])
    assert (labels[masks.float().argmax(0)][covered] != mask[covered]).any()  # the first one lost somewhere


def test_scene_determinism_split_and_no_leak():
    a, b = SceneSegmentation("train", num_images=30), SceneSegmentation("train", num_images=5)
    torch.manual_seed(1)
    first = a[4]
    torch.manual_seed(2)
    for other in (a[4], b[4], b[-1]):
        assert torch.equal(other[0], first[0]) and torch.equal(other[1], first[1])
    assert not torch.equal(SceneSegmentation("train", seed=1)[4][1], first[1])
    assert not torch.equal(SceneSegmentation("val")[4][0], first[0])
    assert len(SceneSegmentation("train")) == 2000 and len(SceneSegmentation("val")) == 500
    for split in ("train", "val"):  # the same pasted digits as the scenes (their leak test covers these)
        seg, det = SceneSegmentation(split, num_images=10), DigitScenes(split, num_images=10)
        assert all(seg.source_digits(i) == det.source_digits(i) for i in range(10))
    with pytest.raises(IndexError):
        b[5]
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        SceneSegmentation("test")


def test_scene_transforms_are_applied():
    calls = []

    def tr(image, mask):
        calls.append((image.shape, mask.dtype))
        return image[:, :10], mask[:10]

    image, mask = SceneSegmentation("val", size=64, num_images=2, transforms=tr)[1]
    assert calls == [((3, 64, 64), torch.int64)] and image.shape == (3, 10, 64) and mask.shape == (10, 64)


# --- write_voc -> VocSegmentation round trips ---------------------------------------------------
@pytest.fixture(scope="module")
def scenes():
    return SceneSegmentation("val", size=(48, 64), num_images=4)


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory, scenes):
    out = tmp_path_factory.mktemp("voc")
    path = write_voc(scenes, out, "val")
    assert path == out / "ImageSets" / "Segmentation" / "val.txt"
    return out


def _quantised(image):
    return (image.clamp(0, 1) * 255).round() / 255


def test_voc_round_trip_png_is_exact(voc_dir, scenes, tmp_path):
    assert (voc_dir / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == \
        [f"val/{i:06d}" for i in range(4)]
    lines = (voc_dir / "labelmap.txt").read_text().splitlines()
    assert lines[0].startswith("#") and lines[1] == "background:0,0,0::" and lines[2] == "0:128,0,0::"
    assert len(lines) == 12 and lines[-1] == "9:64,128,0::"
    with Image.open(voc_dir / "SegmentationClass" / "val" / "000000.png") as m:
        assert m.mode == "P" and m.size == (64, 48)
        assert m.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        assert m.getpalette()[255 * 3:256 * 3] == [224, 224, 192]  # VOC's boundary colour

    ds = VocSegmentation(voc_dir, "val")
    assert len(ds) == 4 and ds.classes == DIGIT_NAMES and ds.colors == scenes.colors
    assert ds.ids == [f"val/{i:06d}" for i in range(4)] and ds.issues == {"unreadable_images": 0,
                                                                        "mismatched_masks": 0}
    for i in range(4):
        (image, mask), (ref_image, ref_mask) = ds[i], scenes[i]
        assert mask.dtype == torch.int64 and torch.equal(mask, ref_mask)
        assert image.dtype == torch.float32 and torch.equal(image, _quantised(ref_image))  # lossless 8-bit
    # written again from what was read: the same again (nothing lost or shifted)
    write_voc(ds, tmp_path, "val")
    again = VocSegmentation(tmp_path, "val")
    for i in range(4):
        assert torch.equal(again[i][0], ds[i][0]) and torch.equal(again[i][1], ds[i][1])


def test_voc_round_trip_jpeg_keeps_masks_exact(scenes, tmp_path):
    write_voc(scenes, tmp_path, "val", image_format="jpg")
    assert sorted(p.name for p in (tmp_path / "JPEGImages" / "val").iterdir()) == [f"{i:06d}.jpg" for i in range(4)]
    ds = VocSegmentation(tmp_path, "val")
    for i in range(4):
        (image, mask), (ref_image, ref_mask) = ds[i], scenes[i]
        assert torch.equal(mask, ref_mask)
        err = (image - ref_image).abs()
        assert 0 < err.mean() < 0.02, err.mean()  # lossy, but close
    with pytest.raises(ValueError, match="image_format must be 'png' or 'jpg'"):
        write_voc(scenes, tmp_path, "val", image_format="webp")


class _Masks:
    """A hand-made segmentation dataset: images of the given sizes, masks from ``fill(i, h, w)``."""

    def __init__(self, sizes, fill, classes=("__background__", "a", "b")):
        self.sizes, self.fill, self.classes = sizes, fill, list(classes)

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        h, w = self.sizes[i]
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, h, w, generator=g), self.fill(i, h, w)


def _ramp(i, h, w):
    """Values 0, 1, 2 and 255 (ignore) in bands."""
    m = (torch.arange(w)[None, :].expand(h, w) * 3 // w).clone()
    m[: max(1, h // 4)] = IGNORE_INDEX
    return m


def test_voc_round_trip_keeps_ignore_and_varied_sizes(tmp_path):
    data = _Masks([(20, 30), (33, 17), (8, 8)], _ramp)
    write_voc(data, tmp_path, "train")
    ds = VocSegmentation(tmp_path, "train")
    assert ds.classes == ["__background__", "a", "b"]
    for i in range(3):
        (image, mask), (ref_image, ref_mask) = ds[i], data[i]
        assert torch.equal(mask, ref_mask) and (mask == IGNORE_INDEX).any()
        assert torch.equal(image, _quantised(ref_image))


def test_write_voc_rejects_bad_masks_and_other_classes(tmp_path):
    with pytest.raises(ValueError, match=r"write_voc: item 1: mask values \[3, 7\] outside the 3 classes "
                                         r"\(valid: 0\.\.2, and 255 = ignore\)"):
        write_voc(_Masks([(8, 8), (8, 8)], lambda i, h, w: torch.zeros(h, w, dtype=torch.int64) if i == 0
                         else torch.tensor([3, 7]).repeat(h, w // 2)), tmp_path, "val")
    with pytest.raises(ValueError, match=r"item 0: mask \(4, 8\) is not the image's size \(8, 8\)"):
        write_voc(_Masks([(8, 8)], lambda i, h, w: torch.zeros(4, 8, dtype=torch.int64)), tmp_path, "val")
    with pytest.raises(ValueError, match="expected an integer mask"):
        write_voc(_Masks([(8, 8)], lambda i, h, w: torch.zeros(h, w)), tmp_path, "val")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no temp folders
    write_voc(_Masks([(8, 8)], _ramp), tmp_path, "train")
    write_voc(_Masks([(8, 8)], _ramp), tmp_path, "val")  # same classes: fine
    with pytest.raises(ValueError, match=r"already holds the splits \['train', 'val'\] with the classes"):
        write_voc(_Masks([(8, 8)], _ramp, classes=("__background__", "x", "y")), tmp_path, "test")
    write_voc(_Masks([(8, 8)], _ramp, classes=("__background__", "x", "y", "z")), tmp_path / "new", "val")


def _exploding(n_ok):
    return _Exploding(n_ok, SceneSegmentation("val", size=48, num_images=5))


def test_write_voc_is_atomic_per_split_and_replaces_a_split_whole(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        write_voc(_exploding(2), tmp_path, "val")
    assert _tree(tmp_path) == {}
    write_voc(_exploding(5), tmp_path, "val")
    write_voc(SceneSegmentation("train", size=48, num_images=2), tmp_path, "train")
    before = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        write_voc(_exploding(3), tmp_path, "val")  # over a complete split: it stays whole
    assert _tree(tmp_path) == before
    assert not [p for p in tmp_path.rglob(".*")]  # no temp or old folders left
    # a new, smaller val replaces the old one entirely and leaves train alone
    write_voc(SceneSegmentation("val", size=48, num_images=2, seed=9), tmp_path, "val")
    after = _tree(tmp_path)
    assert sorted(k for k in after if "/val/" in k) == [f"{d}/val/{i:06d}.png" for d in ("JPEGImages", "SegmentationClass")
                                                       for i in range(2)]
    assert {k: v for k, v in after.items() if "train" in k} == {k: v for k, v in before.items() if "train" in k}
    assert len(VocSegmentation(tmp_path, "val")) == 2 and len(VocSegmentation(tmp_path, "train")) == 2


# --- VocSegmentation on hand-made folders -------------------------------------------------------
def _image(path: Path, h=12, w=16, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(h * w * 3).reshape(h, w, 3) % 251).astype(np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def _mask(path: Path, values: np.ndarray, mode="P"):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(values.astype(np.uint8))  # mode "L"
    if mode == "P":
        im.putpalette([v for c in voc_colormap() for v in c])
    elif mode != "L":
        im = im.convert(mode)
    im.save(path)


def _voc(root: Path, items: dict, split="train", labelmap=None, mode="P") -> Path:
    """items: id -> mask values (h, w) array (or None: no mask file); images are .jpg."""
    for i, values in items.items():
        h, w = (12, 16) if values is None else values.shape
        _image(root / "JPEGImages" / f"{i}.jpg", h, w)
        if values is not None:
            _mask(root / "SegmentationClass" / f"{i}.png", values, mode)
    (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in items) + "\n")
    if labelmap is not None:
        (root / "labelmap.txt").write_text(labelmap)
    return root


def _values(h=12, w=16, top=15, bottom=0):
    v = np.full((h, w), bottom, dtype=np.uint8)
    v[: h // 2] = top
    v[0, 0] = IGNORE_INDEX
    return v


def test_voc_defaults_to_voc_classes_and_reads_grey_masks(tmp_path):
    root = _voc(tmp_path, {"2007_000032": _values(top=15), "2007_000039": _values(top=20, bottom=1)}, mode="L")
    ds = VocSegmentation(root, "train")
    assert ds.classes == VOC_CLASSES and len(VOC_CLASSES) == 21 and ds.num_classes == 21
    assert VOC_CLASSES[15] == "person" and VOC_CLASSES[-1] == "tvmonitor"
    assert ds.colors == voc_colormap(21) and ds.colors[15] == (192, 128, 128)
    image, mask = ds[1]
    assert image.shape == (3, 12, 16) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert torch.equal(mask, torch.from_numpy(_values(top=20, bottom=1).astype(np.int64)))
    assert ds.image_path(0).name == "2007_000032.jpg" and ds.mask_path(0).name == "2007_000032.png"


def test_voc_labelmap_is_read(tmp_path):
    labelmap = ("# label:color_rgb:parts:actions\n\nBackground:0,0,0::\nroad:128,64,128::\n"
                "car:0,0,142:wheel,door:open\ntree\n")
    root = _voc(tmp_path, {"a": _values(top=3, bottom=1)}, labelmap=labelmap)
    ds = VocSegmentation(root, "train")
    assert ds.classes == ["__background__", "road", "car", "tree"]
    assert ds.colors == [(0, 0, 0), (128, 64, 128), (0, 0, 142), voc_colormap(4)[3]]
    assert set(ds[0][1].unique().tolist()) == {1, 3, 255}


@pytest.mark.parametrize("labelmap, match", [
    ("background:0,0,0::\nroad:300,0,0::\n", r"labelmap\.txt, line 2: colour '300,0,0' of class 'road' is not 'r,g,b'"),
    ("background:0,0,0::\nroad:1,2::\n", r"line 2: colour '1,2'"),
    ("background::\n:1,2,3::\n", r"line 2: empty class name"),
    ("background::\nroad::\nroad::\n", r"line 3: class 'road' is listed twice \(first as class 1\)"),
    ("# only a comment\n", r"labelmap\.txt: no classes"),
    ("".join(f"c{k}\n" for k in range(256)), r"256 classes, but mask values are 0\.\.254"),
])
def test_voc_bad_labelmap(tmp_path, labelmap, match):
    root = _voc(tmp_path, {"a": _values(top=1)}, labelmap=labelmap)
    with pytest.raises(ValueError, match=match):
        VocSegmentation(root, "train")


def test_voc_finds_png_and_nested_images(tmp_path):
    root = _voc(tmp_path, {"a": _values(top=1)})
    _image(root / "JPEGImages" / "sub" / "b.png")
    _mask(root / "SegmentationClass" / "sub" / "b.png", _values(top=2))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nsub/b\n")
    ds = VocSegmentation(root, "train")
    assert [p.name for p in (ds.image_path(0), ds.image_path(1))] == ["a.jpg", "b.png"]
    assert ds[1][1].max() == 255 and 2 in ds[1][1]


def test_voc_mask_of_another_size_is_skipped_and_counted(tmp_path):
    root = _voc(tmp_path, {"a": _values(top=1), "b": _values(top=2), "c": _values(top=3)})
    _mask(root / "SegmentationClass" / "b.png", _values(10, 16, top=2))  # image 16x12, mask 16x10
    with pytest.warns(DataWarning, match=r"1 mask\(s\) whose size differs from the image skipped \(first: "
                                         r".*b\.png is 16x10, its image 16x12 \(width x height\)\); save each mask"):
        ds = VocSegmentation(root, "train")
    assert ds.ids == ["a", "c"] and ds.issues == {"unreadable_images": 0, "mismatched_masks": 1}
    # without the up-front check it is found when read, skipped for the next item, and warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lazy = VocSegmentation(root, "train", check_images=False)
    assert len(lazy) == 3
    with pytest.warns(DataWarning, match=r"b\.png is 16x10, its image 16x12"):
        _, mask = lazy[1]
    assert 3 in mask and lazy.issues["mismatched_masks"] == 1


def test_voc_label_values_outside_the_classes_are_an_error(tmp_path):
    values = _values(top=1)
    values[3, 3], values[4, 4] = 3, 200
    root = _voc(tmp_path, {"a": _values(top=2), "b": values}, labelmap="background\ncat\ndog\n")
    ds = VocSegmentation(root, "train")  # the pixels are checked when read
    assert ds[0][1].max() == 255
    with pytest.raises(ValueError, match=r"b\.png: label values \[3, 200\] outside the 3 classes \(valid: 0\.\.2, "
                                         r"and 255 = ignore\); fix the mask, or list every class in .*labelmap\.txt"):
        ds[1]


def test_voc_missing_layout_split_or_images(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"segmentation folder not found: .*nope \(expected a VOC-style"):
        VocSegmentation(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match=r"no JPEGImages/ folder \(expected a VOC-style folder: "
                                                r"JPEGImages/<id>\.jpg\|\.png, SegmentationClass/<id>\.png"):
        VocSegmentation(tmp_path, "train")  # an empty folder
    root = _voc(tmp_path / "voc", {"a": _values(top=1)})
    with pytest.raises(FileNotFoundError, match=r"no split list ImageSets/Segmentation/val\.txt for split 'val' "
                                                r"\(the splits there: \['train'\]\)"):
        VocSegmentation(root, "val")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"val\.txt: lists no images"):
        VocSegmentation(root, "val")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a 1\n")
    with pytest.raises(ValueError, match=r"val\.txt, line 1: expected one image id, got 'a 1'"):
        VocSegmentation(root, "val")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("x\ny\n")  # neither exists
    with pytest.raises(FileNotFoundError, match=r"none of the 2 listed images could be used \(first: .*x\.jpg "
                                                r"\(file not found\)\)"):
        VocSegmentation(root, "val")


def test_voc_corrupt_images_and_masks_are_skipped_and_counted(tmp_path):
    root = _voc(tmp_path, {k: _values(top=i + 1) for i, k in enumerate("abcde")})
    (root / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "SegmentationClass" / "b.png").write_bytes(b"\x89PNG garbage")
    (root / "SegmentationClass" / "c.png").unlink()
    with pytest.warns(DataWarning, match=r"3 unreadable image\(s\) skipped \(first: .*a\.jpg"):
        ds = VocSegmentation(root, "train")
    assert ds.ids == ["d", "e"] and ds.issues["unreadable_images"] == 3
    # a mask whose header survives but whose pixel data does not fails only when decoded: skipped then
    big = (np.random.default_rng(0).integers(0, 5, (120, 160))).astype(np.uint8)
    _image(root / "JPEGImages" / "d.jpg", 120, 160)
    _mask(root / "SegmentationClass" / "d.png", big)
    p = root / "SegmentationClass" / "d.png"
    p.write_bytes(p.read_bytes()[:2000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = VocSegmentation(root, "train")
    assert ds.ids == ["d", "e"]
    with pytest.warns(DataWarning, match=r"unreadable image.*d\.png"):
        _, mask = ds[0]
    assert 5 in mask  # item e's mask
    assert ds.issues["unreadable_images"] == 4


def test_voc_rgb_mask_is_an_error_saying_how_to_convert(tmp_path):
    root = _voc(tmp_path, {"a": _values(top=1)}, mode="RGB")
    with pytest.raises(ValueError, match=r"a\.png: a mask of mode 'RGB'; SegmentationClass/ needs class-index PNGs: "
                                         r"mode 'P' .* or 'L' .*To convert a colour mask, map each colour to its "
                                         r"class index .*Image\.fromarray\(index, mode='L'\)"):
        VocSegmentation(root, "train")
    with pytest.raises(ValueError, match="a mask of mode 'RGB'"):
        VocSegmentation(root, "train", check_images=False)[0]


# --- open_segmentation_data -----------------------------------------------------------------------
def test_open_segmentation_data(tmp_path, voc_dir):
    ds = open_segmentation_data("digit-scenes", "val", size=64, seed=2, num_images=3)
    assert isinstance(ds, SceneSegmentation) and len(ds) == 3 and ds.size == (64, 64) and ds.seed == 2
    ds = open_segmentation_data(voc_dir, "val")
    assert isinstance(ds, VocSegmentation) and len(ds) == 4
    tr = segmentation_transforms(False, 24)
    assert open_segmentation_data(voc_dir, "val", transforms=tr)[0][1].shape == (24, 32)
    with pytest.raises(ValueError, match="num_images, size apply to digit-scenes only, not to a folder"):
        open_segmentation_data(voc_dir, "val", size=64, num_images=2)


def test_open_segmentation_data_explains_what_a_folder_needs(tmp_path):
    det = DigitScenes("val", size=48, num_images=1)
    write_coco(det, tmp_path / "coco", "val")
    write_yolo(det, tmp_path / "yolo", "val")
    needs = r"expected 'digit-scenes' or a VOC-style segmentation folder: JPEGImages/<id>\.jpg\|\.png, " \
            r"SegmentationClass/<id>\.png .*--format voc --out DIR. writes one"
    with pytest.raises(DatasetError, match=r"a COCO detection folder \(annotations/\*\.json\), which has boxes, "
                                           r"not class masks; " + needs):
        open_segmentation_data(tmp_path / "coco", "val")
    with pytest.raises(DatasetError, match=r"a YOLO detection folder \(data\.yaml\).*" + needs):
        open_segmentation_data(tmp_path / "yolo", "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=needs + r"; the folder has nothing"):
        open_segmentation_data(tmp_path / "empty", "val")
    with pytest.raises(DatasetError, match=r"no such file or folder; " + needs):
        open_segmentation_data(tmp_path / "nope", "val")
    _voc(tmp_path / "devkit" / "VOC2012", {"a": _values(top=1)})
    with pytest.raises(DatasetError, match=r"its sub-folder 'VOC2012' is one: pass .*devkit/VOC2012"):
        open_segmentation_data(tmp_path / "devkit", "train")
    assert len(open_segmentation_data(tmp_path / "devkit" / "VOC2012", "train")) == 1


# --- transforms -----------------------------------------------------------------------------------
def test_no_flip_in_the_segmentation_pipelines():
    from torchvision.transforms import v2

    for train in (True, False):
        steps = list(_walk(segmentation_transforms(train, 64)))
        assert not any(isinstance(s, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip))
                       or "flip" in type(s).__name__.lower() for s in steps), steps
    names = [type(s).__name__ for s in _walk(segmentation_transforms(True, 64))]
    assert names[2:] == ["RandomPhotometricDistort", "RandomResize", "RandomCrop", "ToPureTensor"], names
    assert [type(s).__name__ for s in _walk(segmentation_transforms(False, 64))][2:] == ["Resize", "ToPureTensor"]


def test_train_transform_never_mirrors():
    """Quadrant classes 1 | 2 over 3 | 4: after any scale and crop, 1 stays left of 2 and above 3
    in every row / column holding both (a flip would swap them)."""
    h, w = 64, 80
    mask = torch.ones(h, w, dtype=torch.int64)
    mask[:, w // 2:] = 2
    mask[h // 2:, : w // 2] = 3
    mask[h // 2:, w // 2:] = 4
    tr = segmentation_transforms(True, 48, fill=(0.5, 0.5, 0.5))
    torch.manual_seed(0)
    seen_both = 0
    for _ in range(60):
        _, m = tr(torch.rand(3, h, w), mask)
        for a, b, dim in ((1, 2, 1), (3, 4, 1), (1, 3, 0), (2, 4, 0)):  # a before b along dim
            ca = torch.where(m == a, torch.arange(m.shape[dim]).unsqueeze(1 - dim), -1).amax(dim)
            cb = torch.where(m == b, torch.arange(m.shape[dim]).unsqueeze(1 - dim), 10 ** 6).amin(dim)
            both = (ca >= 0) & (cb < 10 ** 6)
            seen_both += int(both.any())
            assert (ca[both] < cb[both]).all()
    assert seen_both > 100  # most crops hold both sides of the centre


def test_train_transform_pads_with_fill_and_ignore():
    """At scale 0.5 a 40x40 pair becomes 20x20 (shorter side 0.5 x size 40), padded to 40x40:
    exactly the padding is 255 in the mask and ``fill`` in the image."""
    fill = (0.25, 0.5, 0.75)
    tr = segmentation_transforms(True, 40, fill=fill, scale=(0.5, 0.5))
    mask = torch.randint(0, 11, (40, 40))
    torch.manual_seed(0)
    offsets = set()
    for _ in range(20):
        image, m = tr(torch.rand(3, 40, 40), mask)
        assert image.shape == (3, 40, 40) and m.shape == (40, 40) and m.dtype == torch.int64
        pad = m == IGNORE_INDEX
        assert int(pad.sum()) == 40 * 40 - 20 * 20
        assert torch.equal(image[:, pad], torch.tensor(fill)[:, None].expand(3, int(pad.sum())))
        rows, cols = (~pad).nonzero().unbind(1)
        assert rows.max() - rows.min() == 19 and cols.max() - cols.min() == 19  # whole, in one piece
        offsets.add((int(rows.min()), int(cols.min())))
    assert len(offsets) > 5  # at random places, not always the corner


@settings(max_examples=40, deadline=None)
@given(h=st.integers(4, 70), w=st.integers(4, 70), size=st.integers(4, 48), classes=st.integers(1, 30),
       with_ignore=st.booleans(), train=st.booleans(), seed=st.integers(0, 2 ** 31 - 1),
       dtype=st.sampled_from([torch.uint8, torch.int64]))
def test_transforms_keep_masks_valid(h, w, size, classes, with_ignore, train, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, classes, (h, w), generator=g)
    if with_ignore:
        mask[torch.rand(h, w, generator=g) < 0.2] = IGNORE_INDEX
    torch.manual_seed(seed)
    image, out = segmentation_transforms(train, size)(torch.rand(3, h, w, generator=g), mask.to(dtype))
    assert type(out) is torch.Tensor and type(image) is torch.Tensor
    assert out.dtype == torch.int64 and image.dtype == torch.float32
    assert set(out.unique().tolist()) <= set(mask.unique().tolist()) | {IGNORE_INDEX}
    if train:
        assert out.shape == (size, size) and image.shape == (3, size, size)
    else:  # the shorter side resized to size, the aspect ratio kept
        assert min(out.shape) == size and image.shape[-2:] == out.shape
        long_in, long_out = max(h, w), max(out.shape)
        assert abs(long_out - long_in * size / min(h, w)) <= 1


def test_eval_transform_is_the_identity_at_the_native_size_and_nearest_otherwise():
    ds = SceneSegmentation("val", size=64, num_images=2)
    plain = ds[1]
    image, mask = SceneSegmentation("val", size=64, num_images=2, transforms=segmentation_transforms(False, 64))[1]
    assert torch.equal(image, plain[0]) and torch.equal(mask, plain[1])
    image, mask = segmentation_transforms(False, 32)(plain[0], plain[1])
    assert image.shape == (3, 32, 32) and torch.equal(mask, plain[1][::2, ::2])  # nearest: every 2nd pixel
    image, mask = segmentation_transforms(False, 16)(torch.rand(3, 40, 20), torch.zeros(40, 20, dtype=torch.int64))
    assert image.shape == (3, 32, 16) and mask.shape == (32, 16)


def test_segmentation_transforms_bad_arguments():
    for size in (0, 1.5, (32, 32), True):
        with pytest.raises(ValueError, match="size must be a positive int"):
            segmentation_transforms(True, size)
    with pytest.raises(ValueError, match=r"scale must be \(min, max\) with 0 < min <= max"):
        segmentation_transforms(True, 32, scale=(2.0, 0.5))


# --- collate ----------------------------------------------------------------------------------------
def test_collate_stacks_and_pads_to_the_largest():
    a = (torch.rand(3, 4, 6), torch.randint(0, 3, (4, 6)))
    b = (torch.rand(3, 7, 5), torch.randint(0, 3, (7, 5)))
    images, masks = segmentation_collate([a, b])
    assert images.shape == (2, 3, 7, 6) and images.dtype == torch.float32
    assert masks.shape == (2, 7, 6) and masks.dtype == torch.int64
    assert torch.equal(images[0, :, :4, :6], a[0]) and torch.equal(masks[0, :4, :6], a[1])
    assert (images[0, :, 4:] == 0).all() and (masks[0, 4:] == IGNORE_INDEX).all()
    assert torch.equal(images[1, :, :, :5], b[0]) and (images[1, :, :, 5:] == 0).all()
    assert (masks[1, :, 5:] == IGNORE_INDEX).all() and torch.equal(masks[1, :, :5], b[1])
    same = segmentation_collate([a, a])
    assert torch.equal(same[0], torch.stack([a[0], a[0]])) and torch.equal(same[1], torch.stack([a[1], a[1]]))
    assert segmentation_collate([(a[0], a[1].to(torch.uint8))])[1].dtype == torch.int64


def test_collate_bad_items():
    with pytest.raises(ValueError, match="empty batch"):
        segmentation_collate([])
    with pytest.raises(ValueError, match=r"item 1: expected an integer mask \(H, W\) = \(4, 6\), got torch\.float32"):
        segmentation_collate([(torch.rand(3, 4, 6), torch.zeros(4, 6, dtype=torch.int64)),
                              (torch.rand(3, 4, 6), torch.zeros(4, 6))])
    with pytest.raises(ValueError, match=r"item 0: expected an integer mask \(H, W\) = \(4, 6\), got torch\.int64 \(4, 5\)"):
        segmentation_collate([(torch.rand(3, 4, 6), torch.zeros(4, 5, dtype=torch.int64))])
    with pytest.raises(ValueError, match=r"item 0: expected a float image"):
        segmentation_collate([(torch.zeros(3, 4, 6, dtype=torch.uint8), torch.zeros(4, 6, dtype=torch.int64))])


def test_dataloader_over_a_folder_of_varied_sizes(tmp_path):
    data = _Masks([(20, 30), (33, 17), (8, 8), (12, 40)], _ramp)
    write_voc(data, tmp_path, "val")
    loader = torch.utils.data.DataLoader(open_segmentation_data(tmp_path, "val"), batch_size=3,
                                         collate_fn=segmentation_collate)
    (images, masks), (last_images, last_masks) = list(loader)
    assert images.shape == (3, 3, 33, 30) and masks.shape == (3, 33, 30)
    assert last_images.shape == (1, 3, 12, 40) and torch.equal(last_masks[0], data[3][1])
    assert torch.equal(masks[1, :33, :17], data[1][1]) and (masks[1, :, 17:] == IGNORE_INDEX).all()


# --- the CLI --------------------------------------------------------------------------------------
def test_cli_writes_voc(tmp_path, capsys):
    out = tmp_path / "voc"
    assert _cli(["data", "digit-scenes", "--format", "voc", "--out", str(out), "--train-images", "3",
                 "--val-images", "2", "--size", "48", "64", "--seed", "4", "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"as VOC to {out}: train 3 images / " in line and " digit pixels, val 2 images / " in line
    assert "ImageSets/Segmentation/<split>.txt, labelmap.txt" in line
    for split, n in (("train", 3), ("val", 2)):
        ds = open_segmentation_data(out, split)
        ref = SceneSegmentation(split, size=(48, 64), num_images=n, seed=4)
        assert isinstance(ds, VocSegmentation) and len(ds) == n and ds.classes == DIGIT_NAMES
        for i in range(n):
            assert torch.equal(ds[i][1], ref[i][1]) and torch.equal(ds[i][0], _quantised(ref[i][0]))
    assert _cli(["data", "digit-scenes", "--format", "voc", "--out", str(out), "--train-images", "0",
                 "--val-images", "2", "--size", "48", "64", "--seed", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "voc" and list(summary["splits"]) == ["val"]
    val = summary["splits"]["val"]
    ref = SceneSegmentation("val", size=(48, 64), num_images=2, seed=4)
    assert val["images"] == 2 and val["pixels"] == sum(int((ref[i][1] > 0).sum()) for i in range(2))
    assert val["file"] == str(out / "ImageSets" / "Segmentation" / "val.txt")
