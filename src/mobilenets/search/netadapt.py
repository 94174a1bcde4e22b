"""NetAdapt: shrink a trained MobileNet, one layer at a time, until it meets a latency target on
the user's runtime (Yang et al. 2018, https://arxiv.org/abs/1804.03230, Algorithm 1; MobileNetV3,
Howard et al. 2019, https://arxiv.org/abs/1905.02244, Sec. 4.2, ran it after the platform-aware NAS).

Each iteration ``i`` asks for a latency reduction ``dR_i`` that decays (``reduction * L0 *
decay ** i``, clipped so the last step lands on the target). For every prunable layer a proposal
removes just enough filters (in steps of 8, the channel divisor every MobileNet width is rounded
to) for the predicted latency to drop by ``dR_i``; the filters kept are those of largest
magnitude (the L2 norm of the BatchNorm-folded filter, the paper's Sec. 4.1 choice); the proposal
is fine-tuned for a few steps (short-term fine-tune) and scored on a held-out split of the
training data. The proposal that loses the least accuracy per millisecond it saves is kept
(a proposal losing nothing is free; ties go to the more accurate, then the faster); with every
proposal meeting the same budget this is the paper's "highest accuracy". When the predicted
latency meets the target, the whole network is measured in the table's runtime; while the
measured latency misses it, the gap between measured and predicted lowers the predicted target
and shrinking goes on. A long fine-tune ends the run.

Proposals are spec changes (:mod:`.prune`: width groups tied by shortcuts, expansions, the
head's hidden width; the weight transfer), so the result is an ordinary
:class:`~mobilenets.archs.spec.NetSpec`, printable and loadable by ``create_model(spec string)``.
Part latencies come from the :class:`~.latency.LatencyTable`; widths the table lacks (a pruned
width is usually outside the space it was built for) are measured on demand in the table's
runtime and added to it (:meth:`~.latency.LatencyTable.ensure`). The state after every
iteration is written atomically to ``<out>/adapt.pt``: running the same command again resumes.

Why one module: the iteration loop, its fine-tunes, and the state it saves and resumes from are
one run over one state dict; what it prunes and how the weights follow is :mod:`.prune`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..archs.spec import NetSpec
from .latency import LatencyTable, measure_network
from .prune import AdaptError, Layer, Structure, expansion_ratio

#: every width the builder makes is a multiple of this (``make_divisible``'s divisor): cuts step by it
CHANNEL_STEP = 8
STATE = "adapt.pt"


# -- the run --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdaptSettings:
    """What ``mobilenets search adapt`` takes (see its ``--help``). ``reduction``: the first
    iteration's latency cut as a fraction of the starting latency; ``decay``: its factor per
    iteration (NetAdapt's decaying resource-reduction schedule)."""

    table: str
    target_ms: float
    data: str = "digits"
    out: str = "adapt"
    short_steps: int = 50
    long_steps: int = 500
    max_iters: int = 50
    reduction: float = 0.05
    decay: float = 0.96
    batch_size: int = 64
    img_size: Optional[int] = None
    held_out: float = 0.2
    eval_images: int = 1024
    lr: Optional[float] = None
    seed: int = 0
    part_seconds: float = 0.5
    measure_seconds: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.target_ms, (int, float)) and self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise ValueError(f"target_ms must be a positive number of milliseconds, got {self.target_ms!r}")
        for name in ("short_steps", "long_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_iters < 1:
            raise ValueError(f"max_iters must be >= 1, got {self.max_iters}")
        if not 0 < self.reduction < 1:
            raise ValueError(f"reduction must be a fraction in (0, 1) of the starting latency, got {self.reduction}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out must be a fraction in (0, 1), got {self.held_out}")
        if self.batch_size < 1 or self.eval_images < 1:
            raise ValueError(f"batch_size and eval_images must be >= 1, got {self.batch_size}, {self.eval_images}")


#: settings a resumed run may change (they do not change what was already done)
_RESUMABLE = ("max_iters", "long_steps", "part_seconds", "measure_seconds")


@dataclass
class AdaptResult:
    spec: NetSpec
    start_ms: float
    predicted_ms: float
    measured_ms: float
    val_top1: float
    start_val_top1: float
    iterations: int
    history: list
    checkpoint: Path
    out: Path
    notes: list = field(default_factory=list)


def load_source(source: str, weights: Optional[str] = None) -> tuple[nn.Module, Optional[dict], Optional[list]]:
    """``(model, training recipe dict or None, class names or None)`` of what NetAdapt starts
    from: one of our training checkpoints (``best.pt``), or a registry name / spec string with
    ``weights`` (a timm / torchvision / our checkpoint, loaded by ``create_model(pretrained=)``)."""
    from ..factory import create_model, model_from_checkpoint

    if weights is None:
        if not Path(source).is_file():
            raise AdaptError(f"{source!r} is not a checkpoint file; give a training checkpoint (best.pt), or a model "
                             f"name / spec string with --weights FILE")
        model, info = model_from_checkpoint(source)
        return model, info["recipe"] or None, list(info["classes"])
    from ..weights import read_checkpoint

    sd, _ = read_checkpoint(weights)
    # the classifier's outputs in our, timm's and torchvision's layouts (V2: classifier.1, V3: classifier.3)
    fc = [v for k, v in sd.items() if k.endswith(("head.fc.weight", "classifier.weight", "classifier.1.weight",
                                                 "classifier.3.weight")) or k == "fc.weight"]
    model = create_model(source, pretrained=weights, num_classes=int(fc[-1].shape[0]) if fc else None)
    return model, None, None


class _Adapt:
    def __init__(self, s: AdaptSettings, model: nn.Module, recipe: Optional[dict], classes: Optional[list],
                 source: str, progress: bool):
        from ..train.recipe import Recipe
        from .data import classification_splits

        self.s, self.progress, self.source = s, progress, source
        self.out = Path(s.out)
        self.structure = Structure(model)
        self.table = LatencyTable.load(s.table)
        base = Recipe.from_dict(recipe) if recipe else None
        img = s.img_size or (base.img_size if base else None) or 64
        self.train_ds, held, self.val_ds, self.classes, self.recipe, _ = classification_splits(
            s.data, img, s.batch_size, s.seed, s.held_out, s.lr, recipe=base, what="NetAdapt")
        self.notes: list[str] = []
        if model.num_classes != len(self.classes):
            self.notes.append(f"the classifier predicted {model.num_classes} classes, {s.data} has "
                              f"{len(self.classes)}: a new classifier was fine-tuned first ({s.short_steps} steps)")
            model.reset_classifier(len(self.classes))
            self.fresh_head = True
        else:
            self.fresh_head = False
            if classes and list(classes) != list(self.classes):
                self.notes.append(f"the model's classes {list(classes)[:5]}... are not {s.data}'s "
                                  f"{list(self.classes)[:5]}... (same count: kept in {s.data}'s order)")
        self.num_classes = len(self.classes)
        # what shapes the model beyond its spec (drop_path_rate, ...); width_mult is folded into the spec
        self.model_kwargs = {k: v for k, v in ((recipe or {}).get("model_kwargs") or {}).items() if k != "width_mult"}
        self.held = _tensors(held, s.eval_images)
        self.latency_cache: dict[str, float] = {}
        self.source_model = model

    # -- pieces ------------------------------------------------------------------------------
    def build(self, widths: dict[str, int]) -> nn.Module:
        """The model of ``widths``, as ``create_model(spec string)`` builds it (what a saved
        checkpoint of it loads into), its widths checked."""
        from ..factory import create_model

        spec = self.structure.spec_for(widths)
        model = create_model(str(spec), num_classes=self.num_classes, **self.model_kwargs)
        got = self.structure.widths(model)
        want = {**self.structure.widths(self.source_model), **widths}
        if got != want:
            bad = {k: (want[k], got[k]) for k in got if got[k] != want[k]}
            raise RuntimeError(f"spec {spec} builds other widths than asked (layer: (asked, built)): {bad}")
        return model

    def latency(self, widths: dict[str, int]) -> float:
        spec = self.structure.spec_for(widths)
        key = str(spec)
        if key not in self.latency_cache:
            self.table.ensure(spec, self.num_classes, seconds=self.s.part_seconds)
            self.latency_cache[key] = self.table.predict(spec, self.num_classes)
        return self.latency_cache[key]

    def finetune(self, model: nn.Module, steps: int, seed: int, bar_desc: Optional[str] = None) -> None:
        """``steps`` optimizer steps on the training split with the recipe's optimizer, a cosine
        schedule over the steps (no warm-up: the weights are trained) and its label smoothing;
        the batches and randomness fixed by ``seed`` (every proposal of an iteration sees the same)."""
        from ..progress import progress_bar
        from ..train.optim import LRSchedule, create_optimizer
        from .data import Batches, single_process

        if steps == 0:
            return
        torch.manual_seed(seed)
        batches = Batches(self.train_ds, self.s.batch_size, seed, single_process())
        opt = create_optimizer(model, self.recipe)
        sched = LRSchedule(self.recipe.replace(epochs=1, warmup_epochs=0.0), steps)
        bar = progress_bar(steps, bar_desc, enabled=self.progress) if bar_desc else None
        model.train()
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = sched(step)
            x, y = batches.next()
            loss = F.cross_entropy(model(x), y, label_smoothing=self.recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        model.eval()

    @torch.no_grad()
    def accuracy(self, model: nn.Module, data) -> float:
        """Top-1 of ``model`` (eval mode) on ``(images, labels)`` tensors or a dataset."""
        model.eval()
        n = len(data[1]) if isinstance(data, tuple) else len(data)
        correct = 0
        for i in range(0, n, 256):
            x, y = (data[0][i:i + 256], data[1][i:i + 256]) if isinstance(data, tuple) else \
                _tensors(data, 256, start=i)
            correct += int((model(x).argmax(1) == y).sum())
        return correct / max(1, n)

    def proposal(self, widths: dict[str, int], layer: Layer, required: float) -> Optional[tuple[int, float]]:
        """``(channels, predicted ms)``: the fewest filters cut from ``layer`` (multiples of 8 kept)
        for the predicted latency to reach ``required``; ``None`` when even 8 channels do not.
        A binary search over the widths (latency grows with width), the smallest cut tried first
        (late iterations ask for little) and the narrowest width last (each width tried may be
        a part to measure)."""
        cur = widths[layer.key]
        cands = [c for c in range(CHANNEL_STEP, cur, CHANNEL_STEP)]
        if not cands:
            return None
        ms = lambda c: self.latency({**widths, layer.key: c})  # noqa: E731
        lo, hi = -1, len(cands) - 1   # cands[hi] fails the requirement unless it is the last
        if ms(cands[hi]) <= required:
            return cands[hi], ms(cands[hi])
        while hi - lo > 1:            # invariant: cands[hi] fails; cands[lo] meets (lo = -1: none found yet)
            mid = (lo + hi + 1) // 2
            if ms(cands[mid]) <= required:
                lo = mid
            else:
                hi = mid
        if lo < 0:
            return None
        return cands[lo], ms(cands[lo])

    def smallest_ms(self, widths: dict[str, int]) -> float:
        """Predicted ms with every prunable layer at its fewest channels (what adapting can reach)."""
        return self.latency({k: min(v, CHANNEL_STEP) for k, v in widths.items()})

    # -- state ---------------------------------------------------------------------------------
    def save_state(self, st: dict) -> None:
        from ..train.checkpoint import save_checkpoint

        save_checkpoint({"settings": {**asdict(self.s), "source": self.source}, **st}, self.out / STATE)

    def load_state(self) -> Optional[dict]:
        from .state import load_run_state

        # the source is a setting too: the same folder never continues another model's run
        return load_run_state(self.out / STATE, {**asdict(self.s), "source": self.source}, _RESUMABLE,
                              "a NetAdapt run", error=AdaptError)

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> AdaptResult:
        from ..progress import progress_bar

        s = self.s
        t0 = time.perf_counter()
        st = self.load_state()
        if st is None:
            model = self.source_model
            widths = self.structure.widths(model)
            baked = self.structure.transfer(model, self.build(widths))  # same shapes: the weights load as they are
            if self.fresh_head:
                self.finetune(baked, s.short_steps, s.seed, "new classifier" if self.progress else None)
            start_ms = self.latency(widths)
            reach = self.smallest_ms(widths)
            if reach > s.target_ms:
                raise AdaptError(f"latency target {s.target_ms:g} ms is below what adapting this model can reach: "
                                 f"with every prunable layer cut to {CHANNEL_STEP} channels the table predicts "
                                 f"{reach:.4g} ms (it starts at {start_ms:.4g} ms in {self._runtime()}); choose a "
                                 f"target >= {reach:.4g} ms")
            acc = self.accuracy(baked, self.held)
            st = {"widths": widths, "state_dict": baked.state_dict(), "iteration": 0, "history": [],
                  "correction": 0.0, "held_top1": acc, "start_ms": start_ms,
                  "start_val_top1": self.accuracy(baked, self.val_ds), "done": False}
            self.save_state(st)
        model = self.build(st["widths"])
        model.load_state_dict(st["state_dict"])
        widths = dict(st["widths"])
        est = _iterations_needed(st["start_ms"], s.target_ms, s.reduction, s.decay, s.max_iters)
        bar = progress_bar(max(est, st["iteration"] + 1), "netadapt", enabled=self.progress)
        if bar is not None and st["iteration"]:
            bar.update(st["iteration"])
        while not st["done"]:
            pred = self.latency(widths)
            if pred + st["correction"] <= s.target_ms:
                meas = self._measured(widths)
                st["correction"] = meas - pred
                if st["history"]:
                    st["history"][-1]["measured_ms"] = meas
                if meas <= s.target_ms:
                    st["done"] = True
                    st["measured_ms"] = meas
                    self.save_state(st)
                    break
            if st["iteration"] >= s.max_iters:
                if bar is not None:
                    bar.close()
                raise AdaptError(f"{s.max_iters} iterations left the model at {pred:.4g} ms predicted "
                                 f"(target {s.target_ms:g} ms); run again with a larger --max-iters to continue "
                                 f"from {self.out / STATE}")
            i = st["iteration"]
            step_ms = s.reduction * st["start_ms"] * s.decay ** i
            required = max(pred - step_ms, s.target_ms - st["correction"])
            best = None
            proposals = []
            for layer in self.structure.layers:
                found = self.proposal(widths, layer, required)
                if found is None:
                    continue
                channels, ms = found
                cand_widths = {**widths, layer.key: channels}
                cand = self.structure.transfer(model, self.build(cand_widths))
                self.finetune(cand, s.short_steps, s.seed + 1000 * (i + 1))
                acc = self.accuracy(cand, self.held)
                rec = {"layer": layer.key, "name": layer.name, "filters_before": widths[layer.key],
                       "filters_after": channels, "predicted_ms": ms, "held_out_top1": acc}
                proposals.append(rec)
                key = _preference(st["held_top1"], acc, pred - ms)
                if best is None or key > best[0]:
                    best = (key, rec, cand, cand_widths)
            if best is None:
                if bar is not None:
                    bar.close()
                raise AdaptError(f"no layer can be cut enough for {required:.4g} ms predicted (now {pred:.4g} ms, "
                                 f"target {s.target_ms:g} ms): every proposal would need fewer than "
                                 f"{CHANNEL_STEP} channels")
            _, rec, model, widths = best
            st["history"].append({"iteration": i, **rec, "kind": next(l.kind for l in self.structure.layers
                                                                        if l.key == rec["layer"]),
                                  "required_ms": required, "measured_ms": None, "proposals": proposals,
                                  "seconds": time.perf_counter() - t0})
            st.update(widths=widths, state_dict=model.state_dict(), iteration=i + 1, held_top1=rec["held_out_top1"])
            self.save_state(st)
            if bar is not None:
                bar.set_postfix_str(f"{rec['predicted_ms']:.3f} ms, held-out {100 * rec['held_out_top1']:.1f}%")
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.finish(model, widths, st)

    def _runtime(self) -> str:
        m = self.table.meta
        return f"{m['runtime']} {m['precision']}"

    def _measured(self, widths: dict[str, int]) -> float:
        spec = self.structure.spec_for(widths)
        return measure_network(spec, self.table, self.s.measure_seconds, self.num_classes)["median"]

    def finish(self, model: nn.Module, widths: dict[str, int], st: dict) -> AdaptResult:
        """The long fine-tune, then the adapted checkpoint, spec and history (all atomic)."""
        from ..models.info import model_info, set_model_info, trained_info
        from ..train.checkpoint import save_checkpoint
        from ..weights.io import atomic_write

        s = self.s
        spec = self.structure.spec_for(widths)
        if st.get("final") is None:
            self.finetune(model, s.long_steps, s.seed + 7, "long fine-tune" if self.progress else None)
            val = self.accuracy(model, self.val_ds)
            st["final"] = {"state_dict": model.state_dict(), "val_top1": val}
            self.save_state(st)
        model.load_state_dict(st["final"]["state_dict"])
        val = st["final"]["val_top1"]
        recipe = self.recipe.replace(model=str(spec), model_kwargs=dict(self.model_kwargs)).to_dict()
        set_model_info(model, trained_info(model_info(model), recipe=recipe))
        pred = self.latency(widths)
        summary = {"source": self.source, "spec": str(spec), "table": str(s.table), "runtime": self.table.meta["runtime"],
                   "precision": self.table.meta["precision"], "target_ms": s.target_ms, "start_ms": st["start_ms"],
                   "predicted_ms": pred, "measured_ms": st["measured_ms"], "start_val_top1": st["start_val_top1"],
                   "val_top1": val, "iterations": st["iteration"], "notes": self.notes, "settings": asdict(s),
                   "history": st["history"]}
        sd = model.state_dict()
        out = self.out
        ck = {"state_dict": sd, "model": sd, "ema": None, "recipe": recipe, "classes": list(self.classes),
              "history": [], "best": {"metric": "top1", "value": 100 * val, "epoch": 0}, "epoch": 0,
              "model_info": model_info(model).to_dict(), "netadapt": {k: v for k, v in summary.items() if k != "history"},
              "mobilenets_meta": {"format": "mobilenets", "arch": str(spec)}}
        path = save_checkpoint(ck, out / "adapted.pt")
        atomic_write(out / "adapted.txt", lambda tmp: Path(tmp).write_text(str(spec) + "\n"))
        atomic_write(out / "adapted.json", lambda tmp: Path(tmp).write_text(json.dumps(spec.to_dict(), indent=1)))
        atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=float)))
        return AdaptResult(spec, st["start_ms"], pred, st["measured_ms"], val, st["start_val_top1"], st["iteration"],
                           st["history"], path, out, self.notes)


