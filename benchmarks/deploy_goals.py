"""Our deployment goals, checked on a ``mobilenets bench`` report: the targets this project set
itself (fused eager <= 0.7x timm eager, best fp32 <= 1.0x timm -> ONNX Runtime and <= 1.5x the
roofline limit, INT8 <= 0.5x fp32 on the mobile runtimes and <= 0.5x timm ORT). They are ours,
not the library's: ``mobilenets bench`` prints the measurements and ratios, this script judges
them (benchmarks/MOBILE.md, RESULTS.md quote its lines).

    python benchmarks/deploy_goals.py mobilenetv3_large_100 mobilenetv4_conv_small --batch-size 1
"""

from __future__ import annotations

import argparse
import sys

from mobilenets.deploy.bench import FP32_OURS, BenchReport, bench


def goals(report: BenchReport) -> list[str]:
    """The deployment goals, checked on this run's ratios (one line per model and batch)."""
    out = []
    by = {}
    for r in report.rows:
        by.setdefault((r.model, r.batch), {})[r.path] = r
    for (model, batch), rs in by.items():
        ms = {p: r.ms for p, r in rs.items() if r.ms is not None}
        parts = []
        fused = {p: ms[p] for p in ("fused_cl", "fused_onednn") if p in ms}
        if fused and "timm_eager" in ms:
            best = min(fused, key=fused.get)
            v = fused[best] / ms["timm_eager"]
            parts.append(f"fused ({best})/timm eager {v:.2f} ({'met' if v <= 0.7 else 'not met'}, goal <= 0.7)")
        fp32 = {p: ms[p] for p in FP32_OURS if p in ms}
        if fp32 and "timm_ort" in ms:
            best = min(fp32, key=fp32.get)
            v = fp32[best] / ms["timm_ort"]
            parts.append(f"best fp32 ({best})/timm ORT {v:.2f} ({'met' if v <= 1.0 else 'not met'}, goal <= 1.0)")
        if fp32 and report.roofline_ms(model, batch):
            v = min(fp32.values()) / report.roofline_ms(model, batch)
            parts.append(f"best fp32/roofline limit {v:.2f} ({'met' if v <= 1.5 else 'not met'}, goal <= 1.5)")
        for q, f, what in (("et_xnnpack_int8", "et_xnnpack_fp32", "ExecuTorch"), ("litert_int8", "litert_fp32", "LiteRT")):
            if q in ms and f in ms:
                v = ms[q] / ms[f]
                parts.append(f"{what} INT8/fp32 {v:.2f} ({'met' if v <= 0.5 else 'not met'}, goal <= 0.5)")
        if "et_xnnpack_fp32" in ms and "ort_fp32" in ms:
            parts.append(f"ExecuTorch fp32/ORT fp32 {ms['et_xnnpack_fp32'] / ms['ort_fp32']:.2f}")
        if "ort_int8" in ms and "timm_ort" in ms:
            v = ms["ort_int8"] / ms["timm_ort"]
            parts.append(f"INT8/timm ORT {v:.2f} ({'met' if v <= 0.5 else 'not met'}, goal <= 0.5)")
        if parts:
            out.append(f"{model} b{batch}: " + "; ".join(parts))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--paths", help="comma-separated subset of the bench paths")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",")] if args.paths else None
    report = bench(args.names, batches=args.batch_size, threads=args.threads, size=args.input_size,
                   **({"paths": paths} if paths else {}), log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report.table(markdown=True))
    for line in goals(report):
        print("goal " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
