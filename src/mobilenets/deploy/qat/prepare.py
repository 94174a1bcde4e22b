"""From a float MobileNet to its fake-quantized copy (:func:`prepare_qat`)."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
import torch.nn as nn

from ...models.info import model_info
from .modules import ActFakeQuant, QATModel, QConvNormAct, QHead, QResidual, QSqueezeExcite


def _unsupported(model: nn.Module, why: str) -> ValueError:
    name = model_info(model).name
    return ValueError(f"quantization-aware training is not available for {name}: {why}. Use post-training "
                      f"quantization instead: quantize_onnx(model, 'model_int8.onnx', calibration_batches(...)) "
                      f"(CLI: mobilenets export --int8 --calib DIR), which quantizes it with ONNX Runtime")


def _convert(module: nn.Module, root: nn.Module, qmax: int, fed_by: ActFakeQuant) -> ActFakeQuant:
    """In place, as :func:`~mobilenets.deploy.fuse` folds: swap each float layer of ``module``
    for its QAT counterpart, and return the quantizer that produces ``module``'s output.

    ``fed_by`` is the quantizer that produces ``module``'s input; it is threaded through the
    children in order, so each quantized conv / linear learns which quantizer feeds it (its
    bias is rounded on that grid). This relies on a container's children being registered in
    the order its forward runs them, which holds for every convolutional block of this library
    (the residual blocks' ``branch`` and the MobileNet stem -> stages -> head); a model where
    it did not would fail :func:`export_qat_onnx`'s comparison with ONNX Runtime.
    """
    from ...blocks import ResidualBlock
    from ...layers import ConvNormAct, SqueezeExcite
    from ...models.mobilenet import ClassifierHead

    for name, child in list(module.named_children()):
        if isinstance(child, ConvNormAct):
            if not isinstance(child.bn, nn.Identity):
                raise _unsupported(root, f"{name}: a normalization layer that cannot be folded "
                                         f"({type(child.bn).__name__})")
            q = QConvNormAct(child, qmax, fed_by)
            fed_by = q.output_quant
        elif isinstance(child, SqueezeExcite):
            q = QSqueezeExcite(child, qmax)
            fed_by = q.fq_out
        elif isinstance(child, ResidualBlock):
            if not isinstance(child.layer_scale, nn.Identity):
                raise _unsupported(root, "its blocks use layer scale (hybrid models)")
            branch_out = _convert(child, root, qmax, fed_by)
            q = QResidual(child)
            fed_by = q.fq_sum or branch_out
        elif isinstance(child, ClassifierHead):
            q = QHead(child, qmax)
        elif isinstance(child, (nn.Sequential, nn.ModuleList)):
            fed_by = _convert(child, root, qmax, fed_by)
            continue
        elif isinstance(child, (nn.Conv2d, nn.Linear)) or any(True for _ in child.parameters()):
            raise _unsupported(root, f"it contains {type(child).__name__} ({name}), which has no INT8 QAT "
                                     f"mapping")
        else:
            continue
        setattr(module, name, q)
    return fed_by


def prepare_qat(model: nn.Module, example_input: Optional[Union[torch.Tensor, Iterable]] = None,
                reduce_range: bool = True) -> QATModel:
    """A fake-quantized copy of ``model`` for quantization-aware training.

    BatchNorms are folded into the convs first (and dropout / stochastic depth dropped: the copy
    is the inference graph); weights and activations are fake-quantized the way ONNX Runtime
    will run them (see :mod:`mobilenets.deploy.qat`). Train it with an ordinary loop (a
    small learning rate: it is fine-tuning), then :func:`export_qat_onnx`. Distilling the fp32
    model (loss :func:`mobilenets.train.distill.kd_loss` of the QAT logits against the fp32
    model's) keeps top-1 agreement with fp32 highest (measured on digits: ``benchmarks/INT8.md``).

    Args:
        model: a convolutional MobileNet of this library (V1, V2, V3, V4 ``conv_*``); the
            original is not modified.
        example_input: images (a tensor, or batches) to initialise the activation ranges
            (their min / max); strongly recommended. Without it the first training batch does.
        reduce_range: 7-bit weights (``[-64, 64]``, ONNX Runtime's ``reduce_range``). On x86
            CPUs without VNNI the u8 x s8 kernels add pairs of products in int16 and saturate
            with full-range weights, so ONNX Runtime would not compute what the fake-quant
            model trained on (benchmarks/INT8.md, "Design measurements"); with 7-bit weights it
            matches exactly, and training adapts to the coarser grid. ``False`` for full
            8-bit weights on VNNI / ARM targets.

    Raises:
        ValueError: for models with attention (V4 hybrids, Mobile-Former) and feature
            extractors, naming why and pointing at :func:`quantize_onnx`.
    """
    from ...blocks import MobileMQA
    from ...models.mobilenet import MobileNet
    from ..fuse import fuse

    if not isinstance(model, MobileNet):
        raise _unsupported(model, "only classifiers built by MobileNet (V1-V4 conv) are supported, got a "
                                  f"{type(model).__name__}")
    if any(isinstance(m, MobileMQA) for m in model.modules()):
        raise _unsupported(model, "its Mobile MQA attention blocks (batched matmuls, softmax) have no "
                                  "fake-quant mapping here")
    # a deep copy in eval mode (BN folded, dropout / drop-path removed), converted in place
    qat = QATModel(fuse(model), model_info(model).name)
    _convert(qat.net, model, 64 if reduce_range else 127, qat.fq_input)
    if example_input is not None:
        qat.calibrate(example_input)
    qat.train()
    return qat

