"""Checkpoint I/O: layouts, wrappers, safety, errors, hf-hub cache, round trips."""

import os
import pickle
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import CheckpointError, create_model, load_weights, save_weights
from mobilenets.weights import detect_layout, read_checkpoint
from conftest import randomize_bn


@pytest.fixture
def small():
    torch.manual_seed(0)
    return randomize_bn(create_model("mobilenetv3_small_050")).eval()


def _same(a, b, x=None):
    x = torch.randn(1, 3, 64, 64) if x is None else x
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt", ".bin"])
def test_save_load_round_trip(small, tmp_path, suffix):
    small.set_bn(eps=1e-5, momentum=0.1)  # a non-default eps must survive the round trip
    path = save_weights(small, tmp_path / f"w{suffix}")
    other = create_model("mobilenetv3_small_050", pretrained=path)
    assert other.stem.bn.eps == 1e-5
    _same(small, other)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_and_ddp_prefixed_checkpoints(small, tmp_path, wrapper):
    sd = {f"module.{k}": v for k, v in small.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: sd, "epoch": 3, "optimizer": {"lr": torch.tensor(0.1)}}, path)
    other = create_model("mobilenetv3_small_050")
    report = load_weights(other, path)
    assert report.layout == "mobilenets" and report.loaded == len(sd)
    _same(small, other)


def test_layout_detection():
    ours = create_model("mobilenetv2_050").state_dict()
    assert detect_layout(ours) == "mobilenets"
    timm = pytest.importorskip("timm")
    assert detect_layout(timm.create_model("mobilenetv2_050").state_dict()) == "timm"
    import torchvision
    assert detect_layout(torchvision.models.mobilenet_v2().state_dict()) == "torchvision"
    assert detect_layout({"foo.weight": torch.zeros(1)}) == "unknown"


def test_mismatch_lists_missing_unexpected_and_misshaped(small):
    sd = small.state_dict()
    sd.pop("stem.conv.weight")
    sd["stages.9.0.extra.weight"] = torch.zeros(3)
    sd["head.fc.weight"] = torch.zeros(5, 1024)
    target = create_model("mobilenetv3_small_050")
    with pytest.raises(CheckpointError) as e:
        load_weights(target, sd)
    msg = str(e.value)
    assert "missing (1): stem.conv.weight" in msg
    assert "unexpected (1): stages.9.0.extra.weight" in msg
    assert "mis-shaped (1): head.fc.weight: checkpoint (5, 1024) vs model (1000, 1024)" in msg


def test_non_strict_skips_classifier_for_fine_tuning(small, tmp_path):
    path = save_weights(small, tmp_path / "w.safetensors")
    model = create_model("mobilenetv3_small_050", num_classes=10, pretrained=path, strict=False)
    torch.testing.assert_close(model.stem.conv.weight, small.stem.conv.weight)
    report = load_weights(model, path, strict=False)
    assert sorted(k.split(":")[0] for k in report.mismatched) == ["head.fc.bias", "head.fc.weight"]


def test_wrong_variant_is_refused(small):
    with pytest.raises(CheckpointError, match="mis-shaped"):
        create_model("mobilenetv3_small_100", pretrained=small.state_dict())


def test_foreign_pickle_is_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to unpickle|corrupt"):
        read_checkpoint(path)
    assert not (tmp_path / "pwned").exists()

    path2 = tmp_path / "evil2.pth"
    torch.save({"weights": torch.zeros(2), "obj": Evil()}, path2)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_checkpoint(path2)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content,suffix,match", [
    (b"not a zip", ".pth", "corrupt"),
    (b"\x00\x01garbage", ".safetensors", "safetensors"),
    (b"{}", ".npz", "unknown checkpoint type"),
])
def test_corrupt_or_unknown_files(tmp_path, content, suffix, match):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        create_model("mobilenetv2_050", pretrained=str(path))


def test_missing_file_and_foreign_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        create_model("mobilenetv2_050", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="unrecognised key layout"):
        create_model("mobilenetv2_050", pretrained={"encoder.layer.0.weight": torch.zeros(3)})
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        create_model("mobilenetv2_050", pretrained=str(tmp_path / "list.pth"))


def test_timm_checkpoint_into_wrong_family_fails_clearly():
    timm = pytest.importorskip("timm")
    sd = timm.create_model("mobilenetv2_100").state_dict()
    with pytest.raises(CheckpointError, match="does not fit mobilenetv3_large_100"):
        create_model("mobilenetv3_large_100", pretrained=sd)


def test_hf_hub_offline_cache(tmp_path, monkeypatch):
    """``hf-hub:org/name`` resolves from a Hugging Face cache the test builds, offline."""
    pytest.importorskip("huggingface_hub")
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model("mobilenetv4_conv_small")).eval()
    home = tmp_path / "hf"
    repo = home / "hub" / "models--timm--mnv4-test"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snap / "model.safetensors")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import importlib

    import huggingface_hub.constants as c
    importlib.reload(c)
    try:
        ours = create_model("mobilenetv4_conv_small", pretrained="hf-hub:timm/mnv4-test").eval()
        x = torch.randn(1, 3, 96, 96)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
        with pytest.raises(CheckpointError, match="none of"):
            create_model("mobilenetv4_conv_small", pretrained="hf-hub:timm/not-cached")
        with pytest.raises(ValueError, match="expected 'hf-hub:org/name'"):
            create_model("mobilenetv4_conv_small", pretrained="hf-hub:no-slash")
    finally:
        monkeypatch.undo()
        importlib.reload(c)


