"""INT8 calibration methods (deploy/observers.py, ``--calib-method``): how each activation's range
is chosen from the calibration images, for the PT2E runtimes and ONNX Runtime."""

import copy

import pytest
import torch

import mobilenets
from conftest import randomize_bn
from mobilenets.cli import main
from mobilenets.deploy.observers import PT2E_CALIB_METHODS, percentile_bounds, percentile_observer_class

pytest.importorskip("torchao")


def test_percentile_bounds_clip_the_outliers_minmax_keeps():
    """A histogram of 100,000 standard normal values and ten at +-50: the 99.99 percentile bounds
    land near the normal's (+-3.9) where min / max are +-50; a histogram with nothing to clip
    keeps its range, and 0 always stays inside."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=g), torch.full((5,), 50.0), torch.full((5,), -50.0)])
    hist = torch.histc(x, bins=2048, min=-50, max=50)
    lo, hi = percentile_bounds(hist, torch.tensor(-50.0), torch.tensor(50.0))
    assert -4.5 < float(lo) < -3.3 and 3.3 < float(hi) < 4.5, (lo, hi)
    flat = torch.ones(100)
    lo, hi = percentile_bounds(flat, torch.tensor(0.5), torch.tensor(2.0), percentile=100.0)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(2.0)


def _observers(quantizer, model):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    gm = torch.export.export(model, (torch.randn(1, 3, 32, 32),)).module()
    prepared = prepare_pt2e(gm, quantizer)
    return {type(m).__name__ for n, m in prepared.named_modules() if n.startswith("activation_post_process")}


@pytest.mark.parametrize("method, observer", [("mse", "HistogramObserver"), ("minmax", "MinMaxObserver"),
                                              ("percentile", "PercentileObserver"),
                                              ("average", "MovingAverageMinMaxObserver")])
def test_the_method_sets_the_activation_observers(method, observer):
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy.executorch_export import xnnpack_quantizer
    from mobilenets.deploy.observers import with_calib_method

    model = mobilenets.create_model("mobilenetv1_025", num_classes=4).eval()
    found = _observers(with_calib_method(xnnpack_quantizer(), method), model)
    assert observer in found
    weights = {"PerChannelMinMaxObserver"}  # weights keep per-channel min / max
    assert found - weights == {observer}, found
    with pytest.raises(ValueError, match="calib_method: expected one of mse, minmax, percentile, average for ExecuTorch / "
                                         "LiteRT, got 'entropy'"):
        with_calib_method(xnnpack_quantizer(), "entropy")


@pytest.mark.slow  # three INT8 ExecuTorch exports
def test_each_method_exports_and_the_ranges_differ(tmp_path):
    """ExecuTorch INT8 with each method: every file lowers fully and runs, and the methods really
    choose different ranges (the files' logits differ). Which is more accurate depends on the
    network and data (benchmarks/INT8.md measures it on trained ones)."""
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy import export_executorch, pte_logits

    model = randomize_bn(mobilenets.create_model("mobilenetv1_025", num_classes=10), calib_size=(32, 32)).eval()
    g = torch.Generator().manual_seed(1)
    calib = torch.randn(32, 3, 32, 32, generator=g)
    calib[:2] *= 8  # a few extreme images: min / max follows them, the percentile clips them
    x = torch.randn(16, 3, 32, 32, generator=g)
    logits = {}
    for method in PT2E_CALIB_METHODS:
        res = export_executorch(model, tmp_path / f"{method}.pte", input_size=(32, 32), calib=calib,
                                calib_method=method)
        assert res.precision == "int8" and res.fully_lowered
        logits[method] = pte_logits(res, x)
    assert not torch.equal(logits["minmax"], logits["percentile"])
    assert not torch.equal(logits["mse"], logits["minmax"]) and not torch.equal(logits["mse"], logits["percentile"])
    assert percentile_observer_class().__name__ == "PercentileObserver"


def test_cli_calib_method(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = str(tmp_path / "q.onnx")
    assert main(["export", "mobilenetv1_025", "--num-classes", "4", "--input-size", "32", "--int8", "--calib", "fake",
                 "--calib-count", "4", "--calib-method", "percentile", "--out", out]) == 0
    assert "percentile ranges" in capsys.readouterr().out
    assert main(["export", "mobilenetv1_025", "--int8", "--calib", "fake", "--calib-method", "mse", "--out", out]) == 2
    assert "--calib-method: --format onnx takes minmax, entropy, percentile; got 'mse'" in capsys.readouterr().err
    assert main(["export", "mobilenetv1_025", "--format", "executorch", "--int8", "--calib", "fake",
                 "--calib-method", "percentil", "--out", str(tmp_path / "q.pte")]) == 2
    assert "takes auto, mse, minmax, percentile, average; got 'percentil' (did you mean percentile?)" in \
        capsys.readouterr().err
    assert main(["export", "mobilenetv1_025", "--calib-method", "minmax", "--out", out]) == 2
    assert "--calib-method is for --int8 exports" in capsys.readouterr().err


def test_average_keeps_the_signal_one_extreme_image_would_erase():
    """One calibration image whose activations are ~300x the others' (as some digit-clutter images
    are for a MobileNetV3-Large's SE layers): min / max, the MSE search and the percentile all
    stretch the range over it and round the other images' activations to a few steps; ``average``
    (each image moves the range by 1 %) keeps them. Measured on the PT2E reference graph."""
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy.executorch_export import xnnpack_quantizer
    from mobilenets.deploy.mobile import pt2e_quantize
    from mobilenets.deploy.observers import with_calib_method

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(64, 3, 16, 16, generator=g)
    calib[40] *= 300  # one extreme image
    x = torch.randn(32, 3, 16, 16, generator=g)
    with torch.no_grad():
        ref = net(x)
    err = {}
    for method in PT2E_CALIB_METHODS:
        q = pt2e_quantize(net, x[:1], calib, with_calib_method(xnnpack_quantizer(), method))
        with torch.no_grad():
            out = torch.cat([q(x[i:i + 1]) for i in range(len(x))])
        err[method] = float((out - ref).abs().mean() / ref.abs().mean())
    assert err["average"] < 0.05, err
    assert min(err[m] for m in ("mse", "minmax", "percentile")) > 4 * err["average"], err


def test_output_error_weighs_each_image_the_same():
    """:func:`output_error` is the mean per-image relative squared error: 0 for the same outputs,
    and an image whose outputs are 1000x the others' counts as one image (its error relative to
    its own size), not as the whole sum; several outputs (a detector's) are taken together."""
    from mobilenets.deploy.observers import output_error

    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1000.0, 0.0], [0.0, 2.0]])
    noise = torch.tensor([[0.1, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    images = torch.arange(4.0)[:, None]  # the "model" looks its row up by the image

    def ref(x):
        return f[x[:, 0].long()]

    assert output_error(ref, ref, images, batch=1) == 0.0
    assert output_error(ref, lambda x: ref(x) + noise[x[:, 0].long()], images, batch=2) == pytest.approx(0.01 / 4)
    big = torch.tensor([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0], [0.0, 0.0]])  # 10 % of the big image's size
    assert output_error(ref, lambda x: ref(x) + big[x[:, 0].long()], images, batch=1) == pytest.approx(0.01 / 4)
    two = output_error(lambda x: (ref(x), ref(x)), lambda x: (ref(x), ref(x) + noise[x[:, 0].long()]), images, batch=4)
    assert two == pytest.approx(0.01 / 2 / 4)
    # the reference's outputs computed once (what auto compares every choice with) give the same
    from mobilenets.deploy.observers import reference_outputs

    cached = reference_outputs(ref, images, batch=2)
    assert cached.shape == (4, 2)
    assert output_error(cached, lambda x: ref(x) + noise[x[:, 0].long()], images, batch=2) == pytest.approx(0.01 / 4)
    with pytest.raises(ValueError, match="reference outputs are for 4 images, expected 2"):
        output_error(cached, ref, images[:2], batch=2)


def test_auto_keeps_the_candidate_closer_to_fp32(tmp_path, capsys, monkeypatch):
    """``auto`` (the default for ExecuTorch / LiteRT) first calibrates with ``mse`` and with
    ``average`` and takes the graph whose outputs are closer to fp32 on the calibration images:
    ``average`` where one extreme image stretches every other range, ``mse`` where there is none.
    Then groups of activations switch method where that brings the outputs closer still: the
    result is that method alone where nothing switched and strictly closer than it where
    something did. The file's summary says which."""
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy.mobile import Runtime
    from mobilenets.deploy import observers
    from mobilenets.deploy.observers import output_error
    from mobilenets.deploy.runtimes import runtime_for

    rt = runtime_for("executorch")
    assert isinstance(rt, Runtime) and rt.calib_methods[0] == "auto"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    g = torch.Generator().manual_seed(0)
    calm = torch.randn(64, 3, 16, 16, generator=g)
    monkeypatch.setattr(observers, "REFINE_IMAGES", len(calm))  # both steps compare on all the images
    wild = calm.clone()
    wild[40] *= 300
    x = calm[:1]
    switched = 0
    for images, expected in ((wild, "average"), (calm, "mse")):
        q, _ = rt.quantize(net, x, images)
        assert q.meta["calib_method"].startswith(f"auto: {expected}"), q.meta["calib_method"]
        assert "(output error mse " in q.meta["calib_method"]
        alone, _ = rt.quantize(net, x, images, calib_method=expected)
        assert alone.meta["calib_method"] == expected
        if q.meta["calib_groups"]:
            switched += 1
            assert output_error(net, q, images, 1) < output_error(net, alone, images, 1)
            for group, method in q.meta["calib_groups"].items():
                assert f"; {group} {method}" in q.meta["calib_method"] and method != expected
        else:
            assert output_error(net, q, images, 1) == output_error(net, alone, images, 1)
        other, _ = rt.quantize(net, x, images, calib_method={"mse": "average", "average": "mse"}[expected])
        assert output_error(net, other, images, 1) > output_error(net, alone, images, 1)
    assert switched  # the second step does something on this net (measured: on the calm images)
    out = str(tmp_path / "m.pte")
    assert main(["export", "mobilenetv1_025", "--num-classes", "4", "--input-size", "32", "--format", "executorch",
                 "--int8", "--calib", "fake", "--calib-count", "4", "--out", out]) == 0
    assert "auto: " in capsys.readouterr().out


class _Gated(torch.nn.Module):
    """A MobileNetV3 block in small: conv + ReLU, an SE gate (hard-sigmoid written as the mobile
    forms write it, ``relu6(x + 3) / 6``) on the map, a conv + ReLU6, pooled to logits."""

    def __init__(self):
        super().__init__()
        self.conv, self.conv2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 1)
        self.fc1, self.fc2 = torch.nn.Conv2d(16, 8, 1), torch.nn.Conv2d(8, 16, 1)
        self.head = torch.nn.Linear(16, 10)

    def gate_input(self, x):
        x = torch.relu(self.conv(x))
        return x, self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))

    def forward(self, x):
        x, s = self.gate_input(x)
        x = x * (torch.nn.functional.relu6(s + 3.0) / 6.0)
        return self.head(torch.nn.functional.relu6(self.conv2(x)).mean((2, 3)))


