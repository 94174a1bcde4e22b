"""Fuzzed and hostile checkpoint files: truncated ``.pth`` / ``.safetensors``, safetensors headers
that lie about offsets or dtypes, zip archives with an extra pickle, tensors of the wrong dtype
or shape -> a :class:`CheckpointError` naming the file; a malicious pickle never runs."""

import io
import json
import os
import struct
import zipfile

import pytest
import torch

from mobilenets import CheckpointError, create_model, load_weights, save_weights
from mobilenets.weights import read_checkpoint

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None)
NAME = "mobilenetv1_025"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model(NAME, num_classes=4).eval()


@pytest.fixture(scope="module")
def good_files(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    return {s: save_weights(model, d / f"w{s}").read_bytes() for s in (".pth", ".safetensors")}


def _write(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _refused(path, model) -> CheckpointError:
    """Loading ``path`` fails with a CheckpointError that names the file."""
    with pytest.raises(CheckpointError) as e:
        load_weights(model, path)
    assert str(path) in str(e.value)
    return e.value


@FUZZ
@given(frac=st.floats(0.0, 0.999), suffix=st.sampled_from([".pth", ".safetensors"]))
def test_truncated_files_are_refused_naming_the_file(frac, suffix, model, good_files, tmp_path_factory):
    data = good_files[suffix]
    path = _write(tmp_path_factory.mktemp("t"), f"cut{suffix}", data[: int(len(data) * frac)])
    _refused(path, model)


@FUZZ
@given(pos=st.integers(0, 10**9), byte=st.integers(0, 255), suffix=st.sampled_from([".pth", ".safetensors"]))
def test_corrupted_bytes_never_escape_as_other_errors(pos, byte, suffix, model, good_files, tmp_path_factory):
    # one flipped byte anywhere: the file loads (a weight value changed) or is refused; no
    # other exception type escapes
    data = bytearray(good_files[suffix])
    data[pos % len(data)] = byte
    path = _write(tmp_path_factory.mktemp("c"), f"flip{suffix}", bytes(data))
    try:
        load_weights(create_model(NAME, num_classes=4), path)
    except CheckpointError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize("meta", [{"bn_eps": "1eA05", "bn_momentum": "0.1"}, {"bn_eps": "1e-05"},
                                  {"bn_eps": "1e-05", "bn_momentum": "7"}, {"bn_eps": "nan", "bn_momentum": "0.1"}],
                         ids=["unparsable", "missing", "out-of-range", "nan"])
def test_damaged_bn_metadata_is_refused_naming_the_file(meta, model, tmp_path):
    # found by the byte-flip fuzzer: a flipped byte in our own metadata escaped as ValueError/KeyError
    from safetensors.torch import save_file
    path = tmp_path / "meta.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path,
              metadata={"format": "mobilenets", "arch": NAME, **meta})
    assert "damaged metadata" in str(_refused(path, model))


def _safetensors(header: dict, payload: bytes, header_len=None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if header_len is None else header_len) + h + payload


def _lying_headers(model):
    sd = model.state_dict()
    k = next(k for k, v in sd.items() if v.dtype == torch.float32)
    n = sd[k].numel()
    shape = list(sd[k].shape)
    payload = sd[k].contiguous().numpy().tobytes()
    yield "offsets past the end", {k: {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * n + 64]}}, payload
    yield "offsets reversed", {k: {"dtype": "F32", "shape": shape, "data_offsets": [4 * n, 0]}}, payload
    yield "size does not match shape", {k: {"dtype": "F32", "shape": [n + 1], "data_offsets": [0, 4 * n]}}, payload
    yield "unknown dtype", {k: {"dtype": "Q7", "shape": shape, "data_offsets": [0, 4 * n]}}, payload
    yield "dtype of another width", {k: {"dtype": "F64", "shape": shape, "data_offsets": [0, 4 * n]}}, payload
    yield "not a dict entry", {k: [1, 2, 3]}, payload
    yield "header length past the end", None, payload


