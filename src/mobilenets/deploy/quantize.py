"""INT8 deployment: post-training static quantization and quantization-aware training, both
ending in a QDQ ONNX model that ONNX Runtime runs with integer kernels.

Post-training quantization (:func:`quantize_onnx`)
    The model is exported fp32 with BatchNorms folded (:func:`~mobilenets.deploy.export_onnx`),
    pre-processed (``quant_pre_process``: typed tensors let MobileNetV3's h-swish products be
    quantized too), activation ranges are calibrated by ONNX Runtime on a few hundred images,
    and ``onnxruntime.quantization.quantize_static`` writes a QDQ model (QuantizeLinear /
    DequantizeLinear pairs around every Conv / Gemm / Add / Mul). At session start ONNX Runtime
    rewrites each ``DQ -> Conv -> (Relu|Clip) -> Q`` group into one ``QLinearConv`` (``QGemm``,
    ``QLinearAdd``, ``QLinearMul`` likewise): :func:`int8_op_counts` shows the rewritten graph.

Data types (measured on the development machine, an AVX2 AMD EPYC "Zen 2" without VNNI, ONNX
Runtime 1.32, batch 1, 224 px; ``benchmarks/INT8.md``)
    * activations ``uint8`` (asymmetric), weights ``int8`` (symmetric, per output channel):
      ONNX Runtime's fast x86 path (``QLinearConv`` u8s8, the symmetric "ConvSym" kernels).
      ``int8`` activations ran 15-50 % slower than ``uint8``; ``uint8`` weights were no faster
      and need a zero point per channel.
    * ``per_channel=True`` (default): same speed as per-tensor within noise, and per-tensor
      weights lose accuracy on depthwise convs, whose channels have very different ranges.
    * ``reduce_range=True`` (default): weights on 7 bits (``[-64, 64]``). x86 CPUs without
      VNNI multiply u8 x s8 with ``vpmaddubsw``, which adds pairs of products in int16 and
      saturates when both are large (255 x 127 x 2 > 32767). Measured with full-range weights
      on small MobileNets: ONNX Runtime's integer result differed from the QDQ graph computed
      exactly by 9-10 % (relative RMS of the logits) on V3 / V4, and the total error against
      fp32 was 8-10 %; with 7-bit weights the integer kernels are exact (0.0 difference) and the
      total error 2-2.6 %. 7-bit weights are safe on every CPU; pass ``reduce_range=False``
      for VNNI / ARM targets, where full 8-bit weights halve the weight rounding error.
    * Without VNNI an x86 core multiplies u8 x s8 pairs at about the fp32 FMA rate
      (``vpmaddubsw`` + ``vpmaddwd`` against one ``vfmadd``), so INT8 on this CPU is roughly as
      fast as ONNX Runtime's very good fp32 NCHWc kernels: the gain is in file size (4x) and
      memory traffic, not in arithmetic. VNNI / AMX CPUs (Zen 4, Ice Lake and later) and ARM
      dot-product CPUs are where INT8 pays off.

Quantization-aware training (:func:`prepare_qat`, :func:`export_qat_onnx`)
    PyTorch's own int8 runtime (FX ``convert_fx``, x86 backend) matched ONNX Runtime's INT8
    accuracy on digits but ran 1.2-2.1x slower than ONNX Runtime fp32 and 1.8-2.4x slower than
    ONNX Runtime INT8 (``benchmarks/INT8.md``), so QAT targets the same
    ONNX Runtime QDQ graph as PTQ, written by this module:

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

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..weights.io import atomic_write
from .onnx_export import MAX_OPSET, export_onnx

METHODS = ("minmax", "entropy", "percentile")
MIN_QDQ_OPSET = 13  # per-channel QuantizeLinear (axis attribute) needs opset 13
ACTIVATION_TYPES = ("uint8", "int8")
WEIGHT_TYPES = ("int8", "uint8")
CALIB_SOURCES = ("digits", "fake")
NO_CALIBRATION = ("INT8 post-training quantization needs calibration data: pass calibration=<a tensor "
                  "of images (N, C, H, W) or a DataLoader>, e.g. calibration_batches('digits' | 'fake' | "
                  "DIR) (CLI: --calib digits|fake|DIR)")

Calibration = Union[torch.Tensor, np.ndarray, Iterable]


# --- small helpers ---------------------------------------------------------------------------
def _require_ort():
    """``onnxruntime`` (with its quantization tools and ``onnx``), or an ImportError saying how
    to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise ImportError("INT8 quantization needs ONNX Runtime and onnx: pip install onnxruntime onnx "
                          f"(or pip install 'mobilenets[onnx]'); import failed: {e}") from None
    return onnxruntime


def agreement(a_logits: Union[torch.Tensor, np.ndarray], b_logits: Union[torch.Tensor, np.ndarray]) -> float:
    """Share (0..1) of rows whose arg-max (top-1 class) is the same in both logit arrays."""
    a, b = torch.as_tensor(np.asarray(a_logits)), torch.as_tensor(np.asarray(b_logits))
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"agreement needs two (N, classes) arrays of the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return float((a.argmax(1) == b.argmax(1)).double().mean())


