"""The classification data a search reads (TuNAS's weight / held-out splits; NetAdapt's
fine-tuning and proposal-scoring splits): one reader and one batch iterator, shared by
:mod:`.run` and :mod:`.netadapt`.

The data comes through the classification task of the training registry
(``train.task.get_task("classify")``), so every dataset ``mobilenets train`` reads (digits,
fake, an image folder) is searchable, and its recipe gives the transforms, optimizer and schedule.
"""

from __future__ import annotations

from typing import Any, Optional

import torch


class Batches:
    """Batches of a dataset in this rank's epoch order (:func:`mobilenets.train.distributed.epoch_order`);
    ``state()`` / ``load(state)`` give the exact position, so a resumed search reads the same batches."""

    def __init__(self, dataset, batch_size: int, seed: int, dist):
        self.ds, self.bs, self.seed, self.dist = dataset, batch_size, seed, dist
        self.epoch, self.pos, self.order = 0, 0, self._order(0)

    def _order(self, epoch: int) -> list[int]:
        from ..train.distributed import epoch_order

        return epoch_order(len(self.ds), self.seed, epoch, self.dist)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.bs > len(self.order):
            self.epoch, self.pos = self.epoch + 1, 0
            self.order = self._order(self.epoch)
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += len(idx)
        items = [self.ds[i] for i in idx]
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self.order = self._order(self.epoch)


def single_process():
    """The :class:`~mobilenets.train.distributed.DistInfo` of one process (evaluation batches)."""
    from ..train.distributed import DistInfo

    return DistInfo()


def data_recipe(data: str):
    """The classification recipe made for ``data`` (``digit_clutter`` for digit-clutter; the
    task's default otherwise) with the data's own options: what a model trained on it alone uses."""
    from ..train.recipes import get_recipe, recipe_for_data
    from ..train.task import get_task

    task = get_task("classify")
    return get_recipe(recipe_for_data("classify", data) or task.default_recipe).replace(**task.data_option(data))


def classification_splits(data: str, img_size: int, batch_size: int, seed: int, held_out: float,
                          lr: Optional[float] = None, recipe: Any = None, what: str = "a search"):
    """``(train split, held-out split, val set, classes, recipe, held-out batch size)`` of ``data``
    (digits, fake, an image folder, or any built-in dataset the classification task reads).

    The held-out split is the dataset's own where it has one (digit-clutter), else ``held_out`` of
    the training images split per class (fixed by ``seed``), read with the eval transform (it
    scores, it does not train). The recipe is the one made for the data (``digit_clutter``). ``recipe``:
    the :class:`~mobilenets.train.recipe.Recipe` to start from (a trained model's own, so its
    normalisation and optimizer carry over); default the task's default recipe. ``what`` names
    the caller in the error for too little data."""
    from ..data.classification import Subset, build_datasets, eval_transform
    from ..data.common import stratified_split
    from ..train.recipe import apply_overrides
    from ..train.task import get_task

    task = get_task("classify")
    recipe = data_recipe(data) if recipe is None else recipe.replace(**task.data_option(data))
    over: dict = {"img_size": img_size, "batch_size": batch_size, "seed": seed}
    if lr is not None:
        over["lr"] = lr
    recipe = apply_overrides(recipe, over)
    bundle = build_datasets(recipe)
    task.check_data(bundle, recipe)
    if bundle.heldout is not None:  # the dataset's own held-out split (digit-clutter), never seen by train / val
        train, held = bundle.train, bundle.heldout
    else:
        train_idx, held_idx = stratified_split(list(bundle.train.targets), held_out, seed)
        scored = build_datasets(recipe, train_tf=eval_transform(recipe))
        train, held = Subset(bundle.train, train_idx), Subset(scored.train, held_idx)
    if len(train) < batch_size or len(held) < 2:
        raise ValueError(f"{data}: {len(train)} training / {len(held)} held-out images are too few for {what} "
                         f"with batch size {batch_size}")
    return train, held, bundle.val, bundle.classes, recipe, min(batch_size, len(held))