def _prepared(net, quantizer, size=16):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    return prepare_pt2e(torch.export.export(net, (torch.randn(1, 3, size, size),)).module(), quantizer)


def _quantizers():
    out = []
    try:
        from mobilenets.deploy.executorch_export import xnnpack_quantizer
        out.append(xnnpack_quantizer())
    except ImportError:
        pass
    try:
        from mobilenets.deploy.litert_export import litert_quantizer
        out.append(litert_quantizer())
    except ImportError:
        pass
    if not out:
        pytest.skip("needs executorch or litert-torch")
    return out


def test_saturation_ranges_are_what_the_clamps_keep():
    """The SE gate's input is read only through ``relu6(s + 3) / 6``: [-3, 3]; the conv + ReLU6
    output: [0, 6]; the map the gate multiplies and the logits are unbounded (left out). In both
    runtimes' quantizers (XNNPACK's observes the ReLU6 with the conv before it, LiteRT's fuses the
    add with the ReLU6)."""
    from mobilenets.deploy.observers import saturation_ranges

    for quantizer in _quantizers():
        gm = _prepared(_Gated().eval(), quantizer)
        ranges = saturation_ranges(gm)
        got = sorted(set(ranges.values()))
        assert (-3.0, 3.0) in got and (0.0, 6.0) in got, (type(quantizer).__name__, got)
        assert set(got) <= {(-3.0, 3.0), (0.0, 6.0)}, got
        names = {n.target for n in gm.graph.nodes if n.op == "call_module"}
        assert len(ranges) < len(names)  # the logits, the input and the gated map keep their full ranges
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        last = out[0] if isinstance(out, (list, tuple)) else out
        assert last.op != "call_module" or last.target not in ranges


