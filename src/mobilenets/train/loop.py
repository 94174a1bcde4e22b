"""The training loop: single process or distributed (``torchrun``, DDP), exact resume,
atomic checkpoints, signal handling, NaN guard, metrics CSV/JSON and a curves plot.

Determinism: every epoch re-seeds torch / python / numpy from (seed, epoch, rank) and shuffles
with a generator seeded by (seed, epoch), so resuming from an end-of-epoch checkpoint gives the
same metrics as an uninterrupted run. A run stopped mid-epoch (SIGINT/SIGTERM) also saves the
batch position, the running sums and every rank's RNG state, and continues from that batch
(exact with ``workers=0``; with worker processes the augmentation draws of the rest of that one
epoch differ).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .data import DataBundle, batch_mixer, build_datasets
from .recipe import LRSchedule, ModelEma, Recipe, average_state_dicts, create_optimizer


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, bad resume checkpoint)."""


# --- distributed ---------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(recipe: Recipe) -> DistInfo:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and join the
    process group: NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available())
    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no GPU is available")
    device = torch.device("cuda", local % max(1, torch.cuda.device_count())) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    info = DistInfo(rank, world, local, device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
        info.initialized_here = True
    return info


def all_reduce_sum(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.enabled:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def seed_everything(seed: int) -> None:
    import numpy as np

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + 1) % (2**63 - 1)


def epoch_order(n: int, seed: int, epoch: int, dist: DistInfo) -> list[int]:
    """This rank's sample order for an epoch (DistributedSampler's rule: shuffle with a
    generator seeded by seed + epoch, pad to a multiple of the world size, take every
    world-th index)."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / dist.world) * dist.world
    order += order[: total - n]
    return order[dist.rank:total:dist.world]


# --- progress ------------------------------------------------------------------------------------
class _Printer:
    """Fallback progress: a line at every quarter of the epoch."""

    def __init__(self, total: int, desc: str, stream=sys.stderr):
        self.total, self.desc, self.n, self.stream = total, desc, 0, stream
        self.marks = {max(1, round(total * q / 4)) for q in (1, 2, 3, 4)}
        self.post = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n in self.marks:
            print(f"{self.desc} {self.n}/{self.total} {self.post}", file=self.stream, flush=True)

    def set_postfix_str(self, s: str) -> None:
        self.post = s

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
    except ImportError:
        return _Printer(total, desc)


# --- loss, evaluation ----------------------------------------------------------------------------
def build_criterion(recipe: Recipe, teacher: Optional[nn.Module]) -> Callable:
    """``criterion(logits, images, targets) -> loss``; targets are class indices or soft
    (MixUp/CutMix) probabilities; label smoothing applies to both."""
    def hard(logits, targets):
        return F.cross_entropy(logits.float(), targets, label_smoothing=recipe.label_smoothing)

    if teacher is None:
        return lambda logits, images, targets: hard(logits, targets)
    from .distill import Distiller
    return Distiller(teacher, hard, recipe.distill_alpha, recipe.distill_temp)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int,
             dist: Optional[DistInfo] = None, channels_last: bool = False,
             confusion: bool = False) -> dict:
    """Loss (plain cross-entropy), top-1 and top-5 (%), summed over all ranks."""
    dist = dist or DistInfo()
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1, top5, n
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64) if confusion else None
    k = min(5, num_classes)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        sums[1] += (top[:, 0] == y).sum().item()
        sums[2] += (top == y[:, None]).any(dim=1).sum().item()
        sums[3] += len(y)
        if cm is not None:
            cm += torch.bincount((y * num_classes + top[:, 0]).cpu(), minlength=num_classes ** 2).view(
                num_classes, num_classes)
    all_reduce_sum(sums, dist)
    if cm is not None:
        all_reduce_sum(cm, dist)
    n = max(1.0, sums[3].item())
    out = {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n, "top5": 100 * sums[2].item() / n,
           "n": int(sums[3].item())}
    if cm is not None:
        out["confusion"] = cm
    return out


# --- outputs -------------------------------------------------------------------------------------
def write_metrics(history: list[dict], out_dir: Path, summary: dict) -> tuple[Path, Path]:
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    csv_path, json_path = out_dir / "metrics.csv", out_dir / "metrics.json"
    from ..weights.io import atomic_write

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for h in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items()})

    atomic_write(csv_path, write_csv)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps({**summary, "history": history}, indent=2)))
    return csv_path, json_path


def plot_curves(history: list[dict], path: Path) -> Optional[Path]:
    """Loss and accuracy per epoch; ``None`` if matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [h["train_top1"] for h in history], label="train top-1")
    b.plot(ep, [h["val_top1"] for h in history], label="val top-1")
    if "ema_val_top1" in history[0]:
        b.plot(ep, [h["ema_val_top1"] for h in history], label="EMA val top-1")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    from ..weights.io import atomic_write
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


