"""digit-clutter: the harder built-in classification task (data/clutter.py) and its wiring into
training, evaluation, the command line and INT8 calibration."""

from __future__ import annotations

import collections

import pytest
import torch

from mobilenets.data import (DIGITS_SPLIT_SEED, DIGITS_VAL_FRACTION, DigitClutter, load_digits_tensors,
                             stratified_split)
from mobilenets.data.classification import BUILTIN_DATASETS, build_datasets
from mobilenets.train.recipe import Recipe
from mobilenets.train.recipes import get_recipe, recipe_for_data


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_items_are_deterministic_per_index_seed_and_split():
    a, b = DigitClutter("val", num_images=30), DigitClutter("val", num_images=8)
    torch.manual_seed(1)
    first = a[7]
    torch.manual_seed(2)  # the global RNG plays no part
    assert torch.equal(first[0], a[7][0]) and first[1] == a[7][1] == 7
    assert torch.equal(first[0], b[7][0])                       # another object, another length
    assert torch.equal(a[3][0], DigitClutter("val", num_images=5)[-2][0])  # negative index
    assert len({a[i][0].sum().item() for i in range(30)}) == 30  # every item its own image
    assert not torch.equal(first[0], DigitClutter("val", seed=1)[7][0])  # the seed matters
    assert not torch.equal(first[0], DigitClutter("train")[7][0])        # so does the split
    with pytest.raises(IndexError, match="out of range for 8 images"):
        b[8]


def test_items_are_pinned():
    """Which digits an item draws comes from integers of a seeded torch.Generator: the same on
    every machine (a change to the generator, which would void benchmarks/HARD_TASK.md, shows
    up here first)."""
    ds = DigitClutter("val")
    assert ds.source_digits(0) == [1160, 119, 1579]
    other = DigitClutter("train", seed=3)
    assert other.source_digits(123) == [987, 44, 905, 1603]
    assert abs(ds.generate(0).float().mean().item() - 63.98) < 0.05
    assert abs(other.generate(123).float().mean().item() - 56.90) < 0.05