def test_pretrained_true_explains_instead_of_downloading():
    with pytest.raises(ValueError, match="downloads nothing"):
        create_model("mobilenetv2_100", pretrained=True)


def test_save_is_atomic(tmp_path, small, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_weights(small, path)
    before = path.read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_weights(small, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_layouts_have_named_fields():
    from mobilenets.weights.convert import LAYOUTS, Layout
    tv = LAYOUTS["torchvision"]
    assert isinstance(tv, Layout) and tv.mapper is not None and LAYOUTS["mobilenets"].mapper is None
    assert tv.bn_settings("mobilenetv3") == (1e-3, 0.01) and tv.bn_settings("mobilenetv2") == (1e-5, 0.1)
    assert tv.detect({"features.0.0.weight", "features.1.conv.0.weight"})
    detect, mapper, bn_settings = tv  # still unpacks as a 3-tuple
    assert (detect, mapper, bn_settings) == (tv.detect, tv.mapper, tv.bn_settings)


@pytest.mark.parametrize("content,what", [
    (b"hello, I am not weights\n", r"it is a text file \(it starts with 'hello, I am not weights"),
    (b"<!DOCTYPE html><html><body>404</body></html>", "it is an HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
    (b"", "it is empty"),
])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, content, what):
    """A text file named g.pth was reported as a refused pickle ("Unsupported operand 110")."""
    from mobilenets.cli import main
    from mobilenets.train import load_checkpoint
    path = tmp_path / "g.pth"
    path.write_bytes(content)
    for load in (lambda: create_model("mobilenetv2_050", pretrained=str(path)), lambda: load_checkpoint(path),
                 lambda: mobilenets.model_from_checkpoint(path)):
        with pytest.raises(CheckpointError, match=rf"not a PyTorch checkpoint .*{what}") as e:
            load()
        assert "unpickle" not in str(e.value)
    assert main(["export", str(path), "--out", str(tmp_path / "g.onnx")]) == 2


def test_safetensors_under_a_pth_name_is_recognised(tmp_path, small):
    from safetensors.torch import save_file
    path = tmp_path / "model.pth"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="it is a safetensors file: give it the .safetensors suffix"):
        create_model("mobilenetv2_050", pretrained=str(path))


def _training_checkpoint(tmp_path, name: str, num_classes: int) -> Path:
    from mobilenets.train import save_checkpoint
    model = create_model(name, num_classes=num_classes)
    return save_checkpoint({"state_dict": model.state_dict(), "recipe": {"model": name, "task": "classify"},
                            "classes": [str(i) for i in range(num_classes)],
                            "mobilenets_meta": {"format": "mobilenets", "arch": name}}, tmp_path / "best.pt")


def test_checkpoint_of_another_architecture_names_the_recorded_model(tmp_path):
    path = _training_checkpoint(tmp_path, "mobilenetv4_conv_small", 10)
    with pytest.raises(CheckpointError) as e:
        create_model("mobilenetv2_100", pretrained=str(path))
    first = str(e.value).splitlines()[1]  # before the key lists
    assert "records model 'mobilenetv4_conv_small'" in first


def test_classifier_of_another_size_suggests_num_classes(tmp_path):
    path = _training_checkpoint(tmp_path, "mobilenetv2_050", 10)
    with pytest.raises(CheckpointError, match=r"10 classes in the checkpoint, 1000 in the model; pass num_classes=10"):
        create_model("mobilenetv2_050", pretrained=str(path))
    assert create_model("mobilenetv2_050", num_classes=10, pretrained=str(path)).num_classes == 10


def test_model_from_checkpoint_is_public_and_returns_an_eval_model(tmp_path):
    path = _training_checkpoint(tmp_path, "mobilenetv2_050", 10)
    model, info = mobilenets.model_from_checkpoint(path)
    assert not model.training and info["task"] == "classify" and info["model"] == "mobilenetv2_050"
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)  # batch 1 works: eval mode
    torch.save(create_model("mobilenetv2_050").state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match=r"not a mobilenets training checkpoint.*create_model\(name, pretrained="):
        mobilenets.model_from_checkpoint(tmp_path / "plain.pth")


def test_written_files_are_readable_by_others_as_plain_files_are(tmp_path):
    """Run files were written 0600 (the temporary file's mode): others could not read a shared run."""
    import os
    from mobilenets.weights.io import atomic_write
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
        assert path.stat().st_mode & 0o777 == 0o644
        os.chmod(path, 0o640)  # an existing file keeps its mode
        atomic_write(path, lambda tmp: Path(tmp).write_text("y"))
        assert path.stat().st_mode & 0o777 == 0o640
        os.umask(0o077)
        assert atomic_write(tmp_path / "b.txt", lambda tmp: Path(tmp).write_text("x")).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
