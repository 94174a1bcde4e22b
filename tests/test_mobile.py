"""On-device export: ExecuTorch (.pte, XNNPACK) and LiteRT (.tflite), fp32 and INT8, each file run in
its own runtime; the "mobile" export forms; the honest roofline peak; the bench paths and CLI."""

import importlib
import math
import os

import pytest
import torch

import mobilenets
from conftest import MAX_ACTIVATION_RMS, activation_scale, assert_same_function, randomize_bn
from mobilenets.analysis.calibrate import cpu_theoretical_peak, measure_peak, theoretical_peak
from mobilenets.cli import main
from mobilenets.deploy import export_swaps
from mobilenets.deploy.export_swaps import MOBILE_FORMS, swap_for_export

FAMILIES = ["mobilenetv1_025", "mobilenetv2_050", "mobilenetv3_small_050", "mobilenetv4_conv_small_050",
            "mobilenetv4_hybrid_medium_075", "mobileformer_26m"]


def _have(mod):
    return importlib.util.find_spec(mod) is not None


needs_et = pytest.mark.skipif(not _have("executorch"), reason="executorch not installed (mobilenets[mobile])")
needs_lt = pytest.mark.skipif(not (_have("litert_torch") and _have("ai_edge_litert")),
                              reason="litert-torch / ai-edge-litert not installed (mobilenets[mobile])")


def _small(name="mobilenetv3_small_050", **kw):
    return randomize_bn(mobilenets.create_model(name, **kw), calib_size=(64, 64)).eval()


def _conditioned(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """``(model, x)`` for the same-function checks. Float64 convolutions are slow on CPU: small
    images; a fixed batch and fixed weights, not the global RNG's (the result must not depend on
    which tests ran before). BatchNorm statistics are calibrated on the batch the test runs: at
    48x64 the last stage is 2x2, and statistics from another batch of 16 positions per channel let
    the residual stream grow to RMS ~40 in MNv4-Hybrid, where Mobile MQA's logits span ~200 and a
    near-one-hot softmax turns fp32 rounding into 1e-3 output differences (a CI failure, whichever
    ordering was right)."""
    x = torch.randn(4, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name), calib=x).eval()
    assert activation_scale(model, x) <= MAX_ACTIVATION_RMS, "ill-conditioned test model"
    return model, x


# --- the "mobile" export forms ------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_mobile_forms_compute_the_same_function(name):
    model, x = _conditioned(name)
    out = assert_same_function(model, lambda m: swap_for_export(m, target="mobile"), x)
    kinds = {type(m) for m in out.modules()}
    assert not kinds & set(MOBILE_FORMS), "every module with a mobile form was swapped (children too)"
    assert set(MOBILE_FORMS.values()) & kinds


def test_int8_forms_compute_the_same_function():
    # "mobile_int8": hard-swish from add / clamp / mul with (1, 1, 1, 1) constants, in 4-D blocks
    # and on the head's 2-D features alike
    model, x = _conditioned("mobilenetv3_small_050")
    out = assert_same_function(model, lambda m: swap_for_export(m, target="mobile_int8"), x)
    kinds = [type(m) for m in out.modules()]
    assert torch.nn.Hardswish not in kinds and export_swaps.MobileInt8Hardswish in kinds
    fp32_kinds = {type(m) for m in swap_for_export(model, target="mobile").modules()}
    assert export_swaps.MobileInt8Hardswish not in fp32_kinds  # the fp32 files keep the builtin HARD_SWISH
    assert not out.state_dict().keys() - model.state_dict().keys()  # its constants are not weights


@pytest.mark.parametrize("name", ["mobileformer_26m", "mobileformer_96m"])
def test_mobileformer_forms_split_multiplier_depthwise(name):
    """Mobile-Former's depthwise convs with a channel multiplier (C -> m C, groups C) become m plain
    depthwise convs (XNNPACK runs m > 1 as a grouped GEMM: 0.75 of 3.0 ms of MF-96M in ExecuTorch),
    the channel order taken into what reads them: the dynamic ReLU's coefficients and the next 1x1
    conv (MF-96M), or the channel shuffle that already is that order (MF-26M's grouped 1x1s)."""
    from mobilenets.deploy import fuse
    model, x = _conditioned(name)
    fused = fuse(model)
    for target in ("mobile", "mobile_int8", "executorch", "executorch_int8"):
        out = assert_same_function(fused, lambda m: swap_for_export(m, target=target), x)
        convs = [m for m in out.modules() if isinstance(m, torch.nn.Conv2d)]
        depthwise = [c for c in convs if c.groups > 1 and c.groups == c.in_channels]
        assert depthwise and all(c.out_channels == c.in_channels for c in depthwise), target
        assert sum(isinstance(m, export_swaps.SplitDepthwise) for m in out.modules()) >= 7
    if name == "mobileformer_26m":  # the shuffles after the split convs are gone
        n_shuffle = sum(type(m).__name__ == "ChannelShuffle" for m in fused.modules())
        assert sum(type(m).__name__ == "ChannelShuffle" for m in out.modules()) < n_shuffle
    # unfolded BatchNorms: left as they are (the split needs the folded conv)
    assert not any(isinstance(m, export_swaps.SplitDepthwise) for m in swap_for_export(model, target="mobile").modules())