def _preference(acc_before: float, acc: float, saved_ms: float) -> tuple:
    """Sort key of a proposal (larger is better): least accuracy lost per millisecond saved (a
    proposal losing nothing is free), then the most accurate, then the one saving most."""
    lost = max(0.0, acc_before - acc)
    return (-lost / max(saved_ms, 1e-9), acc, saved_ms)


def _iterations_needed(start: float, target: float, reduction: float, decay: float, cap: int) -> int:
    """Iterations the decaying schedule needs to cut ``start - target`` ms (for the progress bar)."""
    left, n = start - target, 0
    while left > 0 and n < cap:
        left -= reduction * start * decay ** n
        n += 1
    return max(1, n)


def _tensors(ds, limit: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``start`` to ``start + limit`` of an eval-transform dataset as two tensors (the
    held-out split is scored for every proposal: read once)."""
    items = [ds[i] for i in range(start, min(start + limit, len(ds)))]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def adapt(source: Union[str, nn.Module], settings: AdaptSettings, weights: Optional[str] = None,
          progress: bool = True, recipe: Optional[dict] = None, classes: Optional[list] = None) -> AdaptResult:
    """Run (or resume, from ``settings.out``) NetAdapt on ``source``: a training checkpoint, a
    model name / spec string with ``weights``, or a MobileNet module (its training ``recipe``
    dict optional). See the module docstring."""
    if isinstance(source, nn.Module):
        model, name = source, f"module:{getattr(source, 'spec', type(source).__name__)}"
    else:
        model, recipe, classes = load_source(source, weights)
        name = str(source) + (f" + {weights}" if weights else "")
    return _Adapt(settings, model, recipe, classes, name, progress).run()


__all__ = ["AdaptError", "AdaptResult", "AdaptSettings", "Layer", "Structure", "adapt", "expansion_ratio",
           "load_source"]
