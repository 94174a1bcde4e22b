"""ONNX export, verified with ONNX Runtime.

The graph is exported from the fused model (BatchNorms folded, no-ops removed), with the
export forms of its modules swapped in (:mod:`.export_swaps`), by the TorchScript-based
exporter; the file is written atomically (temp file + rename), so an
interrupted or failed export never leaves a half-written model behind.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ..extras import require
from ..models.info import ModelInfo, model_info
from ..onnxrt import ort_session
from ..weights.io import atomic_write
from .export_swaps import swap_for_export
from .fuse import fuse

MIN_OPSET, MAX_OPSET = 13, 20


def export_onnx(model: nn.Module, path: Union[str, Path], input_size: Sequence[int] = (224, 224),
                opset: int = 17, dynamic_batch: bool = False, fused: bool = True,
                verify: bool = True, atol_rel: float = 1e-4) -> Path:
    """Export ``model`` to ONNX at ``path``.

    Args:
        model: any model of this library: a classifier (output ``logits``), a ``features_only``
            extractor (``features_<i>``) or a segmenter (its dict's keys: ``out``, ``aux``).
        path: output ``.onnx`` file (written atomically).
        input_size: ``(H, W)`` of the traced input (the graph is fixed to it unless dynamic).
        opset: ONNX opset, 13-20.
        dynamic_batch: make the batch dimension symbolic.
        fused: fold BatchNorms first (recommended; the math is the same).
        verify: run the file with ONNX Runtime and compare with eager; raise if max |diff| >
            ``atol_rel`` x max |eager|.

    Returns:
        The path written.

    Raises:
        ValueError: unsupported opset or input size. RuntimeError: verification failed.
        MissingDependencyError: onnx (or, to verify, onnxruntime) is not installed.
    """
    path = check_export_args(path, input_size, opset)
    if verify:
        require("onnxruntime", "checking the exported ONNX file with ONNX Runtime (verify=False skips it)")
    net = fuse(model) if fused else copy.deepcopy(model).eval()
    in_chans = model_info(model).in_chans
    x = torch.randn(2 if dynamic_batch else 1, in_chans, *input_size)
    with torch.no_grad():
        ref = net(x)  # the eager modules: verification checks the export forms against them
    swap_for_export(net, inplace=True)
    if isinstance(ref, dict):  # a segmenter: its outputs, in order, under their own names
        out_names, refs = list(ref), list(ref.values())
    elif isinstance(ref, (list, tuple)):
        out_names, refs = [f"features_{i}" for i in range(len(ref))], list(ref)
    else:
        out_names, refs = ["logits"], [ref]
    axes = None
    if dynamic_batch:
        axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in out_names}}

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the input-shape check is a constant in the traced graph
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            _export(tmp)
        if verify:
            _verify(tmp, x, refs, atol_rel)

    def _export(tmp: str) -> None:
        torch.onnx.export(net, (x,), tmp, input_names=["input"], output_names=out_names,
                          opset_version=int(opset), dynamic_axes=axes, do_constant_folding=True,
                          dynamo=False)
        write_model_info(tmp, model_info(model).replace(input_size=(in_chans, *input_size)))

    return atomic_write(path, write)


#: the ONNX ``metadata_props`` key holding the exported model's :class:`ModelInfo` (JSON)
MODEL_INFO_KEY = "mobilenets.model_info"


def write_model_info(file: Union[str, Path], info: ModelInfo) -> None:
    """Record ``info`` (name, task, classes, preprocessing) in an ONNX file's metadata, so a
    runtime reads how to feed the model from the file itself (:func:`read_model_info`)."""
    onnx = require("onnx", "ONNX export")
    proto = onnx.load(str(file))
    for p in [p for p in proto.metadata_props if p.key == MODEL_INFO_KEY]:
        proto.metadata_props.remove(p)
    proto.metadata_props.add(key=MODEL_INFO_KEY, value=json.dumps(info.to_dict()))
    onnx.save(proto, str(file))


def read_model_info(file: Union[str, Path]) -> Optional[ModelInfo]:
    """The :class:`ModelInfo` an exported ONNX file records (None: a file without one)."""
    onnx = require("onnx", "reading an ONNX file's metadata")
    proto = onnx.load(str(file), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == MODEL_INFO_KEY:
            return ModelInfo.from_dict(json.loads(p.value))
    return None


def check_export_args(path: Union[str, Path], input_size: Sequence[int], opset: int,
                      min_opset: int = MIN_OPSET) -> Path:
    """The output path, after ``ValueError`` for an opset outside ``min_opset..MAX_OPSET``, an
    input size that is not ``(H, W)`` with H, W >= 32, or a file name not ending in ``.onnx``;
    :class:`~mobilenets.extras.MissingDependencyError` without the onnx package."""
    require("onnx", "ONNX export")
    if not min_opset <= int(opset) <= MAX_OPSET:
        raise ValueError(f"unsupported opset {opset}; expected {min_opset}..{MAX_OPSET} (17 is a good default)")
    if len(input_size) != 2 or min(input_size) < 32:
        raise ValueError(f"input_size must be (H, W) with H, W >= 32, got {tuple(input_size)}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {path.name!r}")
    return path


def _verify(file: str, x: torch.Tensor, refs: list[torch.Tensor], atol_rel: float) -> Optional[float]:
    sess = ort_session(file, feature="checking the exported ONNX file with ONNX Runtime")
    outs = sess.run(None, {"input": x.numpy()})
    worst = 0.0
    for o, r in zip(outs, refs):
        r = r.numpy()
        err = float(abs(o - r).max() / max(abs(r).max(), 1e-12))
        worst = max(worst, err)
    if worst > atol_rel:
        raise RuntimeError(f"ONNX Runtime output differs from eager: relative max diff {worst:.2e} > {atol_rel:.0e}")
    return worst