def test_mobileformer_to_mobile_softmax_written_out():
    """Mobile <- Former's per-position softmax over the M tokens, written out on the channel-major
    scores (max from row slices, exp, a matmul with a row of ones as the normaliser) instead of a
    last-dimension softmax of the transposed scores (XNNPACK: ~28 ns per row of M elements, the
    slowest operator of MF-96M). The model's form gives every bridge the token count; a bridge
    without it keeps the transposed softmax. Stable where the scores are large (the max is
    subtracted): a map scaled so the scores reach ~1e3 still matches the eager bridge."""
    from mobilenets.blocks.mobileformer import FormerToMobile
    from mobilenets.deploy.mobileformer_forms import MobileFormerToMobile
    model = mobilenets.create_model("mobileformer_26m").eval()
    m_tokens = model.tokens.shape[0]
    bridges = [b for b in swap_for_export(model, target="executorch").modules() if isinstance(b, MobileFormerToMobile)]
    assert bridges and all(b.num_tokens == m_tokens for b in bridges)
    torch.manual_seed(0)
    eager = FormerToMobile(32, 64, heads=2).eval()
    x, tokens = torch.randn(2, 32, 7, 9) * 300.0, torch.randn(2, 6, 64)
    alone = MobileFormerToMobile.from_module(eager)
    written = MobileFormerToMobile.from_module(eager)
    written.set_num_tokens(6)
    with torch.no_grad():
        want = eager(x, tokens)
        scores = eager._attention_t(x, tokens)
        assert float(scores.max()) > 0.99 and float(scores.min()) < 1e-6  # near one-hot: large scores
        for form in (alone, written):
            got = form(x, tokens)
            assert torch.isfinite(got).all()
            assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    assert not written.state_dict().keys() ^ eager.state_dict().keys()  # the ones row is not a weight
    edge_ops = torch.export.export(written, (x[:1], tokens[:1])).graph_module.code
    assert "softmax" not in edge_ops and "exp" in edge_ops
    assert "softmax" in torch.export.export(alone, (x[:1], tokens[:1])).graph_module.code


def test_mobileformer_int8_forms():
    """INT8 Mobile-Former: the dynamic ReLU from mul / relu / add (LiteRT's XNNPACK delegate takes
    no int8 MAXIMUM) and the token-side modules declared float (``int8_float``): the Former, the
    Mobile->Former bridge and the Mobile<-Former update, not its residual add on the map."""
    from mobilenets.deploy import fuse
    model, x = _conditioned("mobileformer_26m")
    out = assert_same_function(fuse(model), lambda m: swap_for_export(m, target="mobile_int8"), x)
    assert any(isinstance(m, export_swaps.MobileInt8DynamicReLU) for m in out.modules())
    paths = export_swaps.float_modules(out)
    whole = (export_swaps.MobileMobileToFormer, export_swaps.MobileFormerBlockFormer)
    expected = [n if isinstance(m, whole) else f"{n}.update" for n, m in out.named_modules()
                if isinstance(m, (*whole, export_swaps.MobileFormerToMobile))]
    assert len(expected) > 20 and paths == expected
    assert not [k for k in out.state_dict() if ".update." in k]  # the update child holds no weights
    assert export_swaps.float_modules(swap_for_export(mobilenets.create_model("mobilenetv2_050"))) == []
    # ExecuTorch's INT8 programs: the same dynamic ReLU (XNNPACK's quantizer leaves a maximum float, with
    # map-sized conversions around it), but hard-swish keeps its builtin (XNNPACK runs it in int8)
    et = assert_same_function(fuse(model), lambda m: swap_for_export(m, target="executorch_int8"), x)
    kinds = {type(m) for m in et.modules()}
    assert export_swaps.MobileInt8DynamicReLU in kinds and export_swaps.MobileInt8Hardswish not in kinds
    assert torch.nn.Hardswish in kinds
    from mobilenets.deploy.runtimes import mobile_runtime
    assert [mobile_runtime(r).forms_for(q) for r in ("executorch", "tflite") for q in (False, True)] == [
        "executorch", "executorch_int8", "mobile", "mobile_int8"]