@pytest.mark.parametrize("case", range(7))
def test_safetensors_header_that_lies_is_refused(case, model, tmp_path):
    why, header, payload = list(_lying_headers(model))[case]
    data = _safetensors(header or {}, payload, header_len=None if header is not None else 10**6)
    err = _refused(_write(tmp_path, "lie.safetensors", data), model)
    assert "safetensors" in str(err), why


def test_integer_tensors_for_float_weights_are_refused(model, tmp_path):
    sd = {k: (v.to(torch.int32) if v.is_floating_point() and k.endswith("weight") else v)
          for k, v in model.state_dict().items()}
    path = tmp_path / "ints.pth"
    torch.save(sd, path)
    err = _refused(path, model)
    assert "dtype torch.int32 vs model torch.float32" in str(err)
    # while half precision is a legitimate cast (fp16 releases of fp32 models)
    half = tmp_path / "half.safetensors"
    from safetensors.torch import save_file
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}, half)
    fresh = create_model(NAME, num_classes=4)
    load_weights(fresh, half)
    assert fresh.state_dict()["stem.conv.weight"].dtype == torch.float32


def test_wrong_shape_is_refused_naming_key_and_shapes(model, tmp_path):
    sd = dict(model.state_dict())
    sd["head.fc.weight"] = torch.zeros(7, sd["head.fc.weight"].shape[1])
    path = tmp_path / "shape.pth"
    torch.save(sd, path)
    err = str(_refused(path, model))
    assert "head.fc.weight" in err and "(7, " in err and "(4, " in err


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_zip_with_an_extra_pickle_runs_nothing(model, tmp_path):
    marker = tmp_path / "pwned"
    good = tmp_path / "good.pth"
    torch.save(model.state_dict(), good)
    # replace the archive's data.pkl by a malicious pickle, and also add a second one beside it
    evil_pkl = __import__("pickle").dumps(_Evil(marker), protocol=2)
    for mode in ("replace", "extra"):
        path = tmp_path / f"{mode}.pth"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            for item in src.infolist():
                data = src.read(item.filename)
                if mode == "replace" and item.filename.endswith("data.pkl"):
                    data = evil_pkl
                dst.writestr(item, data)
            if mode == "extra":
                dst.writestr(src.infolist()[0].filename.split("/")[0] + "/extra.pkl", evil_pkl)
        try:
            load_weights(create_model(NAME, num_classes=4), path)
            assert mode == "extra"  # the loader reads only data.pkl: the extra pickle is never opened
        except CheckpointError as e:
            assert str(path) in str(e)
        assert not marker.exists()


def test_malicious_pickle_refusal_does_not_advise_weights_only_false(model, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": model.state_dict(), "hook": _Evil(marker)}, path)
    err = str(_refused(path, model))
    assert not marker.exists()
    assert "refusing to unpickle" in err and "posix.system" in err
    assert "weights_only" not in err.replace("weights_only=True", "")  # no advice to turn it off
    assert "False" not in err


def test_garbage_bytes_are_refused(model, tmp_path):
    for suffix in (".pth", ".safetensors", ".bin"):
        _refused(_write(tmp_path, f"junk{suffix}", b"\x00\x01not a checkpoint" * 10), model)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "a zip, but no PyTorch archive")
    _refused(_write(tmp_path, "zip.pth", buf.getvalue()), model)
    _refused(_write(tmp_path, "empty.safetensors", b""), model)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize("content", [b"not an onnx file at all", b"", b"\x08\x07\x12\x03abc"], ids=["text", "empty", "no-graph"])
def test_an_onnx_file_that_is_not_onnx_is_refused_naming_it(content, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mobilenets.deploy import OnnxFileError, ort_session, quantize_onnx, read_onnx
    path = _write(tmp_path, "model.onnx", content)
    for call in (lambda: read_onnx(path), lambda: ort_session(path),
                 lambda: quantize_onnx(path, tmp_path / "q.onnx", torch.zeros(2, 3, 32, 32))):
        with pytest.raises(OnnxFileError, match="model.onnx"):
            call()
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ort_session(tmp_path / "missing.onnx")