def test_within_saturation_changes_no_output_and_keeps_the_gate():
    """Calibrating inside :func:`within_saturation` gives the same outputs (what it clips, no
    later op tells apart), and one calibration image that drives the SE gate's input ~40x past
    the others' (as some digit-clutter images do for a MobileNetV3-Large, which collapsed to
    chance with every range that covered them) no longer widens that input's range: the default
    (``mse``) PTQ reference quantizes it over [-3, 3] (step 6 / 255), where the extreme image
    alone would make the step ~1 and every ordinary image's gate one of seven values."""
    from mobilenets.deploy.mobile import pt2e_quantize
    from mobilenets.deploy.observers import within_saturation

    torch.manual_seed(0)
    net = _Gated().eval()
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(48, 3, 32, 32, generator=g)
    with torch.no_grad():  # the gate's input spans [-3, 3] over the ordinary images...
        s = net.gate_input(calib)[1]
        net.fc2.weight *= 3 / float((s - s.mean(0)).abs().max())
        net.fc2.bias -= net.gate_input(calib)[1].mean(0).flatten()
        assert float(net.gate_input(calib)[1].abs().max()) < 3.01
        calib[7] = 2.5  # ... and one flat image drives it far out (the map itself only 1.4x)
        assert float(net.gate_input(calib[7:8])[1].abs().max()) > 100
    for quantizer in _quantizers():
        gm = _prepared(net, quantizer, 32)
        with torch.no_grad():
            before = torch.cat([gm(c[None]) for c in calib])
            with within_saturation(gm) as ranges:
                inside = torch.cat([gm(c[None]) for c in calib])
        assert (-3.0, 3.0) in ranges.values() and torch.allclose(before, inside, rtol=1e-5, atol=1e-5)
        q = pt2e_quantize(net, calib[:1], calib, quantizer)
        # the gate's input: the conv output quantized on its way to the add of 3
        gate_in = [n for n in q.graph.nodes if "quantize_per_tensor" in str(n.target) and "conv" in str(n.args[0].target)
                   and any("add" in str(u.target) for d in n.users for u in d.users)]
        assert len(gate_in) == 1, gate_in
        scale = float(gate_in[0].args[1])
        assert scale == pytest.approx(6 / 255, rel=0.02), (type(quantizer).__name__, scale)