class _LossyShift(torch.nn.Module):
    """Exact in float64, lossy in fp32: (y + 100) - 100 keeps ~1e-5 of absolute precision."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x) + 100.0) - 100.0


def test_same_function_check_catches_lost_precision():
    # the fp32 half of assert_same_function: a transform that is exact in float64 but costs fp32
    # precision must fail it (the float64 check alone would pass it)
    model, x = _conditioned("mobilenetv3_small_050")
    with pytest.raises(AssertionError, match="= rel_rms_err"):
        assert_same_function(model, _LossyShift, x)


def test_swap_targets_and_errors():
    model = mobilenets.create_model("mobilenetv4_hybrid_medium_075")
    onnx = swap_for_export(model)
    assert any(isinstance(m, export_swaps.ExportMultiQueryAttention2d) for m in onnx.modules())
    assert not any(isinstance(m, export_swaps.MobileClassifierHead) for m in onnx.modules())
    with pytest.raises(ValueError,
                       match="unknown export target 'coreml'.*'onnx', 'mobile', 'mobile_int8', 'executorch'"):
        swap_for_export(model, target="coreml")
    with pytest.raises(TypeError, match="expected a LayerNorm, got Linear"):
        export_swaps.MobileLayerNorm.from_module(torch.nn.Linear(2, 2))


# --- the honest roofline peak -------------------------------------------------------------------
def test_theoretical_peak_from_flags():
    intel = theoretical_peak(["fma", "avx2", "avx512f"], cores=2, ghz=3.0, vendor="GenuineIntel", family=6)
    assert intel.macs == 2 * 3.0e9 * 2 * 16 and intel.lanes == 16
    zen4 = theoretical_peak(["fma", "avx2", "avx512f"], cores=2, ghz=2.6, vendor="AuthenticAMD", family=25)
    assert zen4.lanes == 8 and zen4.macs == pytest.approx(83.2e9) and "256-bit" in zen4.isa
    assert theoretical_peak(["fma", "avx2"], 4, 2.0).macs == 4 * 2.0e9 * 2 * 8
    assert theoretical_peak(["sse4_2"], 1, 1.0, fma_pipes=1).macs == 4e9


def test_cpu_theoretical_peak_parses_cpuinfo():
    block = ("processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\ncpu MHz\t\t: 2100.000\n"
             "siblings\t: 8\ncpu cores\t: 4\nflags\t\t: fpu sse fma avx2 avx512f\n\n")
    text = "".join(block.format(i=i) for i in range(8))  # 4 cores, 2 hyper-threads each
    p = cpu_theoretical_peak(threads=16, cpuinfo=text, max_mhz=3000.0)
    assert (p.cores, p.ghz, p.lanes) == (4, 3.0, 16) and p.macs == 4 * 3e9 * 2 * 16 and not p.note
    p = cpu_theoretical_peak(threads=2, cpuinfo=text, max_mhz=0.0)  # no max clock: cpu MHz, said so
    assert (p.cores, p.ghz) == (2, 2.1) and "cpu MHz" in p.note
    assert cpu_theoretical_peak(cpuinfo="nothing here") is None


def test_measured_peak_is_the_best_shape():
    shapes = ((256, 256, 256), (512, 128, 256), (64, 1024, 64))
    p = measure_peak(shapes, repeats=2, warmup=1)
    assert list(p.per_shape) == ["256x256x256", "512x128x256", "64x1024x64"]
    assert p.best == max(p.per_shape.values()) > 0 and p.threads == torch.get_num_threads()
    assert (256, 256, 256) not in shapes or p.best >= p.per_shape["256x256x256"]


# --- ExecuTorch ---------------------------------------------------------------------------------
@needs_et
def test_executorch_fp32_runs_in_its_runtime(tmp_path):
    from mobilenets.deploy import PteRunner, export_executorch, pte_logits
    model = _small()
    res = export_executorch(model, tmp_path / "m.pte", input_size=(64, 64))
    assert os.fspath(res) == str(tmp_path / "m.pte") and res.path.stat().st_size > 0
    assert res.runtime == "executorch" and res.precision == "fp32" and res.input_shape == (1, 3, 64, 64)
    assert res.max_rel_diff <= 1e-4 and res.fully_lowered, res.outside
    assert "every op in XNNPACK" in res.summary()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    out = pte_logits(res, x)  # batch 1 program fed image by image
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-4
    with pytest.raises(ValueError, match=r"exported for input 1x3x64x64 \(a fixed shape\); got 1x3x96x96.*--input-size"):
        PteRunner(res)(torch.randn(1, 3, 96, 96))


@needs_et
def test_executorch_ptq_quantizer_skips_only_the_patterns_prepare_folds():
    """The PTQ XNNPACK quantizer leaves out the conv + BatchNorm patterns (QAT's: PTQ's
    ``prepare_pt2e`` folds every BatchNorm into its conv before annotating, and trying them cost
    a few seconds of pattern captures per prepare): on convs with and without a BatchNorm and a
    ReLU it inserts exactly the observers the full pattern list does; QAT keeps the list whole."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from mobilenets.deploy.executorch_export import xnnpack_quantizer

    ptq = xnnpack_quantizer()
    assert {p.name for p in ptq.SUPPORTED_PATTERNS} == {p.name for p in XNNPACKQuantizer.SUPPORTED_PATTERNS
                                                         if not p.is_qat}
    assert "conv_bn_relu" in {p.name for p in xnnpack_quantizer(qat=True).SUPPORTED_PATTERNS}
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 1), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1)).eval()
    randomize_bn(net)

    def observed(quantizer):
        gm = prepare_pt2e(torch.export.export(net, (torch.randn(1, 3, 8, 8),)).module(), quantizer)
        return [(n.args[0].op, str(n.args[0].target), n.target) for n in gm.graph.nodes
                if n.op == "call_module" and "activation_post_process" in n.target]

    full = xnnpack_quantizer()
    full.SUPPORTED_PATTERNS = list(XNNPACKQuantizer.SUPPORTED_PATTERNS)
    found = observed(ptq)
    assert found == observed(full)
    # three convs' weights; the input, the first conv's output after its ReLU, the other two convs' outputs
    activations = [target for op, target, _ in found if op != "get_attr"]
    assert sum(op == "get_attr" for op, _, _ in found) == 3, found
    assert activations == ["input", "aten.relu.default", "aten.conv2d.default", "aten.conv2d.default"], found


