"""Fake-quantized modules for quantization-aware training: each computes what ONNX Runtime's
integer kernel for the layer will compute (see :mod:`mobilenets.deploy.qat`)."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from ...layers import Conv2dSame
from ...models.info import model_info


class ActFakeQuant(nn.Module):
    """Per-tensor asymmetric uint8 fake quantization of an activation.

    The range is the batch [min, max] (widened to include 0, so zero and padding are exact),
    averaged over training steps with ``momentum``; in ``eval()`` it is frozen. Gradients pass
    straight through inside the range and are zero outside it (PyTorch's fake-quant STE).
    """

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.calibrating = False   # set by QATModel.calibrate: plain running min / max, no averaging
        self.enabled = True

    @property
    def initialized(self) -> bool:
        return bool(torch.isfinite(self.min_val)) and bool(torch.isfinite(self.max_val))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not self.initialized:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        elif self.calibrating:
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        else:
            self.min_val.lerp_(lo, self.momentum)
            self.max_val.lerp_(hi, self.momentum)

    def qparams(self) -> tuple[float, int]:
        """(scale, zero point) of the uint8 grid, as ONNX Runtime computes them."""
        lo = min(float(self.min_val), 0.0)
        hi = max(float(self.max_val), 0.0)
        scale = (hi - lo) / 255.0
        if scale <= 1e-12:
            return 1.0, 0
        zp = int(min(255, max(0, round(-lo / scale))))
        return float(np.float32(scale)), zp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating or (self.training and not torch.jit.is_tracing()):
            self.observe(x)
        if not self.enabled:
            return x
        if not self.initialized:
            raise RuntimeError("fake-quant ranges are not initialised: pass example_input to prepare_qat(), or "
                               "run a training step (model.train()) before evaluating")
        scale, zp = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)

    def extra_repr(self) -> str:
        return f"range=[{float(self.min_val):.4g}, {float(self.max_val):.4g}]"


def fake_quant_weight(w: torch.Tensor, qmax: int = 127, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization onto ``[-qmax, qmax]`` (scale
    ``max|w_c| / qmax``, ONNX Runtime's PTQ rule; ``qmax=64`` is its ``reduce_range``);
    gradients pass straight through."""
    if scale is None:
        scale = weight_scale(w, qmax)
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -128, 127)


def weight_scale(w: torch.Tensor, qmax: int = 127) -> torch.Tensor:
    """Per-output-channel symmetric scale ``max|w_c| / qmax`` (1 for an all-zero channel)."""
    amax = w.detach().abs().flatten(1).amax(1).float()
    return torch.where(amax > 0, amax / float(qmax), torch.ones_like(amax))


class _QuantWeightMixin:
    """Fake quantization of a layer's weight (per output channel) and bias (int32 on the grid
    ``input scale x weight scale``, as the exported file stores it: ONNX Runtime adds the
    rounded bias, so the fake-quant model adds it too)."""

    qmax = 127
    input_quant: Optional["ActFakeQuant"] = None  # the quantizer whose output this layer reads

    def bind_input(self, fq: "ActFakeQuant") -> None:
        """Round the bias on ``fq``'s grid: ``fq`` produces this layer's input. Kept as a plain
        reference, not a submodule, since ``fq`` belongs to (and is saved with) the layer before."""
        object.__setattr__(self, "input_quant", fq)

    def quantized_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = getattr(self, "_frozen_scale", None)
        if scale is None:
            scale = weight_scale(self.weight, self.qmax)
        w = fake_quant_weight(self.weight, self.qmax, scale)
        b = getattr(self, "_frozen_bias", None)
        if b is not None:  # export: the rounded bias as a constant
            return w, b
        b = self.bias
        fq = self.input_quant
        if fq is not None and fq.enabled and fq.initialized:
            bs = fq.qparams()[0] * scale
            b = b + (torch.round(b.detach() / bs) * bs - b.detach())  # straight-through
        return w, b


class QConv2d(_QuantWeightMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weight (per channel, int8) and bias (int32)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, qmax: int = 127) -> "QConv2d":
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or isinstance(conv, Conv2dSame):
            raise ValueError(f"QAT supports zero-padded convs with explicit static padding, got {conv} "
                             f"(TF 'SAME' padding, pad_type='same', is computed per input size)")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, bias=True)
        q.weight = conv.weight
        if conv.bias is not None:
            q.bias = conv.bias
        else:
            q.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device))
        q.qmax = qmax
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *self.quantized_params())


class QLinear(_QuantWeightMixin, nn.Linear):
    """``nn.Linear`` with fake-quantized weight (per output feature, int8) and bias (int32)."""

    @classmethod
    def from_float(cls, lin: nn.Linear, qmax: int = 127) -> "QLinear":
        q = cls(lin.in_features, lin.out_features, bias=True)
        q.weight = lin.weight
        q.bias = lin.bias if lin.bias is not None else nn.Parameter(torch.zeros(lin.out_features))
        q.qmax = qmax
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, *self.quantized_params())


# Activations that uint8 quantization of their output absorbs (ONNX Runtime removes them).
_ABSORBED = (nn.Identity, nn.ReLU, nn.ReLU6)


