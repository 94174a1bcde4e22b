"""Optimizers (SGD, AdamW, RMSprop with TF-style epsilon; no weight decay on norms and
biases) and the learning-rate schedules (cosine, step, poly, constant; warm-up)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .recipe import OPTIMIZERS, Recipe


# --- optimizer -----------------------------------------------------------------------------------
def tf_to_torch_eps(tf_eps: float) -> float:
    """Convert a TensorFlow RMSprop epsilon to PyTorch's.

    TF computes ``g / sqrt(ms + eps_tf)``; PyTorch computes ``g / (sqrt(ms) + eps)``. Where it
    matters (``ms`` small against eps) the two agree when ``eps = sqrt(eps_tf)``: torchvision's
    MobileNetV3 recipe uses 0.0316 = sqrt(1e-3) for TF's 1e-3 (torchvision's references/classification).
    """
    return math.sqrt(tf_eps)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; biases, norm affine parameters and any other 1-D
    parameter (layer scale) without, as in the TF/timm recipes."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay)
    if recipe.opt == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    if recipe.opt == "adamw":
        eps = recipe.opt_eps if recipe.tf_eps is None else recipe.tf_eps  # Adam: eps outside sqrt in both
        return torch.optim.AdamW(groups, lr=recipe.lr, eps=eps)
    if recipe.opt == "rmsprop":
        eps = recipe.opt_eps if recipe.tf_eps is None else tf_to_torch_eps(recipe.tf_eps)
        return torch.optim.RMSprop(groups, lr=recipe.lr, alpha=recipe.rmsprop_alpha, eps=eps,
                                   momentum=recipe.momentum)
    raise ValueError(f"opt must be one of {OPTIMIZERS}, got {recipe.opt!r}")


# --- learning-rate schedule ----------------------------------------------------------------------
class LRSchedule:
    """The learning rate as a pure function of the optimizer step (so resuming is exact).

    Linear warm-up from ``lr * warmup_lr_factor``, then cosine to ``lr * min_lr_factor``, a step
    decay (``decay_rate`` every ``decay_epochs``), poly (``lr * (1 - t) ** poly_power``, t the
    fraction of post-warm-up steps done) or constant. LR noise (timm's
    ``--lr-noise``): inside ``lr_noise_range`` (fractions of training), the epoch's LR is
    multiplied by ``1 + N(0, lr_noise)`` clipped to [0.5, 1.5], drawn from a generator seeded by
    (seed, epoch).
    """

    def __init__(self, recipe: Recipe, steps_per_epoch: int):
        self.r, self.spe = recipe, max(1, steps_per_epoch)
        self.total = recipe.epochs * self.spe
        self.warmup = int(round(recipe.warmup_epochs * self.spe))

    def __call__(self, step: int) -> float:
        r = self.r
        if step < self.warmup:
            f = r.warmup_lr_factor + (1 - r.warmup_lr_factor) * step / self.warmup
            return r.lr * f
        epoch_f = step / self.spe
        if r.sched == "cosine":
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            lr = r.lr * (r.min_lr_factor + (1 - r.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
        elif r.sched == "step":
            lr = r.lr * r.decay_rate ** math.floor(epoch_f / r.decay_epochs)
        elif r.sched == "poly":  # torchvision's segmentation reference: PolynomialLR(power 0.9) after warm-up
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            lr = r.lr * max(0.0, 1 - min(1.0, t)) ** r.poly_power
        else:
            lr = r.lr
        if r.lr_noise > 0:
            lo, hi = r.lr_noise_range
            epoch = int(epoch_f)
            if lo * r.epochs <= epoch < hi * r.epochs:
                g = torch.Generator().manual_seed(r.seed * 100003 + epoch)
                lr *= float(torch.clamp(1 + torch.randn((), generator=g) * r.lr_noise, 0.5, 1.5))
        return lr