@needs_et
def test_executorch_int8_is_quantized_and_close_to_its_reference(tmp_path):
    from mobilenets.deploy import export_executorch
    model = _small("mobilenetv1_025", num_classes=10)
    res = export_executorch(model, tmp_path / "q.pte", input_size=(32, 32), calib="fake", calib_count=4)
    assert res.precision == "int8" and res.fully_lowered, res.outside
    # XNNPACK's integer kernels against PT2E's float simulation of them: on random weights the logits
    # are too ill-conditioned for a bound (0.27 measured here); the digits-trained model's bound is in
    # test_int8_agrees_with_fp32_on_digits (measured 7.5e-3)
    assert res.max_rel_diff is not None and res.max_rel_diff == res.max_rel_diff
    assert 0.0 <= res.agreement <= 1.0 and res.agreement_images == 4
    assert res.ops.get("quantize_per_tensor", 0) == 0, "every quantize op is inside the XNNPACK delegate"
    fp32 = export_executorch(model, tmp_path / "f.pte", input_size=(32, 32))
    assert res.path.stat().st_size < 0.5 * fp32.path.stat().st_size, "int8 weights"


@needs_et
def test_executorch_names_what_does_not_lower(tmp_path, monkeypatch):
    from mobilenets.deploy import LoweringError, export_executorch
    from mobilenets.deploy.executorch_export import EXECUTORCH
    # the forms ExecuTorch's runtime swaps in (the mobile ones and XNNPACK's own), less the pool's
    pool = type(mobilenets.create_model("mobilenetv1_025").head.pool)
    monkeypatch.delitem(export_swaps.TARGETS[EXECUTORCH.forms], pool)
    with pytest.raises(LoweringError, match=r"aten\.mean\.dim @ head\.pool \(GlobalPool\) \(x1\): mean\.dim only "
                                            r"supports keepdim=True(.|\n)*Fix: an export form.*MOBILE_FORMS"):
        export_executorch(_small("mobilenetv1_025"), tmp_path / "m.pte", input_size=(64, 64))
    assert not list(tmp_path.iterdir())  # nothing written, no temp file left
    res = export_executorch(_small("mobilenetv1_025"), tmp_path / "m.pte", input_size=(64, 64), allow_fallback=True)
    assert res.outside == {"aten.mean.dim @ head.pool (GlobalPool)": 1} and "1 op(s) outside" in res.summary()
    assert res.max_rel_diff <= 1e-4  # the portable kernel still computes it


@needs_et
@pytest.mark.parametrize("block", ["mqa", "mobileformer"])
def test_attention_blocks_lower_fully_to_xnnpack(block):
    """Mobile MQA and the Mobile-Former blocks, alone (the whole models: test_every_family_lowers)."""
    from mobilenets.blocks import MobileMQA
    from mobilenets.blocks.mobileformer import MobileBottleneck, MobileFormerBlock
    from mobilenets.deploy.executorch_export import _lower, outside_delegates
    torch.manual_seed(0)
    if block == "mqa":
        net, args = MobileMQA(32, 32, num_heads=4, key_dim=16, kv_stride=2).eval(), (torch.randn(1, 32, 16, 16),)
    else:
        net = MobileFormerBlock(MobileBottleneck(16, 16, 4, token_dim=32), token_dim=32).eval()
        args = (torch.randn(1, 16, 14, 14), torch.randn(1, 6, 32))
    mobile = swap_for_export(net, target="executorch")
    with torch.no_grad():
        a, b = net(*args), mobile(*args)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert float((u - v).abs().max() / u.abs().max()) <= 1e-5
    edge, _ = _lower(torch.export.export(mobile, args))
    outside, lines, delegates = outside_delegates(edge)
    assert outside == {} and delegates >= 1, lines
    edge, reasons = _lower(torch.export.export(net, args))  # the eager form does not lower fully
    assert outside_delegates(edge, reasons)[0]


def _lowered_fully(net, *args):
    """Run ``net`` lowered to XNNPACK (every op delegated, asserted) in ExecuTorch's runtime."""
    from executorch.runtime import Runtime

    from mobilenets.deploy.executorch_export import _lower, outside_delegates
    edge, reasons = _lower(torch.export.export(net.eval(), args))
    outside, lines, _ = outside_delegates(edge, reasons)
    assert outside == {}, lines
    program = Runtime.get().load_program(edge.to_executorch().buffer)
    return program.load_method("forward").execute([a.contiguous() for a in args])[0]


@needs_et
def test_executorch_gelu_tanh_form():
    """The cause of MobileNetV5's ExecuTorch files differing from eager (~7e-4): the XNNPACK delegate
    lowers ``aten.gelu`` ignoring ``approximate="tanh"`` and computes the erf GELU (up to 4.7e-4
    apart, compounded over the trunk). The "executorch" form writes the tanh GELU out: the same
    function in float64, delegated, and the program matches it to float rounding; the erf GELU is
    left as it is. (Should ExecuTorch honour ``approximate`` one day, the first check fails: the form
    can then go.)"""
    x = torch.linspace(-8, 8, 4096).reshape(1, 4, 32, 32)
    tanh_gelu = torch.nn.GELU(approximate="tanh")
    want = torch.nn.functional.gelu(x, approximate="tanh")
    plain = _lowered_fully(tanh_gelu, x)
    assert float((plain - torch.nn.functional.gelu(x)).abs().max()) <= 2e-6  # the erf GELU ...
    assert float((plain - want).abs().max()) >= 4e-4  # ... not the tanh one asked for
    form = swap_for_export(tanh_gelu, target="executorch")
    assert isinstance(form, export_swaps.XnnpackGeluTanh)
    torch.testing.assert_close(form.double()(x.double()), torch.nn.functional.gelu(x.double(), approximate="tanh"),
                               rtol=0, atol=1e-14)
    assert float((_lowered_fully(form.float(), x) - want).abs().max()) <= 2e-6
    erf = swap_for_export(torch.nn.GELU(), target="executorch")
    assert torch.equal(erf(x), torch.nn.functional.gelu(x))


