"""The training loop: single process or distributed (``torchrun``, DDP), exact resume,
atomic checkpoints, signal handling, NaN guard, metrics CSV/JSON and a curves plot.

Determinism: every epoch re-seeds torch / python / numpy from (seed, epoch, rank) and shuffles
with a generator seeded by (seed, epoch), so resuming from an end-of-epoch checkpoint gives the
same metrics as an uninterrupted run. A run stopped mid-epoch (SIGINT/SIGTERM) also saves the
batch position, the running sums and every rank's RNG state, and continues from that batch
(exact with ``workers=0``; with worker processes the augmentation draws of the rest of that one
epoch differ).

:func:`train` drives a :class:`_Run` through its phases: ``setup`` (data, model, optimizer),
``resume`` (a checkpoint's state), ``prepare`` (DDP, loss, loaders), then ``epoch`` after
``epoch`` (each made of ``step`` calls) and ``finalize``. Processes and seeds live in
:mod:`.distributed`, validation in :mod:`.evaluate`, progress and metrics files in
:mod:`.reporting`; their public names are re-exported here.

Why one module: the phases of one run read and write one state (``_Run``: step, epoch, best,
history, the model, EMA, optimizer, loaders); split by phase, each part would pass that state
around, and the tests patch the run's writers (``write_metrics``, ``save_checkpoint``) here.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..extras import require
from ..layers.bn_stats import set_bn
from ..models.info import model_info, set_model_info, trained_info
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from ..data import DataBundle
from .distributed import (DistInfo, all_reduce_sum, epoch_order, epoch_seed, seed_everything,  # noqa: F401
                          is_peer_failure, setup_distributed)
from .ema import ModelEma, average_state_dicts
from .optim import LRSchedule, create_optimizer
from .recipe import Recipe
from .task import get_task
from .reporting import plot_curves, progress_bar, write_metrics  # called through this module: tests patch them

__all__ = ["DistInfo", "TrainResult", "TrainingError", "plot_curves", "setup_distributed", "train",
           "write_metrics"]


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, bad resume checkpoint)."""



def _best_record(saved, default: dict) -> dict:
    """The best-so-far record of a checkpoint: ``{"metric", "value", "epoch"}`` (checkpoints
    written before the record named its metric kept ``{"top1": value or -1, "epoch"}``)."""
    if not isinstance(saved, dict):
        return dict(default)
    if "value" in saved:
        return dict(saved)
    old = [v for k, v in saved.items() if k != "epoch"]
    value = old[0] if old and old[0] is not None and old[0] >= 0 else None
    return {"metric": default["metric"], "value": value, "epoch": saved.get("epoch", -1)}


# --- the run ---------------------------------------------------------------------------------
@dataclass
class TrainResult:
    exit_code: int                       # 0 done, 1 non-finite loss, 128 + signal when interrupted
    out_dir: Path
    history: list[dict]
    best: float = float("nan")           # the best validation value of ``best_metric``
    best_epoch: int = -1
    best_metric: str = ""                # the task's metric that picks best.pt (top1, map, miou)
    final: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    message: str = ""
    files: dict = field(default_factory=dict)
    model: Optional[nn.Module] = None     # the raw trained model (this rank's replica)
    ema: Optional[nn.Module] = None

    @property
    def best_top1(self) -> float:
        """The best validation top-1 (%) of a classification run (NaN for other tasks)."""
        return self.best if self.best_metric == "top1" else float("nan")


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
            seed: Optional[int] = None, device: Optional[torch.device] = None,
            collate_fn: Optional[Callable] = None) -> DataLoader:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(ds, batch_size=batch_size or recipe.batch_size, sampler=indices, shuffle=False,
                      num_workers=recipe.workers, drop_last=drop_last, generator=g, collate_fn=collate_fn,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=False)