def cosine(a: Union[torch.Tensor, np.ndarray], b: Union[torch.Tensor, np.ndarray]) -> float:
    """Cosine similarity between two arrays, flattened."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64).flatten()
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64).flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def ort_session(path: Union[str, Path], threads: int = 0, optimized_path: Optional[str] = None,
                optimize: bool = True, spinning: bool = True):
    """A CPU ``InferenceSession`` (quiet logging; ``threads=0``: ONNX Runtime's default).
    ``optimize=False`` runs the graph as written (QDQ simulated in float, no int8 kernels).
    ``spinning=False``: worker threads sleep after a run instead of spinning (ONNX Runtime's
    default keeps them busy-waiting, which steals the cores from whatever runs next: use it
    when timing ONNX Runtime interleaved with other paths)."""
    ort = _require_ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_logits(model: Union[str, Path, Any], images: torch.Tensor, batch_size: int = 64,
                threads: int = 0) -> torch.Tensor:
    """Run an ONNX file (or an ``InferenceSession``) on ``images`` (N, C, H, W); a graph with a
    fixed batch size is fed one chunk of that size at a time. Returns the first output."""
    sess = ort_session(model, threads) if isinstance(model, (str, Path)) else model
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or batch_size
    x = images.detach().float().cpu().numpy()
    if fixed and len(x) % fixed:
        raise ValueError(f"the model's batch size is fixed to {fixed}; got {len(x)} images")
    outs = [sess.run(None, {inp.name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    return torch.from_numpy(np.concatenate(outs))


def int8_op_counts(path: Union[str, Path]) -> Counter:
    """Operator counts of the graph ONNX Runtime actually executes for ``path`` (after its
    graph optimizations): a QDQ model that runs as INT8 shows ``QLinearConv`` / ``QGemm`` /
    ``QLinearAdd`` and no float ``Conv``."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="mobilenets-int8-") as d:
        opt = os.path.join(d, "optimized.onnx")
        ort_session(path, threads=1, optimized_path=opt)
        g = onnx.load(opt).graph
        return Counter(n.op_type for n in g.node)


# --- calibration data ------------------------------------------------------------------------
def calibration_batches(data: Union[str, os.PathLike] = "digits", count: int = 128,
                        input_size: Sequence[int] = (224, 224), in_chans: int = 3,
                        mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                        crop_pct: Optional[float] = None, seed: int = 0) -> torch.Tensor:
    """A calibration tensor ``(count, in_chans, H, W)`` (float, normalized) from our datasets,
    through the evaluation transform (resize the short side to ``size / crop_pct``, center crop,
    normalize).

    Args:
        data: ``"digits"`` (scikit-learn digits, training split of the ``digits`` recipe, so
            the validation images stay held out), ``"fake"`` (random images; fine for speed
            measurements, not for accuracy) or an image folder (``DIR/<class>/*.jpg``, ``DIR/train/``
            or images directly in ``DIR``).
        count: number of images (fewer if the source has fewer).
        input_size: ``(H, W)`` (or one int).
        in_chans: channels the model expects (1 gives grey images).
        mean, std, crop_pct: normalization and crop; default to the ``digits`` recipe for
            ``digits`` (mean = std = 0.5, crop 1.0) and to ImageNet's otherwise. Use the values
            the model was trained with.
        seed: which images are drawn.
    """
    from ..train.recipe import RECIPES, Recipe

    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input_size must be (H, W), got {tuple(input_size)}")
    if int(count) < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    key = str(data)
    base = RECIPES["digits"] if key == "digits" else Recipe()
    mean = tuple(base.mean if mean is None else mean)
    std = tuple(base.std if std is None else std)
    crop_pct = base.crop_pct if crop_pct is None else crop_pct
    g = torch.Generator().manual_seed(seed)
    h, w = int(input_size[0]), int(input_size[1])
    if key == "digits":
        from ..train.data import load_digits_tensors, stratified_split
        x, y = load_digits_tensors(max(h, w))  # as build_datasets: load at the size, then transform
        train_idx, _ = stratified_split(y.tolist(), base.val_fraction, base.seed)
        pick = torch.tensor(train_idx)[torch.randperm(len(train_idx), generator=g)[:count]]
        imgs = x[pick]
    elif key == "fake":
        imgs = torch.randint(0, 256, (int(count), 3, max(h, w), max(h, w)), dtype=torch.uint8, generator=g)
    else:
        imgs = _folder_images(Path(key), int(count), g)
    if in_chans == 1:
        from torchvision.transforms.v2 import functional as F
        imgs = F.rgb_to_grayscale(imgs)
    elif in_chans != 3:
        if key not in ("digits", "fake"):
            raise ValueError(f"image folders give RGB images; cannot make {in_chans}-channel calibration data")
        imgs = imgs[:, :1].expand(-1, in_chans, -1, -1)  # grey digits / noise: any channel count
    if len(mean) != in_chans:
        mean, std = (mean[0],) * in_chans, (std[0],) * in_chans
    return _eval_transform(imgs, (h, w), crop_pct, mean, std).contiguous()


def _eval_transform(imgs: torch.Tensor, size: tuple[int, int], crop_pct: float, mean, std) -> torch.Tensor:
    """The training code's evaluation transform (:func:`mobilenets.train.data.eval_transform`)
    for any ``(H, W)``: resize the short side to ``max(H, W) / crop_pct``, center crop, scale to
    [0, 1], normalize. uint8 (N, C, h, w) in, float out."""
    from torchvision.transforms import v2

    short = int(round(max(size) / crop_pct))
    return v2.Compose([v2.Resize(short, antialias=True), v2.CenterCrop(list(size)),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])(imgs)


def _folder_images(root: Path, count: int, g: torch.Generator) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    from ..train.data import IMG_EXTENSIONS

    if not root.is_dir():
        raise ValueError(f"calibration data must be one of {list(CALIB_SOURCES)} or an image folder; "
                         f"{str(root)!r} is neither")
    if (root / "train").is_dir():
        root = root / "train"
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{root}: no images found for calibration (extensions {IMG_EXTENSIONS})")
    order = torch.randperm(len(files), generator=g).tolist()
    out, skipped = [], 0
    for i in order:
        if len(out) == count:
            break
        try:
            with Image.open(files[i]) as im:
                x = F.pil_to_tensor(im.convert("RGB"))
        except OSError:
            skipped += 1
            continue
        # a common size before stacking; the final resize / crop happens in _eval_transform
        out.append(F.center_crop(F.resize(x, 256, antialias=True), [256, 256]))
    if skipped:
        warnings.warn(f"{root}: skipped {skipped} unreadable image(s) while building calibration data",
                      stacklevel=3)
    if not out:
        raise ValueError(f"{root}: no readable images for calibration")
    return torch.stack(out)


def _as_batches(calibration: Calibration, shape: tuple, fixed_batch: Optional[int]) -> list[np.ndarray]:
    """Calibration data -> list of float32 arrays to feed, checking channels and size.

    ``shape``: expected ``(C, H, W)``, entries ``None`` when the graph leaves them free.
    """
    if calibration is None:
        raise ValueError(NO_CALIBRATION)
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        items: Iterable = [calibration]
    elif isinstance(calibration, (str, bytes, os.PathLike)):
        raise ValueError(f"calibration must be image tensors, got the string {str(calibration)!r}; build them "
                         f"with calibration_batches({str(calibration)!r}, count=..., input_size=...)")
    else:
        try:
            items = iter(calibration)
        except TypeError:
            raise ValueError(f"calibration must be a tensor (N, C, H, W) or an iterable of tensors / "
                             f"(images, labels) batches, got {type(calibration).__name__}") from None
    arrays = []
    for item in items:
        if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
            item = item[0]  # (images, labels) from a DataLoader
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"calibration batches must be tensors (N, C, H, W) or (images, labels), got "
                             f"{type(item).__name__}")
        if item.ndim == 3:
            item = item.unsqueeze(0)
        want = "(N, " + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        if item.ndim != 4 or any(s is not None and s != g for s, g in zip(shape, item.shape[1:])):
            what = "channels" if item.ndim == 4 and shape[0] is not None and item.shape[1] != shape[0] else "shape"
            raise ValueError(f"calibration images have the wrong {what}: expected {want}, got "
                             f"{tuple(item.shape)}")
        if not item.is_floating_point():
            raise ValueError(f"calibration images must be float tensors normalized as the model expects "
                             f"(got {item.dtype}); calibration_batches(...) does this")
        if len(item):
            arrays.append(item.detach().float().cpu().numpy())
    if not arrays:
        raise ValueError(NO_CALIBRATION + " (it was empty)")
    x = np.concatenate(arrays)
    if not np.isfinite(x).all():
        raise ValueError("calibration images contain NaN or infinite values")
    step = fixed_batch or 16
    if fixed_batch and len(x) < fixed_batch:
        raise ValueError(f"the model's batch size is fixed to {fixed_batch}; give at least that many "
                         f"calibration images (got {len(x)})")
    n = (len(x) // step) * step if fixed_batch else len(x)
    return [np.ascontiguousarray(x[i:i + step]) for i in range(0, n, step)]


# --- post-training static quantization -------------------------------------------------------
def _graph_input(model_proto) -> tuple[str, tuple]:
    g = model_proto.graph
    inits = {i.name for i in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim)
    return inp.name, dims


def _drop_unused_initializers(model_proto) -> None:
    g = model_proto.graph
    used = {n for node in g.node for n in node.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


def _unshare_initializers(model_proto) -> None:
    """The exporter stores equal constants once and feeds the copies through ``Identity``
    nodes (e.g. the all-zero biases of an untrained model). ONNX Runtime's quantizer then sees a
    bias that is not an initializer, leaves it float, and that conv cannot run as QLinearConv:
    give every such ``Identity`` output its own initializer."""
    from onnx import numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    for n in [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]:
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]), n.output[0]))
        g.node.remove(n)