@needs_et
def test_executorch_rmsnorm_and_nearest_resize_forms_lower_fully():
    """RMSNorm2d's mean over channels (XNNPACK's mean reduces only H, W: a 1x1 conv of 1/C) and the
    fusion adapter's nearest upsampling (XNNPACK has none: concatenations, slices for a fraction)
    are delegated and compute the same function (the resize bit for bit, at whole and fractional
    factors)."""
    from mobilenets.layers.norm import RMSNorm2d

    g = torch.Generator().manual_seed(0)
    norm = RMSNorm2d(24)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
    x = torch.randn(1, 24, 8, 8, generator=g) * 3
    form = swap_for_export(norm, target="executorch")
    assert isinstance(form, export_swaps.XnnpackRMSNorm2d) and not form.state_dict().keys() - {"weight"}
    with torch.no_grad():
        torch.testing.assert_close(swap_for_export(norm.double(), target="executorch")(x.double()),
                                   norm(x.double()), rtol=1e-13, atol=0)
        assert float((_lowered_fully(form.float(), x) - norm.float()(x)).abs().max()) <= 1e-5

    class Resize(torch.nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size = size

        def forward(self, x):
            return export_swaps.nearest_resize(x, self.size)

    for src, size in (((4, 4), (8, 8)), ((2, 3), (3, 5)), ((3, 3), (9, 6)), ((5, 7), (5, 7))):
        y = torch.randn(1, 5, *src, generator=g)
        want = torch.nn.functional.interpolate(y, size=size, mode="nearest")
        assert torch.equal(export_swaps.nearest_resize(y, size), want), (src, size)
        if src != size:
            assert torch.equal(_lowered_fully(Resize(size), y), want), (src, size)


# --- LiteRT -------------------------------------------------------------------------------------
@needs_lt
def test_tflite_fp32_runs_in_its_runtime(tmp_path):
    from mobilenets.deploy import TfliteRunner, export_tflite, tflite_ops
    model = _small()
    res = export_tflite(model, tmp_path / "m.tflite", input_size=(64, 64))
    assert res.runtime == "litert" and res.max_rel_diff <= 1e-4 and res.fully_lowered
    builtin, other = tflite_ops(res)
    assert other == {} and builtin["CONV_2D"] + builtin["DEPTHWISE_CONV_2D"] >= 30 and builtin["HARD_SWISH"] > 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert float((TfliteRunner(res, threads=1)(x) - ref).abs().max() / ref.abs().max()) <= 1e-4
    with pytest.raises(ValueError, match=r"exported for input 1x3x64x64"):
        TfliteRunner(res)(torch.randn(2, 3, 64, 64))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="bad.tflite: LiteRT cannot load it"):
        TfliteRunner(bad)


@needs_lt
def test_tflite_int8_has_int8_kernels(tmp_path):
    from mobilenets.deploy import export_tflite
    from ai_edge_litert.interpreter import Interpreter
    res = export_tflite(_small("mobilenetv1_025", num_classes=10), tmp_path / "q.tflite", input_size=(32, 32),
                        calib="fake", calib_count=4)
    assert res.precision == "int8" and res.fully_lowered and res.max_rel_diff is not None, res.outside
    it = Interpreter(model_path=str(res))
    dtypes = {d["dtype"].__name__ for d in it.get_tensor_details()}
    assert "int8" in dtypes and it.get_input_details()[0]["dtype"].__name__ == "int8"


@needs_lt
def test_tflite_int8_leaves_nothing_in_float(tmp_path):
    """MobileNetV3: hard-swish, the SE gate's hard-sigmoid and the residual adds all run int8 in
    one XNNPACK partition. litert-torch's quantizer alone left them float (a DEQUANTIZE /
    QUANTIZE pair each) and its int8 HARD_SWISH is not delegated: that INT8 file of MNv3-L ran
    2.9x slower than the fp32 one."""
    from ai_edge_litert.interpreter import Interpreter
    from mobilenets.deploy import export_tflite, tflite_ops
    res = export_tflite(_small(num_classes=10), tmp_path / "q.tflite", input_size=(64, 64), calib="fake",
                        calib_count=4)
    builtin, other = tflite_ops(res)
    assert not other and not {"DEQUANTIZE", "HARD_SWISH"} & builtin.keys(), builtin
    assert builtin["TRANSPOSE"] == 1, builtin  # only the input's NCHW -> NHWC: the gates stay NHWC
    it = Interpreter(model_path=str(res), num_threads=1)
    assert {d["dtype"].__name__ for d in it.get_tensor_details()} == {"int8", "int32"}  # not one float tensor
    it.allocate_tensors()
    assert [d["op_name"] for d in it._get_ops_details()].count("DELEGATE") == 1  # one XNNPACK partition


