"""Quantization-aware training ending in the same INT8 QDQ ONNX graph as post-training
quantization (:func:`~mobilenets.deploy.quantize_onnx`).

PyTorch's own int8 runtime (FX ``convert_fx``, x86 backend) matched ONNX Runtime's INT8
accuracy on digits but ran 1.2-2.1x slower than ONNX Runtime fp32 and 1.8-2.4x slower than
ONNX Runtime INT8 (``benchmarks/INT8.md``), so QAT targets the same
ONNX Runtime QDQ graph as PTQ, written by this package:

* BatchNorms are folded first (:func:`~mobilenets.deploy.fuse`): the network trains as the
  conv-with-bias graph it will be deployed as, with no train/eval BN mismatch and nothing
  to re-fold after training (use a small learning rate: QAT is fine-tuning).
* Weights: per-output-channel symmetric fake quantization (scale ``max|w| / 64``, 7 bits
  as PTQ's ``reduce_range`` and for the same reason; ``/ 127`` with
  ``reduce_range=False``), recomputed every step; gradients pass straight through.
  Biases are rounded to the int32 grid ``input scale x weight scale`` the file stores
  them on. Without that, the rounded biases alone made ONNX Runtime's activations differ
  from the fake-quant model's in a third of the elements by mid-network (one quantization
  step at first, growing); with it, every quantized tensor of the exported graph is equal
  to the fake-quant model's (checked element by element on a trained MobileNetV4), bar
  rare single-step flips from float summation order.
* Activations: per-tensor uint8 fake quantization with ranges tracked as an exponential
  moving average of batch min / max while training, frozen in ``eval()``. They sit exactly
  where ONNX Runtime needs a Q/DQ pair to run a layer in integer arithmetic: model input,
  each conv's output after a ReLU / ReLU6 (which quantization then absorbs) or before and
  after any other activation (and h-swish's gate), residual sums, the squeeze-excite
  product and its inputs, pooled features entering a Linear. The logits stay float.
* :func:`export_qat_onnx` traces the fake-quant model (``fake_quantize_*`` become
  QuantizeLinear / DequantizeLinear), then stores weights as int8 and biases as int32
  initializers, which is what the ``QLinearConv`` rewrite requires, and checks ONNX
  Runtime's output against the fake-quant model.

Supported: the convolutional MobileNets (V1, V2, V3, V4 ``conv_*``, anti-aliased
variants; the fixed binomial filters of ``conv_blur_medium`` stay float, 4 small depthwise
convs). Models with attention (V4 hybrids' Mobile MQA, Mobile-Former) raise a
``ValueError`` pointing at :func:`quantize_onnx`, which quantizes them (QLinearMatMul,
QLinearSoftmax...).
"""

from .export import export_qat_onnx
from .modules import ActFakeQuant, QATModel, QConv2d, QLinear, fake_quant_weight, weight_scale
from .prepare import prepare_qat

__all__ = ["ActFakeQuant", "QATModel", "QConv2d", "QLinear", "export_qat_onnx", "fake_quant_weight",
           "prepare_qat", "weight_scale"]
