"""INT8 accuracy and speed: post-training quantization (PTQ) and quantization-aware training (QAT)
against fp32, on models trained on the built-in digits data.

For each model:

1. train it on digits (the ``digits`` recipe, shortened: ``--epochs``, ``--img-size``) with the
   library's training API;
2. re-estimate BatchNorm statistics over the training images (:func:`recalibrate_bn`: a few
   epochs leave MobileNetV3's momentum-0.01 BNs unconverged), then fp32 validation top-1
   (PyTorch and ONNX Runtime);
3. PTQ: :func:`mobilenets.deploy.quantize_onnx` calibrated on ``--calib-count`` training images,
   run by ONNX Runtime on the held-out validation split: top-1, drop against fp32, top-1
   agreement with fp32 (``--ptq-variants`` adds other settings to compare);
4. QAT: :func:`mobilenets.deploy.prepare_qat`, ``--qat-epochs`` of fine-tuning, then
   :func:`mobilenets.deploy.export_qat_onnx`, run by ONNX Runtime: same figures;
5. the other backend: PyTorch's x86 quantized kernels (FX graph mode PTQ, same calibration
   images): top-1 and agreement;
6. latency at ``--latency-size`` (224), batch 1, ``--threads`` (2) threads: ONNX Runtime fp32
   (our export), PTQ INT8, QAT INT8, PyTorch x86 INT8 and, when timm is installed, timm's model
   exported with ``torch.onnx.export`` (the usual route). Timing is interleaved (every path runs a few
   iterations per round, the order rotating each round) and the figure is the median;
   ratios are of medians from the same rounds. It also checks that the INT8 graphs run as
   integer kernels (no float Conv left after ONNX Runtime's optimizations).

Prints a markdown table; ``--json FILE`` writes everything.

    python benchmarks/bench_int8.py                      # the three default models, ~10-15 min
    python benchmarks/bench_int8.py --models mobilenetv4_conv_small --epochs 2 --qat-epochs 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_MODELS = ("mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv4_conv_small")
PTQ_VARIANTS = {
    "default": {},
    "full_range": {"reduce_range": False},
    "per_tensor": {"per_channel": False},
    "entropy": {"method": "entropy"},
    "percentile": {"method": "percentile"},
    "int8_output": {"float_output": False},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def stack_dataset(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def torch_logits(model, x: torch.Tensor, bs: int = 128) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == y).double().mean())


def interleaved(fns: dict, seconds: float, min_rounds: int = 15) -> dict:
    """Median ms per call for each callable, timed in rotating rounds; also the median of the
    per-round ratios to the first callable."""
    names = list(fns)
    for f in fns.values():  # warm-up
        for _ in range(3):
            f()
    est = {}
    for n, f in fns.items():
        t0 = time.perf_counter()
        for _ in range(3):
            f()
        est[n] = (time.perf_counter() - t0) / 3
    k = max(1, int(0.05 / min(est.values())))  # ~50 ms per path per round
    rounds = max(min_rounds, int(seconds / (k * sum(est.values()))))
    per_round = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            for _ in range(k):
                fns[n]()
            per_round[n].append((time.perf_counter() - t0) / k * 1e3)
    base = names[0]
    return {n: {"ms": statistics.median(v), "p25": statistics.quantiles(v, n=4)[0],
                "p75": statistics.quantiles(v, n=4)[2], "rounds": len(v), "iters_per_round": k,
                f"ratio_to_{base}": statistics.median(a / b for a, b in zip(v, per_round[base]))}
            for n, v in per_round.items()}


@torch.no_grad()
def recalibrate_bn(model, ds, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's running statistics as the exact average over ``ds``.

    A few epochs are too few for BN layers with a small momentum (MobileNetV3 uses 0.01, the
    TF value): their running statistics are still mostly the initial ones and the eval-mode
    network is at chance although it trains well. One pass over the training set (with its
    training augmentation, the distribution the statistics track during training) fixes that
    without changing any weight."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    for x, _ in loader:
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def qat_finetune(qat, train_ds, recipe, epochs: int, lr: float, batch_size: int, seed: int,
                 teacher=None, alpha: float = 1.0, temperature: float = 1.0) -> list[dict]:
    """A plain loop: AdamW, cosine from ``lr`` to 0, label smoothing as the recipe. With a
    ``teacher`` (the fp32 model) the loss is :func:`~mobilenets.train.distill.distill_loss`:
    the INT8 model learns to reproduce the fp32 model's outputs, which is what top-1
    agreement measures, rather than to keep fitting the labels."""
    from mobilenets.train.distill import distill_loss
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    params = [p for p in qat.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = max(1, epochs * len(loader))
    step, hist = 0, []
    for ep in range(epochs):
        qat.train()
        s = n = correct = 0
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            out = qat(x)
            loss = F.cross_entropy(out, y, label_smoothing=recipe.label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(x)
                loss = distill_loss(out, t_out, loss, alpha, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            s += loss.item() * len(y)
            n += len(y)
            correct += int((out.argmax(1) == y).sum())
        hist.append({"epoch": ep + 1, "loss": s / n, "train_top1": 100 * correct / n})
        log(f"    QAT epoch {ep + 1}/{epochs}: loss {s / n:.4f} train top-1 {100 * correct / n:.2f}%")
    return hist


def torch_x86_ptq(model, calib: torch.Tensor, batch_size: int = 32):
    """The other INT8 backend the issue asks us to weigh: PyTorch's own x86 quantized kernels
    (FX graph mode post-training static quantization, ``get_default_qconfig_mapping("x86")``:
    conv + BN + ReLU fused, per-channel int8 weights, uint8 activations, calibrated on the same
    images). Returns ``(quantized model, None)`` or ``(None, why it could not be built)``."""
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        return None, "this PyTorch build has no x86 quantized engine"
    torch.backends.quantized.engine = "x86"
    try:
        with quiet(), torch.no_grad():
            # the classifier head stays float: quantized hardswish needs 4-D tensors (V3's head
            # applies it to the pooled vector) and the head is < 1 % of the MACs
            qmap = get_default_qconfig_mapping("x86").set_module_name("head", None)
            prepared = prepare_fx(copy.deepcopy(model).eval(), qmap, example_inputs=(calib[:1],))
            for i in range(0, len(calib), batch_size):
                prepared(calib[i:i + batch_size])
            q = convert_fx(prepared)
            q(calib[:2])  # fails here if a quantized kernel rejects the graph
            return q, None
    except Exception as e:  # noqa: BLE001 - reported in the table, not fatal
        return None, f"{type(e).__name__}: {str(e)[:120]}"


def timm_onnx(name: str, path: Path, size: int, num_classes: int):
    """timm's model (random weights), exported with torch.onnx.export as people do today."""
    import mobilenets

    ref = mobilenets.get_entry(name).reference.get("timm")
    if not ref:
        return None, "timm has no such model"
    try:
        import timm
    except ImportError:
        return None, "timm not installed"
    m = timm.create_model(ref, pretrained=False, num_classes=num_classes).eval()
    with quiet():
        torch.onnx.export(m, (torch.randn(1, 3, size, size),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    return path, None


def run_model(name: str, args, work: Path) -> dict:
    from mobilenets.deploy import (agreement, calibration_batches, cosine, export_onnx, export_qat_onnx,
                                   int8_op_counts, onnx_logits, ort_session, prepare_qat, quantize_onnx)
    from mobilenets.data.classification import build_datasets
    from mobilenets.train.loop import train
    from mobilenets.train.recipes import get_recipe

    res: dict = {"model": name}
    S = args.img_size
    recipe = get_recipe("digits").replace(model=name, epochs=args.epochs, img_size=S,
                                          warmup_epochs=min(1, args.epochs - 1), seed=args.seed)
    torch.set_num_threads(args.train_threads)
    t0 = time.time()
    log(f"[{name}] training {args.epochs} epochs at {S}px ({args.train_threads} thread(s))")
    tr = train(recipe, work / name / "train", progress=False, log=lambda s: log("    " + s))
    if tr.exit_code != 0:
        raise RuntimeError(f"{name}: training failed: {tr.message}")
    model = tr.model.eval()
    res["train_s"] = round(time.time() - t0, 1)
    data = build_datasets(recipe)
    xv, yv = stack_dataset(data.val)
    res["val_images"] = len(yv)
    res["fp32_top1_before_bn_recalibration"] = top1(torch_logits(model, xv), yv)
    recalibrate_bn(model, data.train)

    ref = torch_logits(model, xv)
    res["fp32_top1"] = top1(ref, yv)
    log(f"    fp32 val top-1 {res['fp32_top1']:.2f}% (before BN re-estimation "
        f"{res['fp32_top1_before_bn_recalibration']:.2f}%)")
    fp32_path = work / name / "fp32.onnx"
    export_onnx(model, fp32_path, input_size=(S, S), dynamic_batch=True)
    ort_fp32 = onnx_logits(fp32_path, xv, threads=args.threads)
    res["ort_fp32_top1"] = top1(ort_fp32, yv)

    calib = calibration_batches("digits", count=args.calib_count, input_size=(S, S))
    res["ptq"] = {}
    for v in args.ptq_variants:
        t0 = time.time()
        p = quantize_onnx(model, work / name / f"ptq_{v}.onnx", calib, input_size=(S, S), dynamic_batch=True,
                          **PTQ_VARIANTS[v])
        q = onnx_logits(p, xv, threads=args.threads)
        sim = onnx_logits(ort_session(p, optimize=False), xv)  # the QDQ graph computed in float
        res["ptq"][v] = {"top1": top1(q, yv), "drop": res["fp32_top1"] - top1(q, yv),
                         "agreement": 100 * agreement(q, ref), "cosine": cosine(q, ref),
                         "kernel_vs_qdq_agreement": 100 * agreement(q, sim),
                         "quantize_s": round(time.time() - t0, 1)}
        log(f"    PTQ {v}: top-1 {res['ptq'][v]['top1']:.2f}% (fp32 {res['fp32_top1']:.2f}%), agreement "
            f"{res['ptq'][v]['agreement']:.2f}%")

    x86, note = torch_x86_ptq(model, calib)
    if x86 is not None:
        q = torch_logits(x86, xv)
        res["torch_x86"] = {"top1": top1(q, yv), "drop": res["fp32_top1"] - top1(q, yv),
                            "agreement": 100 * agreement(q, ref)}
        log(f"    PyTorch x86 PTQ: top-1 {res['torch_x86']['top1']:.2f}%, agreement "
            f"{res['torch_x86']['agreement']:.2f}%")
    else:
        res["torch_x86_note"] = note
        log(f"    PyTorch x86 PTQ: not built ({note})")

    if args.qat_epochs > 0:
        torch.manual_seed(args.seed)
        t0 = time.time()
        qat = prepare_qat(model, calib)
        with torch.no_grad():
            res["qat_init_top1"] = top1(torch_logits(qat, xv), yv)
        res["qat_history"] = qat_finetune(qat, data.train, recipe, args.qat_epochs, args.qat_lr,
                                          recipe.batch_size, args.seed,
                                          teacher=model.eval() if args.qat_distill > 0 else None,
                                          alpha=args.qat_distill)
        fq = torch_logits(qat, xv)
        p = export_qat_onnx(qat, work / name / "qat.onnx", input_size=(S, S), dynamic_batch=True)
        q = onnx_logits(p, xv, threads=args.threads)
        res["qat"] = {"top1": top1(q, yv), "drop": res["fp32_top1"] - top1(q, yv),
                      "agreement": 100 * agreement(q, ref), "fake_quant_top1": top1(fq, yv),
                      "ort_vs_fake_quant_agreement": 100 * agreement(q, fq), "qat_s": round(time.time() - t0, 1)}
        log(f"    QAT: top-1 {res['qat']['top1']:.2f}%, agreement {res['qat']['agreement']:.2f}%")
    else:
        qat = None

    if not args.skip_latency:
        L = args.latency_size
        torch.set_num_threads(args.train_threads)
        files = {"ort_fp32": export_onnx(model, work / name / "lat_fp32.onnx", input_size=(L, L))}
        calib_l = calibration_batches("digits", count=16, input_size=(L, L))
        files["ort_int8_ptq"] = quantize_onnx(model, work / name / "lat_ptq.onnx", calib_l, input_size=(L, L))
        if qat is not None:
            files["ort_int8_qat"] = export_qat_onnx(qat, work / name / "lat_qat.onnx", input_size=(L, L))
        tpath, note = timm_onnx(name, work / name / "lat_timm.onnx", L, data.num_classes)
        if tpath is not None:
            files["timm_ort_fp32"] = tpath
        else:
            res["timm_note"] = note
        res["int8_ops"] = {k: {op: c for op, c in int8_op_counts(p).items() if op in ("Conv", "QLinearConv",
                                                                                     "ConvInteger", "QGemm", "Gemm")}
                           for k, p in files.items() if "int8" in k}
        x86_l = torch_x86_ptq(model, calib_l)[0] if "torch_x86" in res else None
        xt = torch.randn(1, 3, L, L)
        x = xt.numpy()
        for threads in args.latency_threads:
            sessions = {k: ort_session(p, threads=threads, spinning=False) for k, p in files.items()}
            fns = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
            if x86_l is not None:
                torch.set_num_threads(threads)
                fns["torch_x86_int8"] = lambda: x86_l(xt)
            log(f"    timing {list(fns)} at {L}px, batch 1, {threads} thread(s)")
            with torch.no_grad():
                res.setdefault("latency", {})[str(threads)] = interleaved(fns, args.seconds)
        torch.set_num_threads(args.train_threads)
    return res


def table(results: list[dict], args) -> str:
    lines = []
    thr = str(args.latency_threads[0]) if args.latency_threads else None
    head = ["model", "fp32 top-1", "PTQ top-1", "PTQ drop", "PTQ agree", "QAT top-1", "QAT drop", "QAT agree",
            "x86 PTQ top-1 / agree"]
    if thr and not args.skip_latency:
        head += [f"ORT fp32 ms ({thr}t)", "PTQ INT8 ms", "INT8/fp32", "QAT INT8/fp32", "timm ORT fp32 ms",
                 "INT8/timm ORT", "x86 INT8 ms", "x86 INT8/fp32"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in results:
        p = r["ptq"]["default"]
        q = r.get("qat")
        row = [r["model"], f"{r['fp32_top1']:.2f}", f"{p['top1']:.2f}", f"{p['drop']:+.2f}", f"{p['agreement']:.2f}%",
               f"{q['top1']:.2f}" if q else "-", f"{q['drop']:+.2f}" if q else "-",
               f"{q['agreement']:.2f}%" if q else "-"]
        x86 = r.get("torch_x86")
        row.append(f"{x86['top1']:.2f} / {x86['agreement']:.2f}%" if x86 else "-")
        if thr and "latency" in r:
            lat = r["latency"][thr]
            f = lat["ort_fp32"]["ms"]
            row += [f"{f:.2f}", f"{lat['ort_int8_ptq']['ms']:.2f}", f"{lat['ort_int8_ptq']['ratio_to_ort_fp32']:.2f}",
                    f"{lat['ort_int8_qat']['ratio_to_ort_fp32']:.2f}" if "ort_int8_qat" in lat else "-"]
            if "timm_ort_fp32" in lat:
                t = lat["timm_ort_fp32"]["ms"]
                row += [f"{t:.2f}", f"{lat['ort_int8_ptq']['ms'] / t:.2f}"]
            else:
                row += ["-", "-"]
            x = lat.get("torch_x86_int8")
            row += [f"{x['ms']:.2f}", f"{x['ratio_to_ort_fp32']:.2f}"] if x else ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    extra = [v for v in args.ptq_variants if v != "default"]
    if extra:
        lines += ["", "PTQ variants (top-1 / agreement with fp32 / agreement of the int8 kernels with the "
                      "same QDQ graph computed in float):", "",
                  "| model | " + " | ".join(args.ptq_variants) + " |", "|---|" + "---|" * len(args.ptq_variants)]
        for r in results:
            cells = [f"{r['ptq'][v]['top1']:.2f} / {r['ptq'][v]['agreement']:.1f}% / "
                     f"{r['ptq'][v]['kernel_vs_qdq_agreement']:.1f}%" for v in args.ptq_variants]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    if len(args.latency_threads) > 1 and not args.skip_latency:
        lines += ["", "Latency at every thread count (ms, median; INT8/fp32 ratio):", ""]
        lines.append("| model | threads | ORT fp32 | PTQ INT8 | QAT INT8 | timm ORT fp32 | PTQ INT8/fp32 |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in results:
            for t, lat in r.get("latency", {}).items():
                g = lambda k: f"{lat[k]['ms']:.2f}" if k in lat else "-"  # noqa: E731
                lines.append(f"| {r['model']} | {t} | {g('ort_fp32')} | {g('ort_int8_ptq')} | {g('ort_int8_qat')} | "
                             f"{g('timm_ort_fp32')} | {lat['ort_int8_ptq']['ratio_to_ort_fp32']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    ap.add_argument("--epochs", type=int, default=6, help="fp32 training epochs on digits")
    ap.add_argument("--img-size", type=int, default=64, help="training / evaluation resolution")
    ap.add_argument("--calib-count", type=int, default=256, help="calibration images (training split)")
    ap.add_argument("--ptq-variants", default="default",
                    help=f"comma-separated PTQ settings to compare: {', '.join(PTQ_VARIANTS)}")
    ap.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs (0: skip QAT)")
    ap.add_argument("--qat-lr", type=float, default=2e-4, help="QAT peak learning rate (AdamW, cosine)")
    ap.add_argument("--qat-distill", type=float, default=0.0,
                    help="weight (0-1) of distillation from the fp32 model in the QAT loss (0: labels only)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for accuracy runs")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="PyTorch threads for training (1 is fastest on a shared 2-core machine)")
    ap.add_argument("--latency-size", type=int, default=224)
    ap.add_argument("--latency-threads", default="2", help="comma-separated ONNX Runtime thread counts")
    ap.add_argument("--seconds", type=float, default=8.0, help="timing budget per model and thread count")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write all results to this file")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.ptq_variants = [v for v in args.ptq_variants.split(",") if v]
    if "default" not in args.ptq_variants:
        args.ptq_variants.insert(0, "default")
    bad = [v for v in args.ptq_variants if v not in PTQ_VARIANTS]
    if bad:
        ap.error(f"unknown PTQ variant(s) {bad}; choose from {list(PTQ_VARIANTS)}")
    args.latency_threads = [int(t) for t in args.latency_threads.split(",") if t]

    import onnxruntime

    t_start = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as d:
        for name in args.models:
            results.append(run_model(name, args, Path(d)))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "argv": sys.argv, "elapsed_s": round(time.time() - t_start, 1)}
    try:
        import re
        cpu = Path("/proc/cpuinfo").read_text()
        meta["cpu"] = re.search(r"model name\s*:\s*(.*)", cpu).group(1)
        flags = re.search(r"flags\s*:\s*(.*)", cpu).group(1).split()
        meta["vnni"] = any("vnni" in f for f in flags)
        meta["avx512"] = any(f.startswith("avx512") for f in flags)
    except (OSError, AttributeError):
        pass
    print(table(results, args))
    print(f"\n{meta['date']}, {meta.get('cpu', meta['machine'])}, torch {meta['torch']}, onnxruntime "
          f"{meta['onnxruntime']}, {meta['elapsed_s']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