def _quantizer(runtime: str, method: str = "mse"):
    """A fresh PT2E quantizer of ``runtime`` with ``method`` ranges (skip without the runtime)."""
    from mobilenets.deploy.observers import with_calib_method

    if runtime == "executorch":
        pytest.importorskip("executorch.exir")
        from mobilenets.deploy.executorch_export import xnnpack_quantizer as make
    else:
        pytest.importorskip("litert_torch")
        from mobilenets.deploy.litert_export import litert_quantizer as make
    return with_calib_method(make(), method)


@pytest.mark.parametrize("runtime", ["executorch", "litert"])
def test_activation_groups_are_roles_without_weights(runtime):
    """``auto``'s second step switches activations by role, ``"producer -> readers"``: on the
    gated block, the SE gate's input (``conv2d -> add``), the logits (``linear -> output``); a
    range the quantizer shares between calls (the SE pooling's input and output: one observer
    module under two names) is one member of one group, else a switch would split what the
    runtime requires equal (measured: XNNPACK then refuses the file); no weight's observer is in
    a group (weights are per-channel min / max whatever the method)."""
    from torchao.quantization.pt2e.observer import ObserverBase

    from mobilenets.deploy.observers import activation_groups

    torch.manual_seed(0)
    gm = _prepared(_Gated().eval(), _quantizer(runtime))
    groups = activation_groups(gm)
    assert {"input -> conv2d", "conv2d -> add", "mean -> conv2d | relu -> mean, mul", "mean -> linear",
            "linear -> output", "div -> mul"} <= set(groups), sorted(groups)
    members = [n for names in groups.values() for n in names]
    assert len(members) == len(set(members))
    group_of = {n: g for g, names in groups.items() for n in names}
    instances: dict = {}  # a quantizer's shared range is one module under several names: one group
    for name, module in gm.named_modules(remove_duplicate=False):
        if isinstance(module, ObserverBase) and name in group_of:
            instances.setdefault(id(module), set()).add(group_of[name])
    assert all(len(g) == 1 for g in instances.values())
    assert len(instances) < len(members)  # the block has one: the SE pooling's input and output
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), ObserverBase):
            assert (node.target in members) == (node.args[0].op != "get_attr"), node.args[0]