class _Levels(torch.nn.Module):
    """Two conv branches of very different output ranges, concatenated (an SSD head's levels)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        with torch.no_grad():
            self.a.weight.mul_(20.0)

    def forward(self, x):
        return torch.cat([self.b(x).flatten(1), self.a(x).flatten(1)], dim=1)  # the small range first


@needs_lt
def test_tflite_int8_concatenation_keeps_every_input_range(tmp_path):
    """litert-torch's quantizer leaves cat unannotated; its converter then wrote an int8
    CONCATENATION requantizing every input to one input's scale, clamping the others (an SSDLite's
    box regressions: mAP75 0.76 -> 0.48). Annotated with one shared observer, the file computes the
    PT2E reference and keeps the large branch's range."""
    from mobilenets.deploy import export_tflite, tflite_logits
    model = _Levels().eval()
    calib = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = export_tflite(model, tmp_path / "c.tflite", input_size=(32, 32), calib=calib)
    assert res.fully_lowered and res.max_rel_diff < 0.02, res.summary()
    with torch.no_grad():
        ref = model(calib[:4])
    out = tflite_logits(res, calib[:4])
    assert 0.9 < float(out.abs().max() / ref.abs().max()) < 1.1
    assert float((out - ref).abs().mean() / ref.abs().mean()) < 0.05


@needs_lt
@pytest.mark.slow  # ~1.5 min: litert-torch converts Mobile-Former's ~1000 ops slowly
def test_tflite_int8_mobileformer_converts(tmp_path):
    """Mobile-Former INT8 in LiteRT, every op delegated to XNNPACK: with litert-torch's quantizer alone its layout pass failed
    ("Attempting to convert non-NHWC compatible node to NHWC: dequantize_per_tensor_N"). With the
    ops that quantizer leaves in float annotated too (annotate_float_gaps), the file converts,
    lowers to builtins only and runs. Its accuracy is measured on a digits-trained model
    (benchmarks/mobile_matrix.py: 100 % top-1 agreement with fp32); on this random-weight one the
    output is only checked to be finite (it is 1.3 relative from the PT2E reference here)."""
    from mobilenets.deploy import export_tflite
    from mobilenets.deploy.op_profile import op_profile
    model = randomize_bn(mobilenets.create_model("mobileformer_26m", num_classes=10), calib_size=(64, 64)).eval()
    res = export_tflite(model, tmp_path / "q.tflite", input_size=(64, 64), calib="fake", calib_count=4)
    assert res.precision == "int8" and res.fully_lowered, res.outside
    assert res.max_rel_diff is not None and math.isfinite(res.max_rel_diff)
    # every op in one XNNPACK partition: before the int8 forms, its int8 BATCH_MATMUL, RSQRT,
    # GELU and MAXIMUM ran on LiteRT's own kernels in 75 partitions (MF-96M: INT8 1.4x fp32's time)
    prof = op_profile(res, runs=1)
    assert prof.outside == {} and prof.partitions == 1, (prof.outside, prof.partitions)
    assert prof.counts.get("BATCH_MATMUL (FLOAT32)") and not prof.counts.get("BATCH_MATMUL (INT8)")

class _MQANet(torch.nn.Module):
    """A conv and a Mobile MQA block (shared key / value, 4 query heads, keys at stride 2)."""

    def __init__(self):
        super().__init__()
        from mobilenets.blocks import MobileMQA
        self.stem = torch.nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.mqa = MobileMQA(32, 32, num_heads=4, key_dim=16, kv_stride=2)

    def forward(self, x):
        return self.mqa(self.stem(x)).mean((2, 3))


@needs_lt
@pytest.mark.parametrize("int8", [False, True])
def test_tflite_mobile_mqa_runs_in_xnnpack(int8, tmp_path):
    """Mobile MQA in LiteRT, fp32 and INT8: one XNNPACK partition. With the heads folded into one
    batch-1 matmul, LiteRT's converter wrote each matmul as a FULLY_CONNECTED with dynamic weights,
    which its delegate refuses (MNv4-Hybrid-M: 9 / 17 partitions; INT8 0.58 -> 0.43 of fp32 once
    the heads are the matmuls' batch), and the key / value repeated per head needs its
    concatenation annotated although its inputs are one tensor."""
    from mobilenets.deploy import export_tflite
    from mobilenets.deploy.op_profile import op_profile
    torch.manual_seed(0)
    kw = dict(calib="fake", calib_count=4) if int8 else {}
    res = export_tflite(_MQANet().eval(), tmp_path / "m.tflite", input_size=(32, 32), **kw)
    prof = op_profile(res, runs=1, threads=1)
    assert prof.outside == {} and prof.partitions == 1, (prof.outside, prof.partitions)
    assert not any(k.startswith("FULLY_CONNECTED") for k in prof.counts) and prof.counts.get("BATCH_MATMUL (FLOAT32)") == 2
    if int8:
        assert res.max_rel_diff < 0.05, res.summary()


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["executorch", "tflite"])
def test_bad_input_is_one_clear_error_and_nothing_written(fmt, tmp_path, monkeypatch):
    from mobilenets.deploy import export_executorch, export_tflite
    fn, suffix = (export_executorch, ".pte") if fmt == "executorch" else (export_tflite, ".tflite")
    model = mobilenets.create_model("mobilenetv1_025")
    with pytest.raises(ValueError, match=r"needs calibration data: pass calib="):
        fn(model, tmp_path / f"m{suffix}", int8=True)
    with pytest.raises(ValueError, match=f"must end in \\{suffix}, got 'm.onnx'"):
        fn(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"H, W >= 32, got \(16, 16\)"):
        fn(model, tmp_path / f"m{suffix}", input_size=(16, 16))
    with pytest.raises(ValueError, match="calib is for INT8 exports"):
        fn(model, tmp_path / f"m{suffix}", calib="digits", int8=False)
    real = importlib.import_module

    def missing(name, *a, **k):
        if name.split(".")[0] in ("executorch", "litert_torch", "ai_edge_litert"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ImportError, match=r"pip install 'mobilenets\[mobile\]'"):
        fn(model, tmp_path / f"m{suffix}")
    assert not list(tmp_path.iterdir())


