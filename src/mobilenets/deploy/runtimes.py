"""The export formats and their :class:`~mobilenets.deploy.mobile.Runtime` objects: what
``mobilenets export --format`` and the architecture search's latency tables name."""

from __future__ import annotations

import os

import torch
import torch.nn as nn

#: ``mobilenets export --format`` -> the file suffix
EXPORT_FORMATS = {"onnx": ".onnx", "executorch": ".pte", "tflite": ".tflite"}
#: the runtimes' names, for messages
FORMAT_LABELS = {"onnx": "ONNX", "executorch": "ExecuTorch", "tflite": "LiteRT"}


def runtime_for(fmt: str, opset: int = 17, dynamic_batch: bool = False):
    """The :class:`~mobilenets.deploy.mobile.Runtime` of an export format (``onnx``,
    ``executorch``, ``tflite``)."""
    if fmt == "onnx":
        from .onnx_export import OnnxRuntime
        return OnnxRuntime(opset=opset, dynamic_batch=dynamic_batch)
    if dynamic_batch:
        raise ValueError(f"--format {fmt} writes a fixed-shape file (batch 1): drop --dynamic-batch")
    if fmt == "executorch":
        from .executorch_export import EXECUTORCH
        return EXECUTORCH
    if fmt == "tflite":
        from .litert_export import LITERT
        return LITERT
    raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")


#: the on-device runtimes by name (``"litert"`` or its format ``"tflite"``) -> export format
QAT_RUNTIMES = {"executorch": "executorch", "litert": "tflite", "tflite": "tflite"}


def mobile_runtime(runtime):
    """The :class:`~mobilenets.deploy.mobile.Runtime` of an on-device runtime with a PT2E
    quantizer (``"executorch"``, ``"litert"`` / ``"tflite"``); a Runtime is returned as is."""
    if isinstance(runtime, str):
        if runtime not in QAT_RUNTIMES:
            raise ValueError(f"PT2E quantization-aware training is for the on-device runtimes executorch, litert; "
                             f"got {runtime!r} (ONNX Runtime has its own: mobilenets.deploy.prepare_qat)")
        return runtime_for(QAT_RUNTIMES[runtime])
    return runtime


def format_of(path) -> str:
    """The export format of a file by its suffix (``.onnx`` -> ``onnx``, ``.pte`` -> ``executorch``,
    ``.tflite`` -> ``tflite``); ``ValueError`` naming the suffixes for any other file."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    for fmt, s in EXPORT_FORMATS.items():
        if s == suffix:
            return fmt
    raise ValueError(f"expected an exported file ({', '.join(EXPORT_FORMATS.values())}), got {os.fspath(path)!r}")



def file_runner(path, threads: int = 0) -> tuple[str, object]:
    """``(format, runner)`` of an exported file: its format by suffix (:func:`format_of`) and its
    runtime's runner (:meth:`~mobilenets.deploy.mobile.Runtime.runner`); ``FileNotFoundError``
    naming the runtime when the file is missing."""
    fmt = format_of(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{FORMAT_LABELS[fmt]} file not found: {os.fspath(path)}")
    return fmt, runtime_for(fmt).runner(os.fspath(path), threads)


class FileModel(nn.Module):
    """An exported classifier file (``.onnx``, ``.pte``, ``.tflite``) as a module for evaluation:
    ``forward(x)`` runs the file in its runtime on each image of ``x`` (any batch size: the file's
    batch is fixed, or free) and returns its first output, the logits ``(N, classes)``.
    ``path``; ``runtime`` (its label, for messages)."""

    def __init__(self, path, threads: int = 0):
        super().__init__()
        fmt, self._run = file_runner(path, threads)
        self.path, self.runtime = os.fspath(path), FORMAT_LABELS[fmt]
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .mobile import outputs

        return torch.cat([outputs(self._run(x[i:i + 1]))[0] for i in range(len(x))])
