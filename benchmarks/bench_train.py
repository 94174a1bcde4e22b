"""Training throughput (images/s) of a mobilenets model vs timm's same architecture.

Same batch (32), resolution (224), optimizer (AdamW, our param groups), loss and threads (2);
random data, so only the forward/backward/step cost is measured. The two models are timed in
alternating rounds (ours, timm, ours, ...) and the median round is reported, so drift in machine
speed hits both alike.

    python benchmarks/bench_train.py [--models mobilenetv4_conv_small ...] [--steps 10] [--rounds 3]
    python benchmarks/bench_train.py --device cuda --amp --channels-last --batch 256
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F


def make_step(model: torch.nn.Module, batch: int, size: int, device: str, amp: bool, channels_last: bool):
    from mobilenets.train import param_groups

    model.to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    ctx = (lambda: torch.autocast("cuda", dtype=dtype)) if amp and device == "cuda" else contextlib.nullcontext

    def step():
        with ctx():
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(step, steps: int, device: str) -> float:
    """Seconds for ``steps`` steps (synchronised on a GPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    import timm

    import mobilenets
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv4_conv_small"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per model")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported) on cuda")
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    where = (torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {a.threads} threads")
    print(f"training throughput, batch {a.batch}, {a.size}px, AdamW, {where}"
          f"{', AMP' if a.amp else ''}{', channels_last' if a.channels_last else ''}")
    print("| model | ours img/s | timm img/s | ratio ours/timm |\n|---|---:|---:|---:|")
    for name in a.models:
        torch.manual_seed(0)
        ours = mobilenets.create_model(name)
        ref = timm.create_model(mobilenets.get_entry(name).reference.get("timm", name), pretrained=False)
        steps = {k: make_step(m, a.batch, a.size, a.device, a.amp, a.channels_last)
                 for k, m in (("ours", ours), ("timm", ref))}
        for s in steps.values():
            timed(s, a.warmup, a.device)
        rates: dict[str, list[float]] = {"ours": [], "timm": []}
        for r in range(a.rounds):
            for k in (("ours", "timm") if r % 2 == 0 else ("timm", "ours")):
                rates[k].append(a.batch * a.steps / timed(steps[k], a.steps, a.device))
        o, t = statistics.median(rates["ours"]), statistics.median(rates["timm"])
        print(f"| {name} | {o:.1f} | {t:.1f} | {o / t:.3f} |", flush=True)
        del ours, ref, steps


if __name__ == "__main__":
    main()