class _QActivation(nn.Module):
    """``act`` with fake-quant on its output, and on its input too when ``act`` is not
    absorbed by quantization (h-swish, GELU...: they run in float between DQ and Q).

    h-swish is computed as ``x * hardsigmoid(x)`` (the form the ONNX exporter writes) with the
    gate quantized as well, so the product runs as ``QLinearMul``, as in PTQ."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act
        self.fq_in = None if isinstance(act, _ABSORBED) else ActFakeQuant()
        self.fq_gate = ActFakeQuant() if isinstance(act, nn.Hardswish) else None
        self.fq_out = ActFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fq_in is not None:
            x = self.fq_in(x)
        if self.fq_gate is not None:
            return self.fq_out(x * self.fq_gate(nn.functional.hardsigmoid(x)))
        return self.fq_out(self.act(x))


class QConvNormAct(nn.Module):
    """A folded ConvNormAct for QAT: quantized conv -> activation -> fake-quant (-> pool).
    ``fed_by``: the quantizer that produces its input."""

    def __init__(self, m: nn.Module, qmax: int, fed_by: ActFakeQuant):
        super().__init__()
        self.conv = QConv2d.from_float(m.conv, qmax)
        self.conv.bind_input(fed_by)
        self.act = _QActivation(m.act)
        self.aa = m.aa
        self.fq_aa = None if isinstance(m.aa, nn.Identity) else ActFakeQuant()

    @property
    def output_quant(self) -> ActFakeQuant:
        return self.act.fq_out if self.fq_aa is None else self.fq_aa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        if self.fq_aa is not None:
            x = self.fq_aa(self.aa(x))
        return x


class QSqueezeExcite(nn.Module):
    """Squeeze-excite for QAT: the pooled vector, both 1x1 convs and the gated product are
    quantized; the gate (hard-sigmoid) runs in float between them."""

    def __init__(self, m: nn.Module, qmax: int = 127):
        super().__init__()
        self.fq_pool = ActFakeQuant()
        self.fc1 = QConv2d.from_float(m.fc1, qmax)
        self.fc1.bind_input(self.fq_pool)
        self.act = _QActivation(m.act)
        self.fc2 = QConv2d.from_float(m.fc2, qmax)
        self.fc2.bind_input(self.act.fq_out)
        self.gate = _QActivation(m.gate)
        self.fq_out = ActFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fq_pool(x.mean((2, 3), keepdim=True))
        return self.fq_out(x * self.gate(self.fc2(self.act(self.fc1(s)))))


class QResidual(nn.Module):
    """A residual block for QAT: the block itself (its layers already converted; its own
    ``forward`` adds the shortcut) followed by a fake-quantized sum, which ONNX Runtime's
    ``QLinearAdd`` writes. Blocks without a shortcut get no quantizer: their last layer's
    output is already quantized."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.fq_sum = ActFakeQuant() if block.has_skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y if self.fq_sum is None else self.fq_sum(y)


class QHead(nn.Module):
    """Classifier head for QAT: pooled features and the hidden layer are quantized; the final
    Linear has int8 weights and writes float logits."""

    def __init__(self, m: nn.Module, qmax: int = 127):
        super().__init__()
        pool = getattr(getattr(m, "pool", None), "pool_type", "avg")
        if pool != "avg":
            raise ValueError(f"INT8 QAT takes heads with global_pool='avg' (the quantized global average pool), "
                             f"got global_pool={pool!r}")
        self.fq_pool = ActFakeQuant()
        has_hidden = isinstance(m.hidden, nn.Linear)
        if has_hidden and not isinstance(m.norm, nn.Identity):
            raise ValueError("the head's BatchNorm1d must be folded before QAT (prepare_qat does this)")
        fc_input = self.fq_pool
        if has_hidden:
            self.hidden = QLinear.from_float(m.hidden, qmax)
            self.hidden.bind_input(self.fq_pool)
            self.act = _QActivation(m.act)
            fc_input = self.act.fq_out
        else:
            self.hidden = self.act = nn.Identity()
        self.fc = QLinear.from_float(m.fc, qmax) if isinstance(m.fc, nn.Linear) else nn.Identity()
        if isinstance(self.fc, QLinear):
            self.fc.bind_input(fc_input)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # keepdim, then flatten after the quantizer: exported as DQ -> pool -> Q, which ONNX
        # Runtime fuses into QLinearGlobalAveragePool (a Flatten between pool and Q blocks that)
        x = self.fq_pool(x.mean((2, 3), keepdim=True)).flatten(1) if x.ndim == 4 else self.fq_pool(x)
        x = self.act(self.hidden(x))
        return x if pre_logits else self.fc(x)


class QATModel(nn.Module):
    """A fake-quantized copy of a model (see :func:`prepare_qat`). ``net`` is the converted
    network; ``forward`` quantizes the input and runs it."""

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.fq_input = ActFakeQuant()
        self.net = net
        self.name = name
        info = model_info(net)
        self.in_chans, self.num_classes = info.in_chans, info.num_classes
        self.example_input: Optional[torch.Tensor] = None  # set by calibrate(); export checks with it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.fq_input(x))

    def fake_quantizers(self) -> list[ActFakeQuant]:
        return [m for m in self.modules() if isinstance(m, ActFakeQuant)]

    @torch.no_grad()
    def calibrate(self, images: Union[torch.Tensor, Iterable]) -> "QATModel":
        """Set every activation range to the min / max seen on ``images`` (a tensor or an
        iterable of batches); the model is left in ``eval()``."""
        fqs = self.fake_quantizers()
        self.eval()
        for f in fqs:
            f.calibrating, f.enabled = True, False
        try:
            for x in ([images] if isinstance(images, torch.Tensor) else images):
                x = x[0] if isinstance(x, (tuple, list)) else x
                self(x)
                if self.example_input is None:  # a few real images to check the export with
                    self.example_input = x[:8].detach().clone()
        finally:
            for f in fqs:
                f.calibrating, f.enabled = False, True
        return self

