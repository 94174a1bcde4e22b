"""Every image reader skips a corrupt file the same way, whoever opened it.

Importing Ultralytics replaces ``PIL.Image.open`` for the whole process with an opener that, on a
file PIL cannot identify, tries to install a HEIF plugin and raises ``ModuleNotFoundError`` where it
cannot: with the YOLO integration imported, corrupt images escaped every reader's ``except OSError``
(the suite failed in CI once ``tests/test_yolo.py`` had been collected). ``open_image`` turns any
decode failure into an ``OSError``; these tests run the readers under such an opener.
"""

import numpy as np
import pytest
from PIL import Image

from mobilenets.data import ImageReadError, open_image, read_rgb


@pytest.fixture
def foreign_opener(monkeypatch):
    """PIL.Image.open replaced as Ultralytics does (offline: the plugin import fails)."""
    original = Image.open

    def opener(fp, *args, **kwargs):
        try:
            return original(fp, *args, **kwargs)
        except Image.UnidentifiedImageError:
            raise ModuleNotFoundError("No module named 'pi_heif'") from None

    monkeypatch.setattr(Image, "open", opener)


def _png(path, seed=0, size=(40, 50)):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def test_open_image_makes_every_decode_failure_an_oserror(tmp_path, foreign_opener):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"bad\.png.*ModuleNotFoundError") as e:
        read_rgb(bad)
    assert isinstance(e.value, OSError) and isinstance(e.value.__cause__, ModuleNotFoundError)
    with pytest.raises(FileNotFoundError):  # a missing file stays a missing file
        read_rgb(tmp_path / "missing.png")
    good = tmp_path / "good.png"
    _png(good)
    assert read_rgb(good).shape == (3, 40, 50)
    with open_image(good) as im:
        assert im.size == (50, 40)
    # an error of the caller's own code inside the block is not disguised as a bad image
    with pytest.raises(KeyError), open_image(good):
        raise KeyError("mine")


def test_a_truncated_file_that_opens_fails_on_read_as_oserror(tmp_path):
    noisy = tmp_path / "noisy.png"
    _png(noisy, size=(80, 80))
    noisy.write_bytes(noisy.read_bytes()[:3000])
    with open_image(noisy):
        pass  # the header is fine
    with pytest.raises(OSError):
        read_rgb(noisy)


def test_readers_skip_and_count_under_a_foreign_opener(tmp_path, foreign_opener):
    from mobilenets.deploy import calibration_batches
    from mobilenets.data import SceneSegmentation, VocSegmentation, write_voc
    from mobilenets.data.files import DataWarning, _image_opens
    from mobilenets.data.classification import ImageFolderDataset

    (tmp_path / "folder" / "a").mkdir(parents=True)
    for i in range(2):
        _png(tmp_path / "folder" / "a" / f"{i}.png", seed=i)
    (tmp_path / "folder" / "a" / "broken.png").write_bytes(b"not a png")
    assert "ModuleNotFoundError" in _image_opens(tmp_path / "folder" / "a" / "broken.png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = ImageFolderDataset(tmp_path / "folder")
    assert len(ds) == 2
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert calibration_batches(str(tmp_path / "folder"), 3, (32, 32)).shape[0] == 2

    write_voc(SceneSegmentation("train", size=(48, 64), num_images=4), tmp_path / "voc", "train")
    mask = sorted((tmp_path / "voc" / "SegmentationClass").rglob("*.png"))[0]
    mask.write_bytes(b"not a png")
    with pytest.warns(DataWarning, match=r"1 unreadable image\(s\) skipped"):
        ds = VocSegmentation(tmp_path / "voc", "train")
    assert len(ds) == 3
