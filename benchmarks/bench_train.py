"""Training throughput (images/s) of a mobilenets model vs timm's same architecture.

Same batch (32), resolution (224), optimizer (AdamW, our param groups), loss and threads (2);
random data, so only the forward/backward/step cost is measured.

    python benchmarks/bench_train.py [--model mobilenetv4_conv_small] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def throughput(model: torch.nn.Module, batch: int, size: int, steps: int, warmup: int = 3) -> float:
    from mobilenets.train import param_groups
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            t = time.perf_counter()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    import timm

    import mobilenets
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv4_conv_small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ours = mobilenets.create_model(a.model)
    ref_name = mobilenets.get_entry(a.model).reference.get("timm", a.model)
    ref = timm.create_model(ref_name, pretrained=False)
    r_ours = throughput(ours, a.batch, a.size, a.steps)
    r_timm = throughput(ref, a.batch, a.size, a.steps)
    print(f"{a.model} train, batch {a.batch}, {a.size}px, {a.threads} threads, AdamW")
    print(f"  mobilenets: {r_ours:8.1f} img/s")
    print(f"  timm {ref_name}: {r_timm:8.1f} img/s")
    print(f"  ratio mobilenets / timm: {r_ours / r_timm:.2f}")


if __name__ == "__main__":
    main()