# --- CLI ----------------------------------------------------------------------------------------
@needs_lt
def test_cli_export_tflite(tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert main(["export", "mobilenetv1_025", "--format", "tflite", "--out", str(out), "--input-size", "64"]) == 0
    line = capsys.readouterr().out
    assert "fp32, BatchNorm folded, input 1x3x64x64; checked in LiteRT: max diff" in line and "builtin ops only" in line
    assert out.is_file()


def test_cli_export_errors(tmp_path, capsys):
    cases = [(["--format", "executorch", "--out", "m.tflite"], "--format executorch writes a .pte file"),
             (["--format", "tflite", "--out", "m.tflite", "--int8"], "--int8 needs calibration data"),
             (["--format", "executorch", "--out", "m.pte", "--calib", "digits"], "--calib is for --int8"),
             (["--format", "tflite", "--out", "m.tflite", "--dynamic-batch"], "fixed-shape file")]
    for extra, msg in cases:
        argv = ["export", "mobilenetv1_025", *[str(tmp_path / a) if a.startswith("m.") else a for a in extra]]
        assert main(argv) == 2, extra
        assert msg in capsys.readouterr().err
    # an SSD exports its network to the mobile runtimes (tests/test_detection_mobile.py); the
    # two-stage and RetinaNet detectors do not, and say where they go
    assert main(["export", "fasterrcnn_mobilenetv3_small_050_320_fpn", "--format", "tflite", "--out",
                 str(tmp_path / "d.tflite")]) == 2
    assert "mobile detector files are for SSD / SSDLite (ssdlite320_*); got FasterRCNN" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- bench --------------------------------------------------------------------------------------
@needs_et
@needs_lt
@pytest.mark.slow
def test_bench_warns_when_two_xnnpack_runtimes_share_the_process():
    from mobilenets.deploy.bench import mixed_runtime_note
    note = mixed_runtime_note(["eager", "et_xnnpack_fp32", "litert_int8"])
    assert note and "ExecuTorch and LiteRT ran in one process" in note and "--paths litert_fp32,litert_int8" in note
    assert mixed_runtime_note(["et_xnnpack_fp32", "et_xnnpack_int8", "ort_fp32"]) is None
    assert mixed_runtime_note(["litert_fp32", "litert_int8"]) is None


@needs_et
@needs_lt
@pytest.mark.slow
def test_bench_times_litert_in_its_own_process(capsys):
    """ExecuTorch and LiteRT asked for together: the LiteRT paths are timed in a separate process
    (with eager and the timm reference beside them, so their INT8 difference and ratios are taken
    there), the rows come back in the order asked for; --one-process keeps them here."""
    import os

    from mobilenets.cli import main
    from mobilenets.deploy.bench import bench
    paths = ["eager", "timm_ort", "et_xnnpack_fp32", "litert_fp32", "litert_int8"]
    rep = bench(["mobilenetv2_050"], batches=[1], threads=1, size=64, paths=paths, seconds=0.2, calib_count=4)
    sep = rep.machine["separate_process"]
    assert sep["paths"] == ["litert_fp32", "litert_int8"] and sep["pid"] not in (None, os.getpid())
    assert rep.machine["pid"] == os.getpid()
    assert [r.path for r in rep.rows] == paths                     # each path once, in the order asked for
    lite = {r.path: r for r in rep.rows if r.path.startswith("litert")}
    assert lite["litert_fp32"].ms and lite["litert_fp32"].vs_timm_ort and lite["litert_fp32"].vs_roofline
    assert lite["litert_int8"].ms and lite["litert_int8"].vs_timm_ort and lite["litert_int8"].rel_diff is not None
    one = bench(["mobilenetv1_025"], batches=[1], threads=1, size=64, paths=paths[2:4], seconds=0.2, one_process=True)
    assert "separate_process" not in one.machine and all(r.ms for r in one.rows)
    assert main(["bench", "mobilenetv1_025", "--batch-size", "1", "--threads", "1", "--input-size", "64",
                 "--paths", "et_xnnpack_fp32,litert_fp32", "--seconds", "0.2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "timed in a separate process" in out and "ran in one process" not in out


def test_bench_builds_and_checks_the_mobile_paths():
    from mobilenets.deploy import bench as B
    paths = ["eager", "et_xnnpack_fp32", "et_xnnpack_int8", "litert_fp32"]
    built = B.build_paths("mobilenetv1_025", 1, size=64, threads=1, paths=paths, calib_count=4)
    try:
        assert set(built.fns) == set(paths), built.notes
        ref = built.outputs["eager"]
        for p in ("et_xnnpack_fp32", "litert_fp32"):  # checked against eager inside build_paths too
            assert float((built.outputs[p] - ref).abs().max() / ref.abs().max()) <= 1e-3
        assert built.outputs["et_xnnpack_int8"].shape == ref.shape
    finally:
        built.temp_dir.cleanup()


# --- slow: every family, and the INT8 accuracy on a digits-trained model ------------------------
@needs_et
@needs_lt
@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_lowers_fully(name, tmp_path):
    from mobilenets.deploy import export_executorch, export_tflite
    model = randomize_bn(mobilenets.create_model(name), calib_size=(96, 96)).eval()
    for fn, suffix in ((export_executorch, ".pte"), (export_tflite, ".tflite")):
        res = fn(model, tmp_path / f"m{suffix}", input_size=(96, 96))
        assert res.fully_lowered and res.max_rel_diff <= 1e-4, (suffix, res.outside)


@needs_et
@needs_lt
@pytest.mark.slow
def test_int8_agrees_with_fp32_on_digits(tmp_path):
    """A digits-trained model: INT8 top-1 agreement with fp32 >= 99 % on the validation split."""
    from mobilenets.deploy import agreement, export_executorch, export_tflite, pte_logits, tflite_logits
    from mobilenets.train import build_datasets, get_recipe, train
    recipe = get_recipe("digits")
    recipe.model, recipe.epochs = "mobilenetv4_conv_small", 12
    model = train(recipe, tmp_path / "run", progress=False, log=lambda s: None).model.eval()
    val = torch.stack([img for img, _ in build_datasets(recipe).val])
    with torch.no_grad():
        fp32 = model(val)
    for fn, run, suffix in ((export_executorch, pte_logits, ".pte"), (export_tflite, tflite_logits, ".tflite")):
        res = fn(model, tmp_path / f"q{suffix}", input_size=(64, 64), calib="digits")
        assert res.max_rel_diff < 0.05, (suffix, res.max_rel_diff)  # runtime vs PT2E reference (7.5e-3 measured)
        assert agreement(run(res, val), fp32) >= 0.99, suffix


@needs_et
@needs_lt
def test_segmenters_export_their_out_logits_fully_lowered(tmp_path):
    """A segmenter's mobile file returns its "out" logits (the aux head dropped) and lowers
    fully: dilated depthwise convs, ASPP / LR-ASPP pooling branches and the bilinear upsampling
    run in XNNPACK / as LiteRT builtins, the file matching eager within 1e-4."""
    from mobilenets.deploy import export_executorch, export_tflite, pte_logits, tflite_logits

    model = randomize_bn(mobilenets.create_model("deeplabv3_mobilenetv3_small_050", num_classes=5,
                                                 aux_loss=True), calib_size=(64, 64)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)["out"]
    for fn, run, suffix in ((export_executorch, pte_logits, "pte"), (export_tflite, tflite_logits, "tflite")):
        res = fn(model, tmp_path / f"seg.{suffix}", input_size=(64, 64))
        assert res.fully_lowered and res.max_rel_diff <= 1e-4, res.summary()
        out = torch.as_tensor(run(res.path, x))
        assert out.shape == (1, 5, 64, 64) and float((out - ref).abs().max() / ref.abs().max()) <= 1e-4
    assert model.aux_classifier is not None  # the model itself is left as it was


@needs_et
@needs_lt
@pytest.mark.parametrize("name", ["tf_mobilenetv3_small_100", "mobilenet_edgetpu_v2_xs"])
def test_timm_ported_families_lower_fully(name, tmp_path):
    """The TF ports (SAME padding computed from the input) and MobileNet-EdgeTPU (fused,
    grouped blocks) lower fully to XNNPACK and to LiteRT builtins, the files matching eager."""
    from mobilenets.deploy import export_executorch, export_tflite

    model = randomize_bn(mobilenets.create_model(name), calib_size=(64, 64)).eval()
    for fn, suffix in ((export_executorch, "pte"), (export_tflite, "tflite")):
        res = fn(model, tmp_path / f"m.{suffix}", input_size=(64, 64))
        assert res.fully_lowered and res.max_rel_diff <= 1e-4, res.summary()


@needs_et
@needs_lt
@pytest.mark.parametrize("name,pool", [("mobilenetv2_035", "catavgmax"),
                                       pytest.param("mobilenetv3_small_050", "max", marks=pytest.mark.slow),
                                       pytest.param("mobileformer_26m", "avgmax", marks=pytest.mark.slow)])
def test_every_head_pooling_exports(name, pool, tmp_path):
    """timm's global_pool types reach the mobile files (their global-pool form computes each)."""
    from mobilenets.deploy import export_executorch, export_tflite

    model = randomize_bn(mobilenets.create_model(name, global_pool=pool), calib_size=(64, 64)).eval()
    for fn, suffix in ((export_executorch, "pte"), (export_tflite, "tflite")):
        res = fn(model, tmp_path / f"m.{suffix}", input_size=(64, 64))
        assert res.fully_lowered and res.max_rel_diff <= 1e-4, res.summary()


@needs_et
@needs_lt
def test_mobile_files_record_the_model_info(tmp_path):
    """A .tflite file (a metadata buffer) and a .pte program (a model_info method) carry the
    model's ModelInfo, as an ONNX file does: name, classes and the preprocessing its weights
    expect, at the exported size; the runtimes run the files as before (the export's verification
    ran them)."""
    from mobilenets.deploy import export_executorch, export_tflite, read_model_info

    model = mobilenets.create_model("mobilenetv4_conv_small.e3600_r256_in1k", num_classes=7).eval()
    for fn, suffix in ((export_tflite, "tflite"), (export_executorch, "pte")):
        res = fn(model, tmp_path / f"m.{suffix}", input_size=(64, 80))
        info = read_model_info(res.path)
        assert info == mobilenets.model_info(model).replace(input_size=(3, 64, 80)), suffix
        assert info.mean == (0.5, 0.5, 0.5) and info.interpolation == "bicubic" and info.num_classes == 7
        assert res.max_rel_diff <= 1e-4
