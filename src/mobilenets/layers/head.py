"""The classifier head of MobileNet V1-V4 (:class:`ClassifierHead`): global pool (timm's pool
types), an optional hidden layer, dropout, the final Linear; and :func:`new_linear`, a fresh
classifier on the device and dtype of the module it joins."""

from typing import Optional

import torch
import torch.nn as nn

from .activations import get_act
from .bn_stats import check_batch_stats
from .pool import GlobalPool, UnsupportedPoolError

torch.fx.wrap("check_batch_stats")  # a leaf under FX tracing (no branch on a traced shape)


class ClassifierHead(nn.Module):
    """Global pool -> [hidden Linear (+BN1d) + act] -> dropout -> Linear.

    V1/V2 have no hidden layer; V3 has Linear(960->1280, bias) + h-swish (the paper's
    "efficient last stage", section 5.1); V4 has Linear(960->1280, no bias) + BN + act.
    The hidden layer is a Linear on the pooled vector: the same math as a 1x1 conv on a 1x1 map.
    ``bias``: whether the hidden layer without a norm has a bias (timm's ``head_bias``).

    ``pool_type`` (timm's ``global_pool``, :data:`~mobilenets.layers.pool.POOL_TYPES`): with
    ``""`` the map is not pooled and the head works per position (``(N, C, H, W)`` out, as
    timm's heads with pooling disabled); ``"catavgmax"`` doubles the pooled width, so the hidden
    layer of a V3 / V4 head is sized for it at creation and cannot change it afterwards.
    """

    def __init__(self, in_chs: int, num_classes: int, hidden: int = 0, norm: bool = False,
                 act: Optional[str] = None, drop_rate: float = 0.0, norm_eps: float = 1e-5,
                 norm_momentum: float = 0.1, pool_type: str = "avg", bias: bool = True):
        super().__init__()
        self.in_chs = in_chs
        self.pool = GlobalPool(pool_type)
        pooled = in_chs * self.pool.feat_mult()
        self.has_hidden, self.has_norm = bool(hidden), bool(hidden) and norm
        if hidden:
            self.hidden = nn.Linear(pooled, hidden, bias=bias and not norm)
            self.norm = nn.BatchNorm1d(hidden, eps=norm_eps, momentum=norm_momentum) if norm else nn.Identity()
            self.act = get_act(act, inplace=True)
        else:
            self.hidden = self.norm = self.act = nn.Identity()
        self.hidden_size = hidden or pooled
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """Replace the final Linear (``num_classes`` 0: remove it) on the head's device and dtype,
        in the head's train / eval mode; ``pool_type``: change the pooling too (``None`` keeps
        it). :class:`~mobilenets.layers.pool.UnsupportedPoolError` for a pooling that would
        change the width a hidden layer was built for."""
        if pool_type is not None and pool_type != self.pool.pool_type:
            pool = GlobalPool(pool_type)
            if self.has_hidden and pool.feat_mult() != self.pool.feat_mult():
                raise UnsupportedPoolError(
                    f"this head's hidden layer (Linear {self.hidden.in_features} -> {self.hidden_size}) is sized for "
                    f"global_pool={self.pool.pool_type!r}; {pool_type!r} pools to {self.in_chs * pool.feat_mult()} "
                    f"channels: create the model with global_pool={pool_type!r} instead")
            self.pool = pool
            if not self.has_hidden:
                self.hidden_size = self.in_chs * pool.feat_mult()
        self.fc = new_linear(self, self.hidden_size, num_classes)
        self.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from the ``(N, C, H, W)`` feature map (``pre_logits``: the hidden vector);
        per position (``(N, *, H, W)``) when the pooling is ``""``."""
        if self.has_norm and self.pool.pool_type != "":
            check_batch_stats(x, self.training, "classifier head")
        x = self.pool(x)
        if self.pool.pool_type == "":  # not pooled: every layer of the head per position (a 1x1 conv)
            x = self.hidden(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            x = self.act(self.norm(x.flatten(2)).view(x.shape))
            if pre_logits:
                return x
            return self.fc(self.drop(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.act(self.norm(self.hidden(x)))
        if pre_logits:
            return x
        return self.fc(self.drop(x))


def new_linear(module: nn.Module, in_features: int, num_classes: int) -> nn.Module:
    """A classifier ``Linear(in_features, num_classes)`` (``nn.Identity`` for 0 classes) on the
    device and dtype of ``module``'s parameters (a model moved to ``float64`` / ``meta`` keeps a
    classifier it can run)."""
    if num_classes <= 0:
        return nn.Identity()
    ref = next((p for p in module.parameters() if p.is_floating_point()), None)
    if ref is None:
        return nn.Linear(in_features, num_classes)
    return nn.Linear(in_features, num_classes, device=ref.device, dtype=ref.dtype)