class _FixedBatch(_Gated):
    """The gated block with a reshape that fixes the batch at 1 (a form that cannot take a free
    batch)."""

    def forward(self, x):
        return super().forward(x).reshape(1, 10)


@pytest.mark.parametrize("runtime", ["executorch", "litert"])
def test_auto_compares_what_conversion_gives(runtime):
    """``auto`` compares choices by simulating each observer as its quantize / dequantize; the
    error it reports for what it chose is the converted graph's error (the graph the file is
    made from), to rounding: with the trials run at the export's batch, and on the network
    captured with a free batch (:func:`~mobilenets.deploy.mobile.simulation_graph`, many images
    per forward), which gives the same error and, where its observers are not the fixed-batch
    graph's, is not used."""
    from mobilenets.deploy.mobile import pt2e_convert, pt2e_observe, simulation_graph
    from mobilenets.deploy.observers import GROUP_CANDIDATES, choose_calibration, output_error

    torch.manual_seed(0)
    net = _Gated().eval()
    images = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sim = simulation_graph(net, images[:1], _quantizer(runtime))
    assert sim is not None  # the block takes a free batch
    other = simulation_graph(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), images[:1], _quantizer(runtime))
    assert simulation_graph(_FixedBatch().eval(), images[:1], _quantizer(runtime)) is None
    calibrated = {m: pt2e_observe(net, images[:1], images, _quantizer(runtime, m)) for m in GROUP_CANDIDATES}
    results = {}
    for name, simulator in (("fixed batch", None), ("free batch", sim), ("other observers", other)):
        graphs = copy.deepcopy(calibrated)  # choose_calibration swaps the chosen observers into its graphs
        r = results[name] = choose_calibration(net, images, 1, graphs, simulator=simulator)
        q = pt2e_convert(r["graph"], fold_quantize=runtime == "executorch")
        assert output_error(net, q, images, 1) == pytest.approx(r["error"], rel=0.02), name
        assert r["error"] <= min(r["errors"].values())  # 16 images: the second step compares on all of them
    fixed, free = results["fixed batch"], results["free batch"]
    assert free["base"] == fixed["base"] and free["error"] == pytest.approx(fixed["error"], rel=0.02)
    assert all(free["errors"][m] == pytest.approx(e, rel=0.02) for m, e in fixed["errors"].items())
    assert results["other observers"]["errors"] == fixed["errors"]  # fell back: the same computation


def test_auto_keeps_switches_only_if_closer_on_all_images(monkeypatch):
    """The second step compares on a few of the calibration images (:data:`REFINE_IMAGES`); its
    switches stand only if they bring the outputs closer on all of them too, else the base is
    kept whole. Here the all-images check is made to disagree with the few images' verdict."""
    from mobilenets.deploy import observers
    from mobilenets.deploy.mobile import pt2e_observe
    from mobilenets.deploy.observers import GROUP_CANDIDATES, choose_calibration

    torch.manual_seed(0)
    net = _Gated().eval()
    images = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(observers, "REFINE_IMAGES", 4)
    graphs = {m: pt2e_observe(net, images[:1], images, _quantizer("executorch", m)) for m in GROUP_CANDIDATES}
    agreed = choose_calibration(net, images, 1, graphs)
    assert agreed["groups"] and agreed["error"] < agreed["errors"][agreed["base"]]

    real, compared_few = observers.output_error, []

    def disagreeing(reference, quantized, imgs, batch):
        compared_few.append(len(imgs) < len(images))
        worse = len(imgs) == len(images) and any(compared_few[:-1])  # the check after the second step
        return real(reference, quantized, imgs, batch) + (1.0 if worse else 0.0)

    monkeypatch.setattr(observers, "output_error", disagreeing)
    graphs = {m: pt2e_observe(net, images[:1], images, _quantizer("executorch", m)) for m in GROUP_CANDIDATES}
    kept = choose_calibration(net, images, 1, graphs)
    assert kept["base"] == agreed["base"] and kept["groups"] == {}
    assert kept["error"] == kept["errors"][kept["base"]]
    assert all(type(m).__name__ != "_FakeQuant" for m in kept["graph"].modules())