def test_shapes_dtypes_and_sizes():
    x, y = DigitClutter("train", num_images=3)[1]
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8 and y == 1
    assert DigitClutter("heldout", size=96, num_images=1)[0][0].shape == (3, 96, 96)
    assert [len(DigitClutter(s)) for s in ("train", "heldout", "val")] == [10000, 2000, 2000]
    b = build_datasets(get_recipe("digit_clutter").replace(img_size=48, scene_images=20, scene_val_images=10))
    x, y = b.train[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert (len(b.train), len(b.val), len(b.heldout), b.num_classes) == (20, 10, 10, 10)
    assert b.val[0][0].shape == (3, 48, 48) and b.heldout.split == "heldout"
    assert build_datasets(Recipe(img_size=32)).heldout is None  # digits has no third split


def test_labels_are_balanced_and_the_target_is_the_labelled_digit():
    _, y = load_digits_tensors(8)
    ds = DigitClutter("heldout", num_images=40)
    assert collections.Counter(ds.targets) == {c: 4 for c in range(10)}
    for i in range(len(ds)):
        src = ds.source_digits(i)
        assert ds[i][1] == ds.targets[i] == int(y[src[-1]])  # the target, drawn last, has the label


def test_splits_never_share_a_source_digit():
    _, y = load_digits_tensors(8)
    digits_train, digits_val = stratified_split(y.tolist(), DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED)
    used = {}
    for split in ("train", "heldout", "val"):
        ds = DigitClutter(split, num_images=60)
        used[split] = {s for i in range(len(ds)) for s in ds.source_digits(i)}
        assert len(used[split]) > 150  # many distinct digits, not a handful repeated
    assert not used["train"] & used["heldout"] and not used["train"] & used["val"]
    assert not used["heldout"] & used["val"]
    assert used["val"] <= set(digits_val)  # the digits' own held-out split: no digits backbone saw them
    assert used["train"] | used["heldout"] <= set(digits_train)


@pytest.mark.parametrize("kw, message", [
    ({"split": "test"}, r"split must be one of \('train', 'heldout', 'val'\), got 'test'"),
    ({"size": 16}, r"size must be an int >= 32 .*got 16"),
    ({"num_images": -1}, r"num_images must be an int >= 0, got -1"),
    ({"rotation": 90}, r"rotation must be in \[0, 45\] degrees .*got 90"),
    ({"distractor_size": (0.3, 0.8)}, r"distractor_size must be \(min, max\) with 0.1 <= min <= max <= 0.6, "
                                      r"got \(0.3, 0.8\)"),
    ({"distractors": (3, 1)}, r"distractors must be \(min, max\) with 0 <= min <= max, got \(3, 1\)"),
    ({"fragments": 4}, r"fragments must be a \(min, max\) pair, got 4"),
    ({"blur": -1}, r"blur and noise must be >= 0, got blur=-1"),
])
def test_bad_options_name_what_was_expected(kw, message):
    with pytest.raises(ValueError, match=message):
        DigitClutter(**kw)


def test_bad_dataset_names():
    with pytest.raises(ValueError, match=r"dataset must be one of \('digits', 'digit-clutter', 'fake', "
                                         r"'imagefolder'\) for task 'classify', got 'digit-cluter'"):
        Recipe(dataset="digit-cluter").validate()
    with pytest.raises(FileNotFoundError, match=r"image folder not found: digit-cluter .*built-in datasets "
                                                r"digits, digit-clutter, fake"):
        build_datasets(Recipe(dataset="imagefolder", data_dir="digit-cluter"))


def test_the_dataset_names_its_recipe():
    assert recipe_for_data("classify", "digit-clutter") == "digit_clutter"
    assert recipe_for_data("classify", "digits") == "digits"
    assert recipe_for_data("segment", "digit-scenes") is None  # digit_scenes is a detection recipe
    assert recipe_for_data("classify", "/some/folder") is None and recipe_for_data("classify", None) is None
    assert "digit-clutter" in BUILTIN_DATASETS and get_recipe("digit_clutter").dataset == "digit-clutter"


def test_cli_trains_and_evaluates_through_the_normal_path(tmp_path, capsys):
    """``--data digit-clutter`` starts from the digit_clutter recipe, trains one tiny epoch, and
    ``mobilenets eval --data digit-clutter`` reads the same validation images back."""
    from mobilenets.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digit-clutter", "--print-recipe"]) == 0
    printed = capsys.readouterr().out
    assert "dataset = digit-clutter" in printed and "scene_images = 10000" in printed
    assert main(["train", "--data", "digit-clutter", "--model", "mobilenetv3_small_050", "--epochs", "1",
                 "--input-size", "32", "--batch-size", "8", "--set", "scene_images=16",
                 "--set", "scene_val_images=10", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on digit-clutter, 1 epochs" in printed
    assert main(["eval", str(out / "best.pt"), "--data", "digit-clutter", "--no-progress",
                 "--confusion", str(tmp_path / "cm.png")]) == 0
    printed = capsys.readouterr().out
    assert "on digit-clutter: top-1" in printed and "(10 images)" in printed

    # eval --file: an export of the checkpoint, run in its runtime on the same images: fp32 gives
    # the eager top-1 / top-5; an INT8 file is evaluated the same way
    pytest.importorskip("onnxruntime")
    eager = printed.splitlines()[0]
    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["export", str(out / "best.pt"), "--out", str(tmp_path / "q.onnx"), "--int8",
                 "--calib", "digit-clutter", "--calib-count", "8"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--data", "digit-clutter", "--file", str(tmp_path / "m.onnx"),
                 "--no-progress"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{tmp_path / 'm.onnx'} (ONNX, exported from {out / 'best.pt'}) on digit-clutter: top-1")
    assert line.split("top-1", 1)[1].split("loss")[0] == eager.split("top-1", 1)[1].split("loss")[0]
    assert (tmp_path / "m_confusion.png").exists()
    assert main(["eval", str(out / "best.pt"), "--data", "digit-clutter", "--file", str(tmp_path / "q.onnx"),
                 "--no-progress"]) == 0
    assert "(10 images)" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt"), "--file", str(tmp_path / "m.txt")]) == 2
    assert "expected an exported file (.onnx, .pte, .tflite), got" in capsys.readouterr().err
    assert main(["eval", str(out / "best.pt"), "--file", str(tmp_path / "gone.onnx")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err


def test_calibration_draws_training_images_normalized_as_trained():
    from mobilenets.deploy.calibration import calibration_set

    cs = calibration_set("digit-clutter", count=5, input_size=(40, 40))
    assert cs.images.shape == (5, 3, 40, 40) and cs.available == 10000 and cs.source == "digit-clutter"
    first = DigitClutter("train", 40)
    pick = torch.randperm(len(first), generator=torch.Generator().manual_seed(0))[:5].tolist()
    expected = torch.stack([first.generate(i) for i in pick]).float() / 255 * 2 - 1  # mean = std = 0.5
    assert torch.allclose(cs.images, expected, atol=1e-6)
    assert calibration_set("digit-clutter", count=2, input_size=(32, 32), in_chans=1).images.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="digit-clutter gives RGB images; cannot make 4-channel"):
        calibration_set("digit-clutter", count=2, input_size=(32, 32), in_chans=4)