class _Run:
    """One training run: its state, and one method per phase (see the module notes)."""

    def __init__(self, recipe: Recipe, out: Path, resume: Optional[str | Path], progress: bool,
                 log: Callable[[str], None], task=None):
        self.recipe, self.out, self.resume_path, self.progress = recipe, out, resume, progress
        self.task = task if task is not None else get_task(recipe.task)
        self.dist = setup_distributed(recipe)
        self.say = log if self.dist.main else (lambda s: None)
        self.ck = load_checkpoint(resume) if resume else None
        self.step, self.start_epoch, self.skip_batches, self.partial = 0, 0, 0, None
        self.history: list[dict] = []
        self.best = {"metric": self.task.best_metric.name, "value": None, "epoch": -1}
        self.rng_states = None
        self.files = {"best": out / "best.pt", "last": out / "last.pt"}
        self.check_resume()

    # --- setup ---------------------------------------------------------------------------
    def setup(self, data: Optional[DataBundle]) -> None:
        """Data, teacher, model, optimizer, EMA, schedule; ``ValueError`` for bad data first."""
        r, dist = self.recipe, self.dist
        seed_everything(r.seed)
        task = self.task
        for module, feature in task.requires:
            require(module, feature)
        self.data = data = data or task.build_data(r)
        task.check_data(data, r)
        if len(data.val) == 0:
            raise ValueError(f"{r.dataset}: the validation set is empty")
        if data.skipped:
            self.say(f"skipped {data.skipped} unreadable image(s)")
        self.C = data.num_classes
        self.teacher = None
        if r.teacher:
            from .distill import load_teacher
            self.teacher = load_teacher(r.teacher, self.C, r.teacher_weights, dist.device)

        model = task.build_model(r, self.C)
        # the trained model is described by its recipe's preprocessing (saved in every checkpoint)
        self.info = trained_info(model_info(model), recipe=r.to_dict())
        set_model_info(model, self.info)
        if r.bn_momentum is not None:
            set_bn(model, momentum=r.bn_momentum)
        if r.pretrained and self.ck is None:
            self.say(task.load_pretrained(model, r.pretrained))
        if r.qat:   # the trained fp32 model, fake-quantized as r.qat's runtime will run it
            model = task.qat_model(model, r)
            self.say(f"quantization-aware training for {r.qat}: BatchNorms folded, INT8 fake quantization")
        model.to(dist.device)
        if r.channels_last:
            model.to(memory_format=torch.channels_last)
        self.raw = self.model = model
        self.opt = create_optimizer(model, r)
        self.ema = ModelEma(model, r.ema_decay, r.ema_warmup) if r.ema_decay > 0 else None

        self.n_train = len(data.train)
        per_rank = math.ceil(self.n_train / dist.world)
        self.spe = per_rank // r.batch_size
        if self.spe < 1:
            raise ValueError(f"batch_size {r.batch_size} is larger than the {per_rank} training images "
                             f"per process; lower --batch-size")
        self.sched = LRSchedule(r, self.spe)
        slowest = min((m.momentum for m in model.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum), default=None)
        if slowest is not None and 1 / slowest > 2 * self.spe:
            self.say(f"note: BatchNorm momentum {slowest:g} averages running statistics over ~{1 / slowest:.0f} "
                     f"steps, more than 2 epochs of {self.spe} steps here: the eval-mode model lags its weights "
                     f"(validation can stay near chance); --set bn_momentum=0.1 keeps the statistics current")

    def check_resume(self) -> None:
        """Refuse a resume that cannot continue the checkpoint, or that would overwrite a run that
        went further (before anything is built or written): a finished run asked for no more
        epochs, or ``best.pt`` resumed into its own folder, whose ``last.pt`` and metrics record
        later epochs."""
        ck, r, src = self.ck, self.recipe, self.resume_path
        if ck is None:
            return
        done, mid, step = int(ck.get("epoch", 0)), int(ck.get("batch_in_epoch", 0)), int(ck.get("step", 0))
        if done >= r.epochs and not mid:
            raise TrainingError(f"{src}: the checkpoint has finished {done} epoch(s) and the run is set to "
                                f"{r.epochs}: nothing left to train. To train further, ask for more epochs "
                                f"(--epochs N with N > {done}); nothing was written")
        later = []
        last = self.files["last"]
        if last.is_file() and last.resolve() != Path(src).resolve():
            lk = load_checkpoint(last)
            if int(lk.get("step", 0)) > step:
                later.append(f"{last} is at epoch {lk.get('epoch')} (step {lk.get('step')})")
        metrics = self.out / "metrics.json"
        if metrics.is_file():
            import json
            try:
                recorded = len(json.loads(metrics.read_text()).get("history", []))
            except (ValueError, AttributeError):
                recorded = 0
            if recorded > done:
                later.append(f"{metrics} records {recorded} epochs")
        if later:
            raise TrainingError(
                f"{src} is at epoch {done} (step {step}), but {self.out} holds a run that went further: "
                f"{'; '.join(later)}. Resuming here would overwrite its last.pt, metrics and curves. To continue "
                f"that run resume from {last}; to branch from epoch {done}, pass a new output folder "
                f"(--out DIR); nothing was written")

    def resume(self) -> None:
        """Load the checkpoint's model, optimizer, EMA, position, history and RNG states."""
        ck = self.ck
        if ck is None:
            return
        try:
            self.raw.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
            if self.ema is not None and ck.get("ema"):
                self.ema.load_state_dict(ck["ema"])
            self.step, self.start_epoch = int(ck["step"]), int(ck["epoch"])
            self.skip_batches = int(ck.get("batch_in_epoch", 0))
            self.partial = ck.get("partial")
            self.history = list(ck.get("history", []))
            self.best = _best_record(ck.get("best"), self.best)
            self.rng_states = ck.get("rng")
        except (KeyError, RuntimeError, ValueError) as e:
            raise TrainingError(f"{self.resume_path}: cannot resume from this checkpoint "
                                f"({str(e).splitlines()[0]})") from None
        self.say(f"resuming from {self.resume_path}: epoch {self.start_epoch + 1}, batch {self.skip_batches}, "
                 f"step {self.step}")

    def prepare(self) -> None:
        """DDP wrapper, loss, MixUp / CutMix, mixed precision, the validation loader."""
        r, dist = self.recipe, self.dist
        if dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        self.task.prepare(r, self.C, self.teacher)
        self.use_amp = r.amp and dist.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.val_loader = _loader(_shard(self.data.val, dist), r, batch_size=self.task.val_batch_size(r),
                                  device=dist.device, collate_fn=self.task.collate_fn)

    def close(self) -> None:
        if self.dist.initialized_here:
            torch.distributed.destroy_process_group()

    # --- helpers -------------------------------------------------------------------------
    def checkpoint(self, epoch: int, batch_in_epoch: int, part, rng) -> dict:
        ema, raw = self.ema, self.raw
        deploy = ema.module.state_dict() if ema is not None else raw.state_dict()
        return {"state_dict": deploy, "model": raw.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": self.opt.state_dict(), "step": self.step, "epoch": epoch,
                "batch_in_epoch": batch_in_epoch, "partial": part, "rng": rng,
                "recipe": self.recipe.to_dict(), "classes": list(self.data.classes), "history": self.history,
                "best": self.best, "world_size": self.dist.world, "model_info": self.info.to_dict(),
                "mobilenets_meta": {"format": "mobilenets", "arch": self.recipe.model}}

    def save_mid_epoch(self, epoch: int, batch_idx: int, sums: torch.Tensor) -> None:
        """``last.pt`` after ``batch_idx`` batches of ``epoch``: position, running sums and every
        rank's RNG state, so a resume continues exactly (the loader order is a function of the
        seed and epoch)."""
        rng = self.gather_rng()
        if self.dist.main:
            save_checkpoint(self.checkpoint(epoch, batch_idx, sums.tolist(), rng), self.files["last"])

    def gather_rng(self) -> list:
        st = get_rng_state()
        if not self.dist.enabled:
            return [st]
        objs: list = [None] * self.dist.world
        torch.distributed.all_gather_object(objs, st)
        return objs

    def summary(self) -> dict:
        r = self.recipe
        return {"model": r.model, "dataset": r.dataset, "recipe": r.to_dict(),
                "classes": list(self.data.classes), "task": r.task, "best_metric": self.best["metric"],
                "best_value": self.best["value"], "best_epoch": self.best["epoch"], "world_size": self.dist.world,
                "elapsed_s": round(time.time() - self.t_start, 2)}

    def stop_with(self, code: int, msg: str) -> bool:
        self.say(msg)
        self.result.exit_code, self.result.message = code, msg
        return True

    # --- the run -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        r, dist = self.recipe, self.dist
        if dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.say(f"training {r.model} on {r.dataset} ({self.n_train} train / {len(self.data.val)} val images, "
                     f"{self.C} classes) for {r.epochs} epochs at {r.img_size}px, {dist.world} process(es) on "
                     f"{dist.device}" + (f" ({torch.distributed.get_backend()})" if dist.enabled else "")
                     + (f", mixed precision {str(self.amp_dtype).replace('torch.', '')}" if self.use_amp else "")
                     + (", channels_last" if r.channels_last else "") + f"; output: {self.out}")
        self.stop = _StopFlag()
        self.stop.install()
        self.t_start = time.time()
        self.result = TrainResult(0, self.out, self.history)
        try:
            for epoch in range(self.start_epoch, r.epochs):
                if self.epoch(epoch):
                    return self.result
            self.finalize()
            return self.result
        except RuntimeError as e:
            if not (dist.enabled and is_peer_failure(e)):
                raise
            last = self.files["last"]
            raise TrainingError(
                f"rank {dist.rank} of {dist.world}: another rank died or stopped responding "
                f"({str(e).splitlines()[0][:200]}); torchrun's summary names the failed rank. The last "
                f"complete checkpoint is {last if last.exists() else 'not written yet'}: restart with "
                f"--resume {last}") from None
        finally:
            self.stop.restore()
            res = self.result
            res.history, res.best_epoch, res.best_metric = self.history, self.best["epoch"], self.best["metric"]
            res.best = float("nan") if self.best["value"] is None else self.best["value"]
            res.elapsed_s = time.time() - self.t_start
            res.files = {k: v for k, v in self.files.items() if Path(v).exists()} if dist.main else {}
            res.model, res.ema = self.raw, (self.ema.module if self.ema is not None else None)
            self.close()

    def step_batch(self, x, y) -> tuple[torch.Tensor, float, int, torch.Tensor, float]:
        """One optimizer step, unless a rank saw a non-finite loss. Returns ``(loss, correct, n,
        flags, lr)``; ``flags``: [any rank non-finite, any rank signalled], summed over ranks."""
        r, dist, opt = self.recipe, self.dist, self.opt
        lr = self.sched(self.step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = self.task.to_device(x, y, dist.device, r.channels_last)
        with torch.autocast(dist.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss, correct, n = self.task.loss(self.model, x, y)
        flags = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0, float(self.stop.signum > 0)])
        all_reduce_sum(flags, dist)
        if flags[0] > 0:
            return loss, correct, n, flags, lr
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if r.clip_grad > 0:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.raw.parameters(), r.clip_grad)
        self.scaler.step(opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.raw)
        self.step += 1
        return loss, correct, n, flags, lr

    def epoch(self, epoch: int) -> bool:
        """Train one epoch, validate, checkpoint, log. ``True``: the run stops (``self.result``
        says why)."""
        r, dist, files = self.recipe, self.dist, self.files
        resumed_mid = self.skip_batches > 0 and epoch == self.start_epoch
        if resumed_mid and self.rng_states and len(self.rng_states) == dist.world:
            set_rng_state(self.rng_states[dist.rank])
        else:
            seed_everything(epoch_seed(r.seed, epoch, dist.rank))
        order = epoch_order(self.n_train, r.seed, epoch, dist)[: self.spe * r.batch_size]
        first = self.skip_batches if resumed_mid else 0
        order = order[first * r.batch_size:]
        loader = _loader(self.data.train, r, indices=order, drop_last=True,
                         seed=epoch_seed(r.seed, epoch, dist.rank), device=dist.device,
                         collate_fn=self.task.collate_fn)
        sums = torch.zeros(3, dtype=torch.float64)  # loss*n, correct, n
        if resumed_mid and self.partial is not None:
            sums += torch.as_tensor(self.partial, dtype=torch.float64)
        self.model.train()
        bar = progress_bar(self.spe, f"epoch {epoch + 1}/{r.epochs}", self.progress and dist.main)
        if bar is not None and first:
            bar.update(first)
        t_epoch, seen = time.time(), 0
        batch_idx = first
        for x, y in loader:
            loss, correct, n, flags, lr = self.step_batch(x, y)
            if flags[0] > 0:
                return self.stop_with(1, f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch "
                                         f"{batch_idx + 1} (step {self.step}); stopping. The last good checkpoint "
                                         f"is kept: {files['last'] if files['last'].exists() else 'none written yet'}")
            batch_idx += 1
            seen += n
            sums += torch.tensor([loss.item() * n, correct, n], dtype=torch.float64)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {sums[0].item() / max(1, sums[2].item()):.3f} lr {lr:.2e}")
            if flags[1] > 0:
                sig = self.stop.signum or signal.SIGTERM
                self.save_mid_epoch(epoch, batch_idx, sums)
                return self.stop_with(128 + int(sig), f"{signal.Signals(sig).name} received: saved {files['last']} "
                                                      f"at epoch {epoch + 1}, batch {batch_idx}; continue with "
                                                      f"--resume {files['last']}")
            if r.ckpt_every_steps and self.step % r.ckpt_every_steps == 0 and batch_idx < self.spe:
                # a kill -9 loses at most ckpt_every_steps steps (the epoch's end writes anyway)
                self.save_mid_epoch(epoch, batch_idx, sums)
        if bar is not None:
            bar.close()
        row = self.end_of_epoch(epoch, sums, seen, t_epoch)
        self.save_epoch(epoch, row)
        if self.stop.signum:
            return self.stop_with(128 + int(self.stop.signum),
                                  f"{signal.Signals(self.stop.signum).name} received: saved {files['last']} after "
                                  f"epoch {epoch + 1}; continue with --resume {files['last']}")
        return False

    def end_of_epoch(self, epoch: int, sums: torch.Tensor, seen: int, t_epoch: float) -> dict:
        """Sum the epoch over ranks, sync BatchNorm statistics, validate: the history row."""
        r, dist, ema, raw = self.recipe, self.dist, self.ema, self.raw
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
        row = {"epoch": epoch + 1, "lr": self.sched(max(0, self.step - 1)),
               **self.task.train_stats(sums[0].item(), sums[1].item(), sums[2].item())}
        if (epoch + 1) % r.eval_every == 0 or epoch + 1 == r.epochs:
            v = self.task.evaluate(raw, self.val_loader, dist.device, self.C, dist, r.channels_last)
            row.update({f"val_{k}": x for k, x in v.items()})
            if ema is not None:
                e = self.task.evaluate(ema.module, self.val_loader, dist.device, self.C, dist, r.channels_last)
                row.update({f"ema_val_{k}": x for k, x in e.items() if k != "n"})
        row.update(epoch_time_s=round(time.time() - t_epoch, 3),
                   train_img_per_s=round(seen_t.item() / max(1e-9, train_time), 1))
        return row

    def save_epoch(self, epoch: int, row: dict) -> None:
        """Record the row, keep the best, write checkpoints and metrics, log the epoch."""
        r, out = self.recipe, self.out
        self.history.append(row)
        m = self.task.best_metric
        value = row.get(f"ema_val_{m.name}" if self.ema is not None else f"val_{m.name}")
        is_best = m.better(value, self.best["value"])
        if is_best:
            self.best = {"metric": m.name, "value": value, "epoch": epoch + 1}
        self.skip_batches, self.partial = 0, None
        if not self.dist.main:
            return
        ck_obj = self.checkpoint(epoch + 1, 0, None, None)
        save_checkpoint(ck_obj, self.files["last"])
        if is_best:
            save_checkpoint(ck_obj, self.files["best"])
        if r.avg_last_k > 1:
            save_checkpoint({"state_dict": self.raw.state_dict()}, out / f"epoch_{epoch + 1:04d}.pt")
            old = out / f"epoch_{epoch + 1 - r.avg_last_k:04d}.pt"
            if old.exists():
                old.unlink()
        write_metrics(self.history, out, self.summary())
        task = self.task
        val = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
        ema = {k[8:]: v for k, v in row.items() if k.startswith("ema_val_")}
        self.say(f"epoch {epoch + 1}/{r.epochs}: train loss {row['train_loss']:.4f}"
                 + task.describe_train(row)
                 + (f" | {task.describe(val)}" if m.name in val else "")
                 + (f" | EMA {m.name} {m.format(ema[m.name])}" if m.name in ema else "")
                 + f" | {row['epoch_time_s']:.1f}s, {row['train_img_per_s']:.0f} img/s")

    def finalize(self) -> None:
        """Average the last checkpoints (``avg_last_k``), write the final metrics and curves."""
        r, dist, out, files = self.recipe, self.dist, self.out, self.files
        final = dict(self.history[-1]) if self.history else {}
        if r.avg_last_k > 1:
            paths = sorted(out.glob("epoch_*.pt"))[-r.avg_last_k:]
            if dist.enabled:
                torch.distributed.barrier()
            if len(paths) > 1:
                avg = average_state_dicts([load_checkpoint(p)["state_dict"] for p in paths])
                avg_model = self.task.build_model(r, self.C).to(dist.device)
                avg_model.load_state_dict(avg)
                a = self.task.evaluate(avg_model, self.val_loader, dist.device, self.C, dist, r.channels_last)
                final.update({f"avg_val_{k}": v for k, v in a.items() if k not in ("loss", "n")}, avg_of=len(paths))
                if dist.main:
                    from ..weights import save_weights
                    set_model_info(avg_model, self.info)
                    files["averaged"] = save_weights(avg_model, out / "averaged.pth")
                    self.say(f"average of the last {len(paths)} epochs: {self.task.describe(a)}")
        self.result.final = final
        if dist.main:
            s = self.summary()
            s["final"] = final
            files["metrics_csv"], files["metrics_json"] = write_metrics(self.history, out, s)
            png = plot_curves(self.history, out / "curves.png",
                              {"model": r.model, "dataset": r.dataset, "out": str(out), "task": r.task,
                               "label_smoothing": r.label_smoothing})
            if png is not None:
                files["curves"] = png


def train(recipe: Recipe, out_dir: str | Path, resume: Optional[str | Path] = None,
          progress: bool = True, log: Callable[[str], None] = print,
          data: Optional[DataBundle] = None, task=None) -> TrainResult:
    """Train ``recipe`` into ``out_dir`` (``best.pt``, ``last.pt``, ``metrics.csv/json``,
    ``curves.png``). ``resume``: a ``last.pt`` to continue from (its recipe is used; pass a
    recipe with more epochs to extend). ``task``: the :class:`~mobilenets.tasks.base.Task`
    object to train (default: the registered task of ``recipe.task``). Returns a
    :class:`TrainResult`; raises ``ValueError`` subclasses for bad data or teacher before any
    training step.
    """
    recipe.validate()
    run = _Run(recipe, Path(out_dir), resume, progress, log, task)
    try:
        run.setup(data)
        run.resume()
        run.prepare()
    except BaseException:
        run.close()
        raise
    return run.run()
