"""Peak memory (RSS) of inference and training, per family, ours beside timm's same model.

    python benchmarks/bench_memory.py [--models NAME ...] [--size 224] [--out benchmarks/MEMORY.md]

Every measurement runs in a fresh process: import only the library being measured, build the
model (ours from the registry; timm's with ``pretrained=False``), reset the kernel's high-water
mark (``/proc/self/clear_refs``), then the workload: inference at batch 1 and 32 (three
``inference_mode`` forward passes), or training at batch 32 (two SGD steps, cross-entropy).
Reported: the peak RSS during the workload (``VmHWM``) in MiB, the part of it the workload added
on top of the process after building the model, and ours / timm for the peak (same run, same
machine). The peak includes the process itself (PyTorch's libraries, the imported packages).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_MODELS = ["mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv4_conv_small",
                  "mobilenetv4_conv_medium", "mobilenetv4_hybrid_medium", "mobileformer_294m"]
WORKLOADS = [("infer", 1), ("infer", 32), ("train", 32)]

CHILD = r"""
import json, sys, torch
lib, name, mode, batch, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(2)
def status_mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
if lib == "ours":
    import mobilenets
    model = mobilenets.create_model(name)
else:
    import timm
    model = timm.create_model(name, pretrained=False)
x = torch.randn(batch, 3, size, size)
base = status_mib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM: the peak from here on is the workload's
if mode == "infer":
    model.eval()
    with torch.inference_mode():
        for _ in range(3):
            model(x)
else:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y = torch.randint(0, 1000, (batch,))
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
peak = status_mib("VmHWM")
print(json.dumps({"peak_mib": round(peak, 1), "added_mib": round(peak - base, 1)}))
"""


def measure(lib: str, name: str, mode: str, batch: int, size: int) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, lib, name, mode, str(batch), str(size)],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{lib} {name} {mode} b{batch}: {p.stderr.strip().splitlines()[-1]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default=str(Path(__file__).parent / "MEMORY.md"))
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the raw numbers here")
    args = ap.parse_args(argv)
    import mobilenets
    try:
        import timm  # noqa: F401
        have_timm = True
    except ImportError:
        have_timm = False
    rows, raw = [], {}
    for name in args.models:
        ref = have_timm and bool(mobilenets.get_entry(name).reference.get("timm"))
        cells = [f"`{name}`", mobilenets.get_entry(name).family]
        for mode, batch in WORKLOADS:
            ours = measure("ours", name, mode, batch, args.size)
            theirs = measure("timm", mobilenets.get_entry(name).reference["timm"], mode, batch,
                             args.size) if ref else None
            raw[f"{name}/{mode}/b{batch}"] = {"ours": ours, "timm": theirs}
            ratio = f" ({ours['peak_mib'] / theirs['peak_mib']:.2f}x timm)" if theirs else ""
            cells.append(f"{ours['peak_mib']:.0f} (+{ours['added_mib']:.0f}){ratio}")
            print(f"{name:28s} {mode} b{batch}: ours {ours}  timm {theirs}", flush=True)
        rows.append(cells)
    head = ["model", "family"] + [f"{m} b{b} peak MiB (+added)" for m, b in WORKLOADS]
    lines = ["# Peak memory (RSS)", "", __doc__.split("\n\n", 2)[2].strip(), "",
             f"Input {args.size}x{args.size}, 2 threads. Regenerate: `python benchmarks/bench_memory.py`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
