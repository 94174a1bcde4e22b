"""Quantization-aware training for the on-device runtimes (ExecuTorch-XNNPACK, LiteRT): PT2E's
``prepare_qat_pt2e`` with the runtime's own quantizer, so the fake quantization trained through
is the one the runtime's converter then turns into integer kernels.

:class:`MobileQAT` is an ``nn.Module`` that any training loop can fine-tune:

1. The float model is prepared as :func:`~mobilenets.deploy.export_mobile` prepares it: BatchNorms
   folded into the convs (:func:`~mobilenets.deploy.fuse`) and the runtime's export forms swapped
   in (LiteRT INT8: the ``"mobile_int8"`` ones).
2. ``torch.export`` captures it with a dynamic batch dimension, and ``prepare_qat_pt2e`` inserts
   the quantizer's fake-quantize modules (per-channel symmetric int8 weights, static int8
   activations with moving-average min / max observers) where PTQ would put observers.
3. ``train()`` / ``eval()`` switch the captured graph with PT2E's ``move_exported_model_to_train``
   / ``_eval`` (an exported graph ignores ``Module.train``).
4. :meth:`MobileQAT.convert` runs ``convert_pt2e``: the quantized reference graph that
   :func:`~mobilenets.deploy.export_mobile` (``qat=``) lowers, writes and verifies.

Why fold the BatchNorms before capture rather than let PT2E simulate them (it keeps a conv + BN
pair as a conv scaled by the BN's running std, followed by the BN, and folds at
``convert_pt2e``): folded first, the graph QAT trains is exactly the one that ships (conv with
bias, per-channel weight scales of the folded weights), with no train / eval BatchNorm
mismatch. The price is that the batch statistics do not move during the fine-tune, which at
QAT's small learning rates they barely would (the same choice as
:func:`~mobilenets.deploy.prepare_qat` for ONNX Runtime).
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ...models.info import model_info, set_model_info
from ..mobile import QATExport, export_program
from ..runtimes import QAT_RUNTIMES, mobile_runtime

def consistent_qat_quantizer(quantizer):
    """``quantizer`` (a runtime's PT2E QAT quantizer) set to fake-quantize exactly as
    ``convert_pt2e`` will quantize: every ``FusedMovingAvgObsFakeQuantize`` replaced by the
    unfused ``FakeQuantize`` with the same observer (its scale and zero point are the observer's
    ``calculate_qparams``, which ``convert_pt2e`` uses), and weights observed as they are at each
    step (per-channel min / max) rather than as a moving average that lags the training.

    Why: the fused kernel does not quantize what the converted model computes. Measured on
    MobileNetV1 0.25 with the XNNPACK quantizer (torch 2.14, torchao's PT2E): for every
    per-channel symmetric weight whose values are all of one sign, as many of a depthwise 3x3's
    nine are, it fake-quantizes asymmetrically (zero point +-127 and half the scale) where
    ``convert_pt2e`` uses zero point 0 and the full scale, and elsewhere its scale is 0.4 % off
    (``max / 127.5`` vs ``max / 127``). QAT then trains a model that is not the one exported: the
    "eval" QAT model and its converted graph differed by 30-126 % (relative max) on the logits
    and agreed on 55-98 % of top-1 before this; after it they are identical
    (tests/test_qat_mobile.py)."""
    import dataclasses

    from torchao.quantization.pt2e.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
    from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver

    def unfused(spec, weight: bool):
        p = getattr(getattr(spec, "observer_or_fake_quant_ctr", None), "p", None)
        if p is None or p.func is not FusedMovingAvgObsFakeQuantize:
            return spec
        kw = dict(p.keywords)
        if weight and spec.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
            kw["observer"] = PerChannelMinMaxObserver
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(**kw))

    c = quantizer.global_config
    quantizer.set_global(dataclasses.replace(c, input_activation=unfused(c.input_activation, False),
                                             output_activation=unfused(c.output_activation, False),
                                             weight=unfused(c.weight, True)))
    return quantizer


class MobileQAT(nn.Module, QATExport):
    """``model`` prepared for quantization-aware training with ``runtime``'s PT2E quantizer.

    Args:
        model: a classifier of this library (not modified; its ModelInfo carries over).
        runtime: ``"executorch"``, ``"litert"`` (or ``"tflite"``), or a
            :class:`~mobilenets.deploy.mobile.Runtime` with a PT2E quantizer.
        input_size: ``(H, W)`` the graph is captured at (the batch stays dynamic).
        example: images to initialise the activation ranges (one forward in eval mode), strongly
            recommended: without it the first training batches set them.
    """

    def __init__(self, model: nn.Module, runtime: Union[str, object] = "executorch",
                 input_size: Sequence[int] = (224, 224), example: Optional[torch.Tensor] = None):
        super().__init__()
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        from ..mobile import prepare

        rt = mobile_runtime(runtime)
        rt.require()
        quantizer = rt.pt2e_quantizer(qat=True)
        if quantizer is None:
            raise ValueError(f"{type(rt).__name__} has no PT2E quantizer: use its own quantization")
        quantizer = consistent_qat_quantizer(quantizer)
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
        _, form, in_chans = prepare(model, target=rt.forms_for(int8=True), main_output=rt.main_output)
        x = torch.randn(2, in_chans, *size, generator=torch.Generator().manual_seed(0))
        ep = export_program(form, x, free_batch=True)
        self.graph = prepare_qat_pt2e(ep.module(), rt.keep_float(quantizer, form))
        self.runtime, self.quantizer, self.input_size, self.in_chans = rt, quantizer, size, in_chans
        set_model_info(self, model_info(model))
        if example is not None:
            self.observe(example)
        self.train()

    @torch.no_grad()
    def observe(self, images: torch.Tensor, batch: int = 32) -> None:
        """Run ``images`` through in training mode without gradients, so the activation
        observers see their ranges (the weights do not change)."""
        mode = self.training
        self.train()
        for i in range(0, len(images), batch):
            self.graph(images[i:i + batch])
        self.train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> "MobileQAT":
        """Training: the activation ranges follow the batches (moving-average min / max).
        Evaluation: they stay as trained, so the model computes what :meth:`convert` and the
        exported file will (PT2E's fake-quantize modules keep observing in an exported graph's
        eval mode; measured before this: the file agreed with the "eval" QAT model on 75 % of
        images, because each evaluation batch had moved the ranges again)."""
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        for m in self.graph.modules():
            if hasattr(m, "enable_observer"):
                m.enable_observer() if mode else m.disable_observer()
        self.training = mode
        return self

    def convert(self) -> nn.Module:
        """The quantized reference graph (``convert_pt2e``) of a copy; this model is unchanged."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        g = copy.deepcopy(self.graph)
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(g)
        out = convert_pt2e(g, fold_quantize=self.runtime.fold_quantize)
        for mod in out.modules():
            mod.training = False
        return out


__all__ = ["MobileQAT", "QAT_RUNTIMES", "consistent_qat_quantizer"]