def _value_shapes(model_proto) -> dict[str, list]:
    """Shapes of the graph's tensors by ONNX shape inference (``None`` for unknown dims)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model_proto).graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.value_info) + list(inferred.input)}


def _repeat_multiplier_dw_inputs(model_proto) -> int:
    """Rewrite every depthwise conv with a channel multiplier (``group = C_in``, ``C_out = k x
    C_in``, k > 1: Mobile-Former's downsampling blocks) as a plain depthwise conv
    (``group = C_out``) on its input with each channel repeated k times (``Unsqueeze -> Concat
    -> Reshape``: output channel ``j*k + r`` still reads input channel ``j``, weights unchanged).

    ONNX Runtime's integer depthwise kernels only handle multiplier 1; other grouped
    ``QLinearConv`` fall back to one small GEMM per group. Measured on Mobile-Former-294M
    (2 threads, 224 px): those 9 convs took 28 ms of an 85 ms INT8 run, against 3 ms in fp32.
    The repeat runs in uint8 (``QLinearConcat``). Returns the number of convs rewritten."""
    from onnx import helper, numpy_helper

    g = model_proto.graph
    shapes = _value_shapes(model_proto)
    inits = {i.name: i for i in g.initializer}
    done = 0
    for node in list(g.node):
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        attr = {a.name: a for a in node.attribute}
        group = attr["group"].i if "group" in attr else 1
        w_shape = list(inits[node.input[1]].dims)
        x_shape = shapes.get(node.input[0])
        if group <= 1 or w_shape[1] != 1 or w_shape[0] == group or w_shape[0] % group:
            continue
        if not x_shape or len(x_shape) != 4 or None in x_shape[1:] or x_shape[1] != group:
            continue  # spatial size unknown: leave the conv as it is
        k, (c, h, w) = w_shape[0] // group, x_shape[1:]
        base = f"{node.name or node.output[0]}_repeat{k}".strip("/").replace("/", "_")
        g.initializer.extend([numpy_helper.from_array(np.array([2], np.int64), base + "_axes"),
                              numpy_helper.from_array(np.array([0, c * k, h, w], np.int64), base + "_shape")])
        new_nodes = [
            helper.make_node("Unsqueeze", [node.input[0], base + "_axes"], [base + "_u"], name=base + "_Unsqueeze"),
            helper.make_node("Concat", [base + "_u"] * k, [base + "_c"], name=base + "_Concat", axis=2),
            helper.make_node("Reshape", [base + "_c", base + "_shape"], [base + "_x"], name=base + "_Reshape"),
        ]
        at = list(g.node).index(node)
        for i, n in enumerate(new_nodes):
            g.node.insert(at + i, n)
        node.input[0] = base + "_x"
        attr["group"].i = c * k
        done += 1
    return done


def _spatial_means_as_global_pool(model_proto) -> int:
    """Rewrite ``ReduceMean(axes=[2, 3])`` (the squeeze-excite pooling, exported from
    ``x.mean((2, 3), keepdim=True)``; the head's pooling, ``keepdims=0``, gets a ``Flatten``
    after it) as ``GlobalAveragePool``: the same
    numbers, and ONNX Runtime runs it as ``QLinearGlobalAveragePool`` on the uint8 tensor
    instead of dequantizing the whole feature map for a float mean. MobileNetV3-Large: 9
    fewer DequantizeLinear of full feature maps, SE pooling 0.9 -> 0.2 ms (2 threads, 224 px).
    Returns the number of nodes rewritten."""
    from onnx import helper, numpy_helper

    g = model_proto.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute}
    shapes = _value_shapes(model_proto) if any(n.op_type == "ReduceMean" for n in g.node) else {}
    done, added = 0, []
    for node in g.node:
        if node.op_type != "ReduceMean" or len(shapes.get(node.input[0]) or ()) != 4:
            continue  # rank 4 (N, C, H, W) only: GlobalAveragePool averages every axis after C
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:  # opset 18: axes is an input
            t = inits.get(node.input[1]) or consts.get(node.input[1])
            axes = None if t is None else numpy_helper.to_array(t).tolist()
        if axes is None or sorted(int(a) % 4 for a in np.atleast_1d(axes)) != [2, 3]:
            continue
        keep = attrs.get("keepdims", 1)
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        if not keep:  # the head's pooling: (N, C, 1, 1) -> (N, C)
            pooled = node.output[0] + "_pooled"
            flatten = helper.make_node("Flatten", [pooled], [node.output[0]], axis=1,
                                       name=(node.name or node.output[0]) + "_flatten")
            node.output[0] = pooled
            added.append((node, flatten))
        done += 1
    for node, flatten in added:  # keep the node list topologically sorted
        g.node.insert(list(g.node).index(node) + 1, flatten)
    return done


def _pre_process(src: Path, dst: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference + graph optimization). It
    matters for h-swish: with every tensor typed, the quantizer also quantizes the ``x *
    hardsigmoid(x)`` product, and MobileNetV3's 19 h-swish ``Mul`` run as ``QLinearMul``
    instead of float between DQ and Q. Without it the graph is quantized as is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_ort_python_logging():
            quant_pre_process(str(src), str(dst))
        return dst
    except Exception as e:  # noqa: BLE001 - an optional step: quantize the unprocessed graph
        warnings.warn(f"ONNX Runtime pre-processing failed ({type(e).__name__}: {str(e)[:120]}); quantizing the "
                      f"graph as exported", stacklevel=3)
        return src


@contextlib.contextmanager
def _quiet_ort_python_logging():
    """onnxruntime.quantization logs through the root logger (a pre-processing hint on every
    call) and prints histogram progress to stdout; keep both out of our users' output."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


def quantize_onnx(model_or_path: Union[nn.Module, str, os.PathLike], out: Union[str, os.PathLike],
                  calibration: Calibration, input_size: Sequence[int] = (224, 224),
                  dynamic_batch: bool = False, per_channel: bool = True, method: str = "minmax",
                  opset: int = 17, *, activation_type: str = "uint8", weight_type: str = "int8",
                  reduce_range: bool = True, float_output: bool = True,
                  exclude_nodes: Sequence[str] = (), verify: bool = True) -> Path:
    """Static post-training INT8 quantization (QDQ format) with ONNX Runtime.

    Args:
        model_or_path: a model of this library (exported fp32 first, BatchNorms folded) or an
            fp32 ``.onnx`` file (its own input size and batch are used).
        out: output ``.onnx`` file, written atomically (nothing is left there on failure).
        calibration: images normalized as the model expects, ``(N, C, H, W)``: a tensor, or an
            iterable of tensors or ``(images, labels)`` batches (a DataLoader). A few hundred
            images of the deployment distribution; :func:`calibration_batches` builds them.
        input_size: ``(H, W)`` of the export (model input only).
        dynamic_batch: symbolic batch dimension (model input only).
        per_channel: per-output-channel weight scales (recommended: depthwise convs need them).
        method: activation range calibration, one of ``minmax`` (default; safest for ReLU6
            nets), ``entropy``, ``percentile`` (99.999 %).
        opset: ONNX opset of the export, 13-20 (per-channel QDQ needs 13).
        activation_type, weight_type: ``uint8`` / ``int8`` (defaults: u8 activations x s8
            weights, ONNX Runtime's fast x86 path; see the module notes).
        reduce_range: 7-bit weights (default): exact on x86 CPUs without VNNI, whose u8s8
            kernels saturate with full-range weights (see the module notes); ``False`` for
            VNNI / ARM targets.
        float_output: keep the last layer's output (the logits) in float rather than uint8.
        exclude_nodes: ONNX node names to keep in float.
        verify: run the written model once with ONNX Runtime and check that it contains
            quantized operators.

    Returns:
        The path written.

    Raises:
        ValueError: no / empty / wrongly shaped calibration data, unknown method or type,
            unsupported opset, bad output name. ImportError: onnxruntime or onnx missing.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    if not MIN_QDQ_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"unsupported opset {opset} for INT8 QDQ export; choose one of "
                         f"{list(range(MIN_QDQ_OPSET, MAX_OPSET + 1))} (17 is a good default)")
    if activation_type not in ACTIVATION_TYPES or weight_type not in WEIGHT_TYPES:
        raise ValueError(f"activation_type must be one of {list(ACTIVATION_TYPES)} and weight_type one of "
                         f"{list(WEIGHT_TYPES)}, got {activation_type!r}, {weight_type!r}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out.name!r}")
    if calibration is None:
        raise ValueError(NO_CALIBRATION)
    _require_ort()
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    is_module = isinstance(model_or_path, nn.Module)
    if not is_module:
        src = Path(model_or_path)
        if not src.is_file():
            raise FileNotFoundError(f"fp32 ONNX model not found: {src}")
    else:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        if len(input_size) != 2:
            raise ValueError(f"input_size must be (H, W), got {tuple(input_size)}")
        in_chans = getattr(model_or_path, "in_chans", 3)
        shape = (in_chans, int(input_size[0]), int(input_size[1]))
        batches = _as_batches(calibration, shape, None if dynamic_batch else 1)  # fail before exporting

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    cmethod = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="mobilenets-int8-") as tmpdir:
        fp32 = Path(tmpdir) / "fp32.onnx"
        if is_module:
            export_onnx(model_or_path, fp32, input_size=input_size, opset=opset, dynamic_batch=dynamic_batch)
        proto = onnx.load(str(fp32 if is_module else src))
        name, dims = _graph_input(proto)
        if not is_module:
            if len(dims) != 4:
                raise ValueError(f"{src}: expected an image model with a 4-D input, got input {name!r} {dims}")
            batches = _as_batches(calibration, dims[1:], dims[0])
        _unshare_initializers(proto)
        _repeat_multiplier_dw_inputs(proto)
        _spatial_means_as_global_pool(proto)
        _drop_unused_initializers(proto)
        prepared = Path(tmpdir) / "prepared.onnx"
        onnx.save(proto, str(prepared))
        prepared = _pre_process(prepared, Path(tmpdir) / "preprocessed.onnx")

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter([{name: b} for b in batches])

            def get_next(self):
                return next(self._it, None)

        extra: dict[str, Any] = {}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999

        def write(tmp: str) -> None:
            with _quiet_ort_python_logging():
                quantize_static(str(prepared), tmp, _Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, reduce_range=reduce_range,
                                activation_type=qtype[activation_type], weight_type=qtype[weight_type],
                                calibrate_method=cmethod, nodes_to_exclude=list(exclude_nodes),
                                extra_options=extra)
            finalize_qdq(tmp)  # any bias ONNX Runtime left float would keep its conv in float
            if float_output:
                _dequantize_outputs(tmp)
            if verify:
                _verify_int8(tmp, name, batches[0])

        return atomic_write(out, write)


def _dequantize_outputs(path: str) -> None:
    """Drop the Q -> DQ pair that ends at a graph output (the logits), so the last Gemm / Conv
    writes float: an 8-bit logit vector can tie the top classes."""
    import onnx

    m = onnx.load(path)
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    changed = False
    for out in g.output:
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        consumers = [n for n in g.node if src in n.input]
        if consumers != [q] or sum(dq.input[0] in n.input for n in g.node) != 1:
            continue
        inner = producer.get(src)
        if inner is None:
            continue
        # rename the float tensor to the graph output name and remove the pair
        for i, o in enumerate(inner.output):
            if o == src:
                inner.output[i] = out.name
        g.node.remove(q)
        g.node.remove(dq)
        changed = True
    if changed:
        _drop_unused_initializers(m)
        onnx.save(m, path)


def _verify_int8(path: str, input_name: str, batch: np.ndarray) -> None:
    import onnx

    m = onnx.load(path)
    ops = Counter(n.op_type for n in m.graph.node)
    if not ops.get("DequantizeLinear"):
        raise RuntimeError(f"quantization produced no quantized operators (ops: {dict(ops)})")
    sess = ort_session(path, threads=1)
    outs = sess.run(None, {input_name: batch})
    if not all(np.isfinite(o).all() for o in outs):
        raise RuntimeError("the INT8 model produced non-finite outputs on the calibration images")


# --- quantization-aware training -------------------------------------------------------------
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
    _input_fq: list  # [the ActFakeQuant whose output feeds this layer], set by prepare_qat

    def quantized_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = getattr(self, "_frozen_scale", None)
        if scale is None:
            scale = weight_scale(self.weight, self.qmax)
        w = fake_quant_weight(self.weight, self.qmax, scale)
        b = getattr(self, "_frozen_bias", None)
        if b is not None:  # export: the rounded bias as a constant
            return w, b
        b = self.bias
        fq = self._input_fq[0] if getattr(self, "_input_fq", None) else None
        if fq is not None and fq.enabled and fq.initialized:
            bs = fq.qparams()[0] * scale
            b = b + (torch.round(b.detach() / bs) * bs - b.detach())  # straight-through
        return w, b


class QConv2d(_QuantWeightMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weight (per channel, int8) and bias (int32)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, qmax: int = 127) -> "QConv2d":
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"QAT supports zero-padded convs with explicit padding, got {conv}")
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
    """A folded ConvNormAct for QAT: quantized conv -> activation -> fake-quant (-> pool)."""

    def __init__(self, m: nn.Module, qmax: int = 127):
        super().__init__()
        self.conv = QConv2d.from_float(m.conv, qmax)
        self.act = _QActivation(m.act)
        self.aa = m.aa
        self.fq_aa = None if isinstance(m.aa, nn.Identity) else ActFakeQuant()

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
        self.act = _QActivation(m.act)
        self.fc2 = QConv2d.from_float(m.fc2, qmax)
        self.gate = _QActivation(m.gate)
        self.fq_out = ActFakeQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fq_pool(x.mean((2, 3), keepdim=True))
        return self.fq_out(x * self.gate(self.fc2(self.act(self.fc1(s)))))


class QResidual(nn.Module):
    """A residual block for QAT: its branch (already converted) plus a fake-quantized sum."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.fq_sum = ActFakeQuant() if block.has_skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        y = b.layer_scale(b.branch(x))
        if self.fq_sum is not None:
            y = self.fq_sum(b.drop_path(y) + x)
        return y


class QHead(nn.Module):
    """Classifier head for QAT: pooled features and the hidden layer are quantized; the final
    Linear has int8 weights and writes float logits."""

    def __init__(self, m: nn.Module, qmax: int = 127):
        super().__init__()
        self.fq_pool = ActFakeQuant()
        has_hidden = isinstance(m.hidden, nn.Linear)
        self.hidden = QLinear.from_float(m.hidden, qmax) if has_hidden else nn.Identity()
        if has_hidden and not isinstance(m.norm, nn.Identity):
            raise ValueError("the head's BatchNorm1d must be folded before QAT (prepare_qat does this)")
        self.act = _QActivation(m.act) if has_hidden else nn.Identity()
        self.fc = QLinear.from_float(m.fc, qmax) if isinstance(m.fc, nn.Linear) else nn.Identity()

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
        self.in_chans = getattr(net, "in_chans", 3)
        self.num_classes = getattr(net, "num_classes", None)
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


def _unsupported(model: nn.Module, why: str) -> ValueError:
    name = getattr(model, "name", None) or type(model).__name__
    return ValueError(f"quantization-aware training is not available for {name}: {why}. Use post-training "
                      f"quantization instead: quantize_onnx(model, 'model_int8.onnx', calibration_batches(...)) "
                      f"(CLI: mobilenets export --int8 --calib DIR), which quantizes it with ONNX Runtime")


def _convert(module: nn.Module, root: nn.Module, qmax: int) -> None:
    from ..blocks import ResidualBlock
    from ..layers import ConvNormAct, SqueezeExcite
    from ..models.mobilenet import ClassifierHead

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
    will run them (see the module notes). Train it with an ordinary loop (a
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
    from ..blocks import MobileMQA
    from ..models.mobilenet import MobileNet
    from .fuse import fuse

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


# --- QAT export ------------------------------------------------------------------------------
def export_qat_onnx(qat_model: QATModel, out: Union[str, os.PathLike], input_size: Sequence[int] = (224, 224),
                    dynamic_batch: bool = False, opset: int = 17, verify: bool = True,
                    example_input: Optional[torch.Tensor] = None, rtol: float = 0.05) -> Path:
    """Export a :func:`prepare_qat` model as an INT8 QDQ ONNX file (int8 weights, int32 biases,
    uint8 activations) that ONNX Runtime runs with integer kernels; written atomically.

    Args:
        qat_model: the trained fake-quant model (ranges are frozen as they are).
        out: output ``.onnx`` file.
        input_size: ``(H, W)`` of the traced input.
        dynamic_batch: symbolic batch dimension.
        opset: 13-20.
        verify: run the file with ONNX Runtime on ``example_input`` (default: the first
            calibration images, resized to ``input_size``) and compare with the fake-quant
            model (up to 8 images). The QDQ graph computed in float must match it to ``rtol``
            (relative RMS of the logits), else ``RuntimeError``; if ONNX Runtime's integer
            kernels differ from that graph by more than ``rtol`` (saturating u8 x s8 kernels
            with ``reduce_range=False`` on a CPU without VNNI), a warning says so. The two
            compute the same quantized graph, but float summation order flips an occasional
            value by one quantization step and deep networks carry the flips to the logits:
            measured up to 2.6 % on single images (MobileNetV3-Large at 224 px, ~1 % on
            average); an export mistake gives errors of order 1.

    Raises:
        ValueError: not a QAT model, bad size / opset / file name, uninitialised ranges.
        RuntimeError: the exported graph does not compute what the fake-quant model does.
    """
    _require_ort()
    if not isinstance(qat_model, QATModel):
        raise ValueError(f"export_qat_onnx needs a model from prepare_qat(), got {type(qat_model).__name__}; "
                         f"for a float model use quantize_onnx()")
    if not MIN_QDQ_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"unsupported opset {opset} for INT8 QDQ export; choose one of "
                         f"{list(range(MIN_QDQ_OPSET, MAX_OPSET + 1))} (17 is a good default)")
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) != 2 or min(input_size) < 32:
        raise ValueError(f"input_size must be (H, W) with H, W >= 32, got {tuple(input_size)}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out.name!r}")
    uninit = [f for f in qat_model.fake_quantizers() if not f.initialized]
    if uninit:
        raise ValueError(f"{len(uninit)} activation range(s) are not initialised: calibrate the model "
                         f"(prepare_qat(model, example_input=images) or qat_model.calibrate(images)) or train it")
    net = copy.deepcopy(qat_model).eval()
    for m in net.modules():  # scales and rounded biases as constants: the exporter writes initializers
        if isinstance(m, (QConv2d, QLinear)):
            m._frozen_scale = weight_scale(m.weight, m.qmax)
            with torch.no_grad():
                m._frozen_bias = m.quantized_params()[1].detach().clone()
    x = example_input if example_input is not None else qat_model.example_input
    if x is None:  # no real images: uniform noise over the calibrated input range
        lo, hi = float(qat_model.fq_input.min_val), float(qat_model.fq_input.max_val)
        x = lo + (hi - lo) * torch.rand(4, qat_model.in_chans, *input_size, generator=torch.Generator().manual_seed(0))
    x = x.detach().float().cpu()
    if tuple(x.shape[-2:]) != tuple(input_size):
        x = nn.functional.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)
    trace_x = x[:2] if dynamic_batch else x[:1]
    x = x[:8]  # onnx_logits feeds a fixed-batch graph one image at a time
    with torch.no_grad():
        ref = net(x)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).double().norm() / b.double().norm().clamp(min=1e-12))

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (trace_x,), tmp, input_names=["input"], output_names=["logits"],
                              opset_version=int(opset), dynamic_axes=axes, do_constant_folding=True,
                              dynamo=False)
        finalize_qdq(tmp)
        if verify:
            qdq = onnx_logits(ort_session(tmp, threads=1, optimize=False), x)
            if rel(qdq, ref) > rtol:
                raise RuntimeError(f"the exported QDQ graph differs from the fake-quant model: relative RMS "
                                   f"{rel(qdq, ref):.3g} > {rtol}")
            int8 = onnx_logits(ort_session(tmp, threads=1), x)
            if rel(int8, qdq) > rtol:
                warnings.warn(f"ONNX Runtime's integer kernels differ from the QDQ graph by {rel(int8, qdq):.3g} "
                              f"(relative RMS): likely int16 saturation of u8 x s8 products on a CPU without "
                              f"VNNI; prepare_qat(..., reduce_range=True) avoids it", stacklevel=3)

    return atomic_write(out, write)


