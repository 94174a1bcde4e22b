"""Knowledge distillation (Hinton et al. 2015, https://arxiv.org/abs/1503.02531).

``loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * hard_loss(s, y)``

The ``T^2`` factor keeps the soft term's gradient scale independent of the temperature
(section 2 of the paper). The teacher runs in eval mode without gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class TeacherError(ValueError):
    """A teacher that cannot be used with this student (unknown, unreadable, other classes)."""


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` on temperature-softened distributions, batch mean."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor,
                 alpha: float, temperature: float) -> torch.Tensor:
    """``alpha * kd_loss + (1 - alpha) * hard_loss``."""
    return alpha * kd_loss(student_logits, teacher_logits, temperature) + (1 - alpha) * hard_loss


def classifier_outputs(model: nn.Module) -> Optional[int]:
    """Number of classes a model predicts (``None`` if it cannot be told)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    return None


def load_teacher(spec: str, num_classes: int, weights: Optional[str] = None,
                 device: torch.device | str = "cpu") -> nn.Module:
    """Build the teacher from a registry name (with optional ``weights``) or one of our training
    checkpoints (``best.pt`` / ``last.pt``, which records the architecture and classes).

    Raises:
        TeacherError: unknown name, unreadable checkpoint, or a class count other than
            ``num_classes``.
    """
    from ..factory import create_model
    from ..models import get_entry
    from ..weights import load_weights
    from ..weights import read_checkpoint

    path = Path(spec)
    if path.suffix.lower() in (".pt", ".pth", ".safetensors", ".bin", ".ckpt") or path.is_file():
        from .checkpoint import model_from_checkpoint
        try:
            model, info = model_from_checkpoint(path)
        except (OSError, ValueError, KeyError) as e:
            raise TeacherError(f"teacher {spec}: {str(e).splitlines()[0]}") from None
    else:
        try:
            get_entry(spec)
        except (KeyError, ValueError) as e:
            raise TeacherError(f"teacher: {e.args[0] if e.args else e}") from None
        n = num_classes
        if weights:
            sd, _ = read_checkpoint(weights)
            fc = [v for k, v in sd.items() if k.endswith("fc.weight") or k.endswith("classifier.weight")
                  or k.endswith("classifier.3.weight")]
            if fc:
                n = int(fc[-1].shape[0])
        model = create_model(spec, num_classes=n)
        if weights:
            load_weights(model, weights)
    got = classifier_outputs(model)
    if got is not None and got != num_classes:
        raise TeacherError(f"teacher {spec} predicts {got} classes but the dataset has {num_classes}; "
                           f"use a teacher trained on the same classes")
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Distiller:
    """Wraps the hard-label loss: ``__call__(student_logits, images, targets) -> loss``."""

    def __init__(self, teacher: nn.Module, hard_loss: Callable, alpha: float, temperature: float):
        self.teacher, self.hard_loss = teacher.eval(), hard_loss
        self.alpha, self.temperature = alpha, temperature

    def __call__(self, student_logits: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        with torch.no_grad():
            t = self.teacher(images)
        return distill_loss(student_logits, t, self.hard_loss(student_logits, targets),
                            self.alpha, self.temperature)