# --- the run -------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    exit_code: int                       # 0 done, 1 non-finite loss, 128 + signal when interrupted
    out_dir: Path
    history: list[dict]
    best_top1: float = float("nan")
    best_epoch: int = -1
    final: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    message: str = ""
    files: dict = field(default_factory=dict)
    model: Optional[nn.Module] = None     # the raw trained model (this rank's replica)
    ema: Optional[nn.Module] = None


class _StopFlag:
    def __init__(self):
        self.signum = 0
        self._old: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum:  # second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _shard(ds: Dataset, dist: DistInfo) -> Dataset:
    if not dist.enabled:
        return ds
    return torch.utils.data.Subset(ds, list(range(dist.rank, len(ds), dist.world)))


def _loader(ds: Dataset, recipe: Recipe, indices=None, batch_size=None, drop_last=False,
            seed: Optional[int] = None, device: Optional[torch.device] = None) -> DataLoader:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(ds, batch_size=batch_size or recipe.batch_size, sampler=indices, shuffle=False,
                      num_workers=recipe.workers, drop_last=drop_last, generator=g,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=False)


def train(recipe: Recipe, out_dir: str | Path, resume: Optional[str | Path] = None,
          progress: bool = True, log: Callable[[str], None] = print,
          data: Optional[DataBundle] = None) -> TrainResult:
    """Train ``recipe`` into ``out_dir`` (``best.pt``, ``last.pt``, ``metrics.csv/json``,
    ``curves.png``). ``resume``: a ``last.pt`` to continue from (its recipe is used; pass a
    recipe with more epochs to extend). Returns a :class:`TrainResult`; raises ``ValueError``
    subclasses for bad data or teacher before any training step.
    """
    recipe.validate()
    out = Path(out_dir)
    dist = setup_distributed(recipe)
    say = log if dist.main else (lambda s: None)
    ck = load_checkpoint(resume) if resume else None
    try:
        seed_everything(recipe.seed)
        data = data or build_datasets(recipe)
        from .data import check_classes
        check_classes(data.train.targets, data.num_classes, f"{recipe.dataset} training set")
        if len(data.val) == 0:
            raise ValueError(f"{recipe.dataset}: the validation set is empty")
        if data.skipped:
            say(f"skipped {data.skipped} unreadable image(s)")
        C = data.num_classes
        teacher = None
        if recipe.teacher:
            from .distill import load_teacher
            teacher = load_teacher(recipe.teacher, C, recipe.teacher_weights, dist.device)

        import mobilenets
        kw: dict[str, Any] = {"drop_path_rate": recipe.drop_path_rate}
        if recipe.drop_rate is not None:
            kw["drop_rate"] = recipe.drop_rate
        model = mobilenets.create_model(recipe.model, num_classes=C, **kw)
        if recipe.pretrained and ck is None:
            rep = mobilenets.load_weights(model, recipe.pretrained, strict=False)
            say(f"loaded {rep.loaded} tensors from {recipe.pretrained} ({rep.layout} layout; "
                f"{len(rep.missing)} missing, {len(rep.mismatched)} mis-shaped)")
        model.to(dist.device)
        if recipe.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = create_optimizer(model, recipe)
        ema = ModelEma(model, recipe.ema_decay, recipe.ema_warmup) if recipe.ema_decay > 0 else None

        n_train = len(data.train)
        per_rank = math.ceil(n_train / dist.world)
        spe = per_rank // recipe.batch_size
        if spe < 1:
            raise ValueError(f"batch_size {recipe.batch_size} is larger than the {per_rank} training images "
                             f"per process; lower --batch-size")
        sched = LRSchedule(recipe, spe)

        step, start_epoch, skip_batches, partial = 0, 0, 0, None
        history: list[dict] = []
        best = {"top1": -1.0, "epoch": -1}
        rng_states = None
        if ck is not None:
            try:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                if ema is not None and ck.get("ema"):
                    ema.load_state_dict(ck["ema"])
                step, start_epoch = int(ck["step"]), int(ck["epoch"])
                skip_batches = int(ck.get("batch_in_epoch", 0))
                partial = ck.get("partial")
                history = list(ck.get("history", []))
                best = dict(ck.get("best", best))
                rng_states = ck.get("rng")
            except (KeyError, RuntimeError, ValueError) as e:
                raise TrainingError(f"{resume}: cannot resume from this checkpoint ({str(e).splitlines()[0]})") from None
            say(f"resuming from {resume}: epoch {start_epoch + 1}, batch {skip_batches}, step {step}")

        raw = model
        if dist.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        criterion = build_criterion(recipe, teacher)
        mixer = batch_mixer(recipe, C)
        use_amp = recipe.amp and dist.device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        val_loader = _loader(_shard(data.val, dist), recipe, batch_size=max(recipe.batch_size, 128),
                             device=dist.device)
    except BaseException:
        if dist.initialized_here:
            torch.distributed.destroy_process_group()
        raise

    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        say(f"training {recipe.model} on {recipe.dataset} ({n_train} train / {len(data.val)} val images, "
            f"{C} classes) for {recipe.epochs} epochs at {recipe.img_size}px, {dist.world} process(es) on "
            f"{dist.device}" + (f" ({torch.distributed.get_backend()})" if dist.enabled else "")
            + (f", mixed precision {str(amp_dtype).replace('torch.', '')}" if use_amp else "")
            + (", channels_last" if recipe.channels_last else "") + f"; output: {out}")
    files = {"best": out / "best.pt", "last": out / "last.pt"}

    def checkpoint(epoch: int, batch_in_epoch: int, part, rng) -> dict:
        deploy = ema.module.state_dict() if ema is not None else raw.state_dict()
        return {"state_dict": deploy, "model": raw.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
                "batch_in_epoch": batch_in_epoch, "partial": part, "rng": rng,
                "recipe": recipe.to_dict(), "classes": list(data.classes), "history": history,
                "best": best, "world_size": dist.world,
                "mobilenets_meta": {"format": "mobilenets", "arch": recipe.model}}

    def gather_rng() -> list:
        st = get_rng_state()
        if not dist.enabled:
            return [st]
        objs: list = [None] * dist.world
        torch.distributed.all_gather_object(objs, st)
        return objs

    def summary() -> dict:
        return {"model": recipe.model, "dataset": recipe.dataset, "recipe": recipe.to_dict(),
                "classes": list(data.classes), "best_top1": best["top1"], "best_epoch": best["epoch"],
                "world_size": dist.world, "elapsed_s": round(time.time() - t_start, 2)}

    stop = _StopFlag()
    stop.install()
    t_start = time.time()
    result = TrainResult(0, out, history)
    try:
        for epoch in range(start_epoch, recipe.epochs):
            resumed_mid = skip_batches > 0 and epoch == start_epoch
            if resumed_mid and rng_states and len(rng_states) == dist.world:
                set_rng_state(rng_states[dist.rank])
            else:
                seed_everything(epoch_seed(recipe.seed, epoch, dist.rank))
            order = epoch_order(n_train, recipe.seed, epoch, dist)[: spe * recipe.batch_size]
            first = skip_batches if resumed_mid else 0
            order = order[first * recipe.batch_size:]
            loader = _loader(data.train, recipe, indices=order, drop_last=True,
                             seed=epoch_seed(recipe.seed, epoch, dist.rank), device=dist.device)
            sums = torch.zeros(3, dtype=torch.float64)  # loss*n, correct, n
            if resumed_mid and partial is not None:
                sums += torch.as_tensor(partial, dtype=torch.float64)
            model.train()
            bar = _progress(spe, f"epoch {epoch + 1}/{recipe.epochs}", progress and dist.main)
            if bar is not None and first:
                bar.update(first)
            t_epoch, seen = time.time(), 0
            batch_idx = first
            for x, y in loader:
                lr = sched(step)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = x.to(dist.device, non_blocking=True), y.to(dist.device, non_blocking=True)
                if recipe.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                target = y
                if mixer is not None:
                    x, target = mixer(x, y)
                with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = model(x)
                    loss = criterion(logits, x, target)
                flags = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0, float(stop.signum > 0)])
                all_reduce_sum(flags, dist)
                if flags[0] > 0:
                    msg = (f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch {batch_idx + 1} "
                           f"(step {step}); stopping. The last good checkpoint is kept: "
                           f"{files['last'] if files['last'].exists() else 'none written yet'}")
                    say(msg)
                    result.exit_code, result.message = 1, msg
                    return result
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if recipe.clip_grad > 0:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(raw.parameters(), recipe.clip_grad)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update(raw)
                step += 1
                batch_idx += 1
                n = len(y)
                seen += n
                sums += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"loss {sums[0].item() / max(1, sums[2].item()):.3f} lr {lr:.2e}")
                if flags[1] > 0:
                    sig = stop.signum or signal.SIGTERM
                    rng = gather_rng()
                    if dist.main:
                        save_checkpoint(checkpoint(epoch, batch_idx, sums.tolist(), rng), files["last"])
                    name = signal.Signals(sig).name
                    msg = (f"{name} received: saved {files['last']} at epoch {epoch + 1}, batch {batch_idx}; "
                           f"continue with --resume {files['last']}")
                    say(msg)
                    result.exit_code, result.message = 128 + int(sig), msg
                    return result
            if bar is not None:
                bar.close()
            train_time = time.time() - t_epoch
            all_reduce_sum(sums, dist)
            if dist.enabled:
                # DDP keeps parameters in sync, but each rank updates its own BatchNorm running
                # statistics after the last forward: average them so every replica is identical.
                for mod in (raw, ema.module if ema is not None else None):
                    for b in (mod.buffers() if mod is not None else ()):
                        if b.dtype.is_floating_point:
                            all_reduce_sum(b.data, dist).div_(dist.world)
            seen_t = all_reduce_sum(torch.tensor([float(seen)]), dist)
            row = {"epoch": epoch + 1, "lr": sched(max(0, step - 1)),
                   "train_loss": sums[0].item() / max(1.0, sums[2].item()),
                   "train_top1": 100 * sums[1].item() / max(1.0, sums[2].item())}
            if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
                v = evaluate(raw, val_loader, dist.device, C, dist, recipe.channels_last)
                row.update(val_loss=v["loss"], val_top1=v["top1"], val_top5=v["top5"], val_n=v["n"])
                if ema is not None:
                    e = evaluate(ema.module, val_loader, dist.device, C, dist, recipe.channels_last)
                    row.update(ema_val_loss=e["loss"], ema_val_top1=e["top1"], ema_val_top5=e["top5"])
            row.update(epoch_time_s=round(time.time() - t_epoch, 3),
                       train_img_per_s=round(seen_t.item() / max(1e-9, train_time), 1))
            history.append(row)
            metric = row.get("ema_val_top1" if ema is not None else "val_top1")
            is_best = metric is not None and metric > best["top1"]
            if is_best:
                best = {"top1": metric, "epoch": epoch + 1}
            skip_batches, partial = 0, None
            if dist.main:
                ck_obj = checkpoint(epoch + 1, 0, None, None)
                save_checkpoint(ck_obj, files["last"])
                if is_best:
                    save_checkpoint(ck_obj, files["best"])
                if recipe.avg_last_k > 1:
                    save_checkpoint({"state_dict": raw.state_dict()}, out / f"epoch_{epoch + 1:04d}.pt")
                    old = out / f"epoch_{epoch + 1 - recipe.avg_last_k:04d}.pt"
                    if old.exists():
                        old.unlink()
                write_metrics(history, out, summary())
                say(f"epoch {epoch + 1}/{recipe.epochs}: train loss {row['train_loss']:.4f} "
                    f"top-1 {row['train_top1']:.2f}%"
                    + (f" | val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%"
                       if "val_top1" in row else "")
                    + (f" | EMA top-1 {row['ema_val_top1']:.2f}%" if "ema_val_top1" in row else "")
                    + f" | {row['epoch_time_s']:.1f}s, {row['train_img_per_s']:.0f} img/s")
            if stop.signum:
                msg = (f"{signal.Signals(stop.signum).name} received: saved {files['last']} after epoch "
                       f"{epoch + 1}; continue with --resume {files['last']}")
                say(msg)
                result.exit_code, result.message = 128 + int(stop.signum), msg
                return result

        # --- end of training ---
        final = dict(history[-1]) if history else {}
        if recipe.avg_last_k > 1:
            paths = sorted(out.glob("epoch_*.pt"))[-recipe.avg_last_k:]
            if dist.enabled:
                torch.distributed.barrier()
            if len(paths) > 1:
                avg = average_state_dicts([load_checkpoint(p)["state_dict"] for p in paths])
                avg_model = mobilenets.create_model(recipe.model, num_classes=C).to(dist.device)
                avg_model.load_state_dict(avg)
                a = evaluate(avg_model, val_loader, dist.device, C, dist, recipe.channels_last)
                final.update(avg_val_top1=a["top1"], avg_val_top5=a["top5"], avg_of=len(paths))
                if dist.main:
                    from ..weights import save_weights
                    avg_model.name = recipe.model
                    files["averaged"] = save_weights(avg_model, out / "averaged.pth")
                    say(f"average of the last {len(paths)} epochs: val top-1 {a['top1']:.2f}%")
        result.final = final
        if dist.main:
            s = summary()
            s["final"] = final
            files["metrics_csv"], files["metrics_json"] = write_metrics(history, out, s)
            png = plot_curves(history, out / "curves.png")
            if png is not None:
                files["curves"] = png
        return result
    finally:
        stop.restore()
        result.history, result.best_top1, result.best_epoch = history, best["top1"], best["epoch"]
        result.elapsed_s = time.time() - t_start
        result.files = {k: v for k, v in files.items() if Path(v).exists()} if dist.main else {}
        result.model, result.ema = raw, (ema.module if ema is not None else None)
        if dist.initialized_here:
            torch.distributed.destroy_process_group()
