"""How much of ExecuTorch's fp32 gap to ONNX Runtime was delegation coverage (issue 16): the
same model exported to ``.pte`` twice, with the ``"mobile"`` export forms (every op delegated
to XNNPACK) and without them (``MOBILE_FORMS`` emptied, ``allow_fallback=True``: what timm's
models give: the classifier's mean, MobileNetV3's hard-sigmoid gates, ... run on ExecuTorch's
portable kernels between delegate calls), timed interleaved in one run against our ONNX
Runtime fp32 file. Batch 1, 224x224, ``--threads`` threads; random weights, or a trained
checkpoint per model (``--checkpoint NAME=PATH``: the weights' values can change the time, e.g.
through denormal floats).

    python benchmarks/et_delegation_ab.py --models mobilenetv4_conv_small mobilenetv3_large_100
    python benchmarks/et_delegation_ab.py --checkpoint mobilenetv4_conv_small=benchmarks/out/mobile/mobilenetv4_conv_small/best.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy import PteRunner, export_executorch, export_onnx
from mobilenets.deploy import export_swaps
from mobilenets.deploy.ort import ort_session
from mobilenets.deploy.timing import interleaved_timings, machine_info
from mobilenets.factory import model_from_checkpoint


def export_without_forms(model, path: Path, size: int):
    """The ``.pte`` as a model without mobile export forms lowers (fallback ops allowed)."""
    saved = dict(export_swaps.MOBILE_FORMS)
    export_swaps.MOBILE_FORMS.clear()
    try:
        return export_executorch(model, path, input_size=(size, size), allow_fallback=True)
    finally:
        export_swaps.MOBILE_FORMS.update(saved)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv4_conv_small", "mobilenetv3_large_100"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="NAME=PATH: time this trained checkpoint instead of random weights")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    if ckpts and args.models == ap.get_default("models"):
        args.models = list(ckpts)
    rows = []
    print("| model | ops outside XNNPACK without the forms | ORT fp32 ms | ET fp32 with forms ms (x ORT) "
          "| ET fp32 without forms ms (x ORT) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        model = (model_from_checkpoint(ckpts[name])[0] if name in ckpts else mobilenets.create_model(name)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            export_onnx(model, tmp / "m.onnx", input_size=(args.size, args.size))
            with_forms = export_executorch(model, tmp / "forms.pte", input_size=(args.size, args.size))
            without = export_without_forms(model, tmp / "plain.pte", args.size)
            x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
            # no spinning workers (as `mobilenets bench`): spinning ORT threads would steal the cores
            # from the ExecuTorch runs interleaved with them
            sess = ort_session(tmp / "m.onnx", threads=args.threads, spinning=False)
            feed = {sess.get_inputs()[0].name: x.numpy()}
            forms_run, plain_run = PteRunner(with_forms.path, threads=args.threads), PteRunner(without.path,
                                                                                             threads=args.threads)
            fns = {"ort_fp32": lambda: sess.run(None, feed), "et_forms": lambda: forms_run(x),
                   "et_plain": lambda: plain_run(x)}
            t = interleaved_timings(fns, seconds=args.seconds)
        ort, forms, plain = (t[k]["ms"] for k in ("ort_fp32", "et_forms", "et_plain"))
        outside = sum(without.outside.values())
        rows.append({"model": name, "weights": ckpts.get(name, "random"), "outside_without_forms": outside,
                     "outside_ops": without.outside,
                     "ort_fp32_ms": ort, "et_forms_ms": forms, "et_plain_ms": plain,
                     "outside_with_forms": sum(with_forms.outside.values())})
        print(f"| `{name}` | {outside} | {ort:.2f} | {forms:.2f} ({forms / ort:.2f}) | {plain:.2f} ({plain / ort:.2f}) |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=1,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
