"""From a float MobileNet to its fake-quantized copy (:func:`prepare_qat`)."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
import torch.nn as nn

from .modules import (ActFakeQuant, QATModel, QConv2d, QConvNormAct, QHead, QLinear, QResidual,
                      QSqueezeExcite)


def _unsupported(model: nn.Module, why: str) -> ValueError:
    name = getattr(model, "name", None) or type(model).__name__
    return ValueError(f"quantization-aware training is not available for {name}: {why}. Use post-training "
                      f"quantization instead: quantize_onnx(model, 'model_int8.onnx', calibration_batches(...)) "
                      f"(CLI: mobilenets export --int8 --calib DIR), which quantizes it with ONNX Runtime")


def _convert(module: nn.Module, root: nn.Module, qmax: int) -> None:
    from ...blocks import ResidualBlock
    from ...layers import ConvNormAct, SqueezeExcite
    from ...models.mobilenet import ClassifierHead

    for name, child in list(module.named_children()):
        if isinstance(child, ConvNormAct):
            if not isinstance(child.bn, nn.Identity):
                raise _unsupported(root, f"{name}: a normalization layer that cannot be folded "
                                         f"({type(child.bn).__name__})")
            setattr(module, name, QConvNormAct(child, qmax))
        elif isinstance(child, SqueezeExcite):
            setattr(module, name, QSqueezeExcite(child, qmax))
        elif isinstance(child, ResidualBlock):
            if not isinstance(child.layer_scale, nn.Identity):
                raise _unsupported(root, "its blocks use layer scale (hybrid models)")
            _convert(child, root, qmax)
            setattr(module, name, QResidual(child))
        elif isinstance(child, ClassifierHead):
            setattr(module, name, QHead(child, qmax))
        elif isinstance(child, (nn.Sequential, nn.ModuleList)):
            _convert(child, root, qmax)
        elif isinstance(child, (nn.Conv2d, nn.Linear)) or any(True for _ in child.parameters()):
            raise _unsupported(root, f"it contains {type(child).__name__} ({name}), which has no INT8 QAT "
                                     f"mapping")


@torch.no_grad()
def _link_inputs(qat: QATModel) -> None:
    """Tell every quantized layer which fake-quantizer produces its input (its bias is
    quantized with that scale): one forward pass with pass-through quantizers, matching the
    tensor objects a quantizer returns with those a layer receives."""
    fqs = qat.fake_quantizers()
    produced: dict[int, ActFakeQuant] = {}
    keep: list = []  # keeps the tensors alive, so their ids are not reused during the pass

    def after_fq(mod, inp, out):
        for t in (out, out._base):  # a layer may receive a view (the head's flatten)
            if t is not None:
                produced[id(t)] = mod
                keep.append(t)

    def before_layer(mod, inp):
        x = inp[0]
        src = produced.get(id(x)) or (produced.get(id(x._base)) if x._base is not None else None)
        if src is None:
            raise RuntimeError(f"internal error: no fake-quantizer feeds {type(mod).__name__}")
        mod._input_fq = [src]  # a list: not registered as a submodule

    layers = [m for m in qat.modules() if isinstance(m, (QConv2d, QLinear))]
    handles = [f.register_forward_hook(after_fq) for f in fqs]
    handles += [m.register_forward_pre_hook(before_layer) for m in layers]
    state = [(f.enabled, f.calibrating) for f in fqs]
    was_training = qat.training
    for f in fqs:
        f.enabled, f.calibrating = False, False
    try:
        qat.eval()(torch.zeros(1, qat.in_chans, 64, 64))
    finally:
        for h in handles:
            h.remove()
        for f, (e, c) in zip(fqs, state):
            f.enabled, f.calibrating = e, c
        qat.train(was_training)


def prepare_qat(model: nn.Module, example_input: Optional[Union[torch.Tensor, Iterable]] = None,
                reduce_range: bool = True) -> QATModel:
    """A fake-quantized copy of ``model`` for quantization-aware training.

    BatchNorms are folded into the convs first (and dropout / stochastic depth dropped: the copy
    is the inference graph); weights and activations are fake-quantized the way ONNX Runtime
    will run them (see :mod:`mobilenets.deploy.qat`). Train it with an ordinary loop (a
    small learning rate: it is fine-tuning), then :func:`export_qat_onnx`. Distilling the fp32
    model (loss :func:`mobilenets.train.distill.kd_loss` of the QAT logits against the fp32
    model's) keeps top-1 agreement with fp32 highest: on digits, label-only fine-tuning gave
    98.6-99.2 % agreement, distillation 98.6-100 % (``benchmarks/INT8.md``).

    Args:
        model: a convolutional MobileNet of this library (V1, V2, V3, V4 ``conv_*``); the
            original is not modified.
        example_input: images (a tensor, or batches) to initialise the activation ranges
            (their min / max); strongly recommended. Without it the first training batch does.
        reduce_range: 7-bit weights (``[-64, 64]``, ONNX Runtime's ``reduce_range``). On x86
            CPUs without VNNI the u8 x s8 kernels add pairs of products in int16 and saturate
            with full-range weights, so ONNX Runtime would not compute what the fake-quant
            model trained on (measured: up to 8 % of the largest logit); with 7-bit weights it
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
    net = fuse(model)  # a deep copy in eval mode: BN folded, dropout / drop-path removed
    _convert(net, model, 64 if reduce_range else 127)
    qat = QATModel(net, getattr(model, "name", type(model).__name__))
    _link_inputs(qat)
    if example_input is not None:
        qat.calibrate(example_input)
    qat.train()
    return qat