def _const_value(g, name: str, producers: dict) -> Optional[np.ndarray]:
    from onnx import numpy_helper

    for init in g.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
    return None


def finalize_qdq(path: Union[str, os.PathLike]) -> dict:
    """Rewrite a QDQ ONNX file as exported from fake-quant ops into the form ONNX Runtime fuses
    into integer kernels: ``Q(float weight) -> DQ`` becomes an int8 initializer -> DQ, and a
    float bias of a Conv / Gemm whose input and weight come from DQ becomes int32
    (scale = input scale x weight scale) -> DQ, and a spatial ``ReduceMean`` (squeeze-excite
    pooling) becomes ``GlobalAveragePool`` (run as ``QLinearGlobalAveragePool``). Returns
    counts of what changed."""
    import onnx
    from onnx import helper, numpy_helper

    path = str(path)
    m = onnx.load(path)
    g = m.graph
    done = Counter()
    done["global_pools"] = _spatial_means_as_global_pool(m)
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}

    # 1. weights: Q(initializer) -> DQ  ==>  int8 initializer -> DQ
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]:
        w = numpy_helper.to_array(inits[q.input[0]]).astype(np.float32)
        scale = _const_value(g, q.input[1], producers)
        zp = _const_value(g, q.input[2], producers) if len(q.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zp is None:
            continue
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        qw = np.clip(np.rint(w / scale.reshape(shape)) + zp.astype(np.int32).reshape(shape if zp.ndim else ()),
                     info.min, info.max).astype(zp.dtype)
        new = numpy_helper.from_array(qw, q.input[0] + "_int8")
        g.initializer.append(new)
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == q.output[0]:
                    n.input[i] = new.name
        g.node.remove(q)
        done["weights"] += 1

    # 2. float biases of Conv / Gemm fed by DQ input and DQ weight  ==>  int32 + DQ
    producers = {o: n for n in g.node for o in n.output}
    new_nodes = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or not n.input[2]:
            continue
        bias = _const_value(g, n.input[2], producers)  # an initializer or a Constant node
        if bias is None or bias.dtype != np.float32:
            continue
        dx, dw = producers.get(n.input[0]), producers.get(n.input[1])
        if dx is None or dw is None or dx.op_type != "DequantizeLinear" or dw.op_type != "DequantizeLinear":
            continue
        sx = _const_value(g, dx.input[1], producers)
        sw = _const_value(g, dw.input[1], producers)
        if sx is None or sw is None or sx.size != 1:
            continue
        b = bias.astype(np.float64)
        sb = (float(sx.reshape(())) * sw.astype(np.float64)).reshape(-1)
        if sb.size == 1:
            sb = np.full(b.shape, sb[0])
        qb = np.clip(np.rint(b / sb), -2**31, 2**31 - 1).astype(np.int32)
        base = n.input[2].strip("/").replace("/", "_")
        g.initializer.extend([numpy_helper.from_array(qb, base + "_int32"),
                              numpy_helper.from_array(sb.astype(np.float32), base + "_int32_scale"),
                              numpy_helper.from_array(np.zeros(b.shape, np.int32), base + "_int32_zp")])
        dq = helper.make_node("DequantizeLinear", [base + "_int32", base + "_int32_scale", base + "_int32_zp"],
                              [base + "_dq"], name=base + "_DequantizeLinear", axis=0)
        new_nodes.append((n, dq))
        n.input[2] = base + "_dq"
        done["biases"] += 1
    for n, dq in new_nodes:  # keep the node list topologically sorted: the DQ right before its user
        g.node.insert(list(g.node).index(n), dq)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in [n for n in g.node if n.op_type == "Constant" and n.output[0] not in used]:
        g.node.remove(n)
    _drop_unused_initializers(m)
    onnx.save(m, path)
    return dict(done)
