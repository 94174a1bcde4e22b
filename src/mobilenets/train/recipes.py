"""The named training recipes (:func:`get_recipe`), each with the measurements behind it.

Named recipes mirror the published ones (torchvision's references/classification for MobileNetV3; the TF Model Garden MobileNetV4 configs; Chen et al. 2022 for Mobile-Former):

* ``torchvision_mnv3``: RMSprop (alpha 0.9, TF-style eps 1e-3 -> PyTorch eps sqrt(1e-3) = 0.0316),
  lr 0.064 (batch 1024 on 8 GPUs x 128), step decay 0.973 every 2 epochs, 600 epochs,
  AutoAugment, RandomErasing 0.2, weight decay 1e-5, average of the last 3 checkpoints,
  label smoothing / stochastic depth / LR noise (the later "+1.5 points" additions).
* ``tf_mnv4``: TF Model Garden MobileNetV4: AdamW, cosine with warm-up, EMA 0.9999,
  RandAugment, label smoothing 0.1, stochastic depth (mixup/cutmix for the large models).
* ``mobileformer``: AdamW, cosine, 450 epochs, RandAugment m9, random erasing 0.2.
* ``digits`` (the default): a small, fast recipe for scikit-learn's 8x8 digits upscaled, tuned
  to reach >= 97 % validation top-1 in a few minutes on 2 CPU cores. Its epochs are 22 steps:
  every BatchNorm trains with momentum 0.1 (``bn_momentum``). MobileNetV3's own 0.01 (torchvision's,
  for ImageNet epochs of ~1,250 steps) averages the running statistics over ~100 steps, 4.5 of
  these epochs, while AdamW moves the weights: the eval-mode network then sees statistics of
  older weights, and MobileNetV3-Large validated at chance (9.75 %) in every epoch of a run whose
  weights reach 99.2 % with the statistics re-estimated.
* ``digit_clutter``: the harder built-in task (``--data digit-clutter`` starts from it), within
  a 10-minute CPU budget (MobileNetV4-Conv-S: 2.9 CPU-minutes, 80.9 %; MobileNetV1-0.25: 26.7 %)
  and bounded by epochs, so its accuracy does not depend on the machine's load
  (benchmarks/HARD_TASK.md).
"""

from __future__ import annotations

import copy

from ..data import DIGITS_CROP_PCT, DIGITS_MEAN, DIGITS_SPLIT_SEED, DIGITS_STD, DIGITS_VAL_FRACTION
from .recipe import Recipe

# --- named recipes -------------------------------------------------------------------------------
RECIPES: dict[str, Recipe] = {
    # Tuned on 2 CPU cores: 1437 training images (80 %, stratified), 64 px (epoch time:
    # benchmarks/RESULTS.md).
    # No flips (a mirrored digit is another glyph); mild crops; short warm-up then cosine.
    "digits": Recipe(img_size=64, epochs=20, batch_size=64, opt="adamw", lr=4e-3, weight_decay=0.05,
                     sched="cosine", warmup_epochs=1, scale_min=0.6, ratio=(0.85, 1.18), hflip=0.0,
                     label_smoothing=0.1, crop_pct=DIGITS_CROP_PCT, mean=DIGITS_MEAN, std=DIGITS_STD,
                     val_fraction=DIGITS_VAL_FRACTION, seed=DIGITS_SPLIT_SEED, bn_momentum=0.1),
    # The digit-clutter task (data/clutter.py), on which MNv4-Conv-S and MobileNetV1-0.25 differ
    # (benchmarks/HARD_TASK.md): 5 epochs of 10,000 generated 64 px images, validated on 2,000;
    # mild crops that keep the target, no flips (a mirrored digit is another glyph). The digits'
    # normalization. channels_last: ~1.5x the training images per second of MNv4-Conv-S on 2 CPU
    # threads (measured interleaved, batch 32, 64 px).
    "digit_clutter": Recipe(dataset="digit-clutter", img_size=64, epochs=5, batch_size=32, opt="adamw", lr=2e-3,
                            weight_decay=0.05, sched="cosine", warmup_epochs=0.2, scale_min=0.85,
                            ratio=(0.9, 1.11), hflip=0.0, label_smoothing=0.1, crop_pct=DIGITS_CROP_PCT,
                            mean=DIGITS_MEAN, std=DIGITS_STD, bn_momentum=0.1, channels_last=True,
                            scene_images=10000, scene_val_images=2000),
    # torchvision's MobileNetV3-Large recipe (torchvision's references/classification and its MobileNetV3 training write-up).
    "torchvision_mnv3": Recipe(
        model="mobilenetv3_large_100", dataset="imagefolder", img_size=224, epochs=600, batch_size=128,
        opt="rmsprop", lr=0.064, momentum=0.9, rmsprop_alpha=0.9, tf_eps=1e-3, weight_decay=1e-5,
        sched="step", decay_epochs=2, decay_rate=0.973, warmup_epochs=0, auto_augment="autoaugment",
        reprob=0.2, avg_last_k=3, label_smoothing=0.1, drop_path_rate=0.0, lr_noise=0.0,
        scale_min=0.08, hflip=0.5),
    # TF Model Garden MobileNetV4 (conv small settings; large models add mixup/cutmix).
    "tf_mnv4": Recipe(
        model="mobilenetv4_conv_small", dataset="imagefolder", img_size=224, epochs=2400,
        batch_size=512, opt="adamw", lr=0.002, weight_decay=0.01, sched="cosine", warmup_epochs=5,
        ema_decay=0.9999, auto_augment="randaugment", ra_magnitude=9, ra_num_ops=2,
        label_smoothing=0.1, drop_path_rate=0.0, drop_rate=0.3),
    "tf_mnv4_large": Recipe(
        model="mobilenetv4_conv_large", dataset="imagefolder", img_size=384, epochs=500,
        batch_size=256, opt="adamw", lr=0.004, weight_decay=0.2, sched="cosine", warmup_epochs=20,
        ema_decay=0.9999, auto_augment="randaugment", ra_magnitude=15, mixup=0.8, cutmix=1.0,
        label_smoothing=0.1, drop_path_rate=0.35, drop_rate=0.2),
    # Mobile-Former (Chen et al. 2022): AdamW, cosine, 450 epochs, RandAugment m9, RE 0.2.
    "mobileformer": Recipe(
        model="mobileformer_294m", dataset="imagefolder", img_size=224, epochs=450, batch_size=128,
        opt="adamw", lr=8e-4, weight_decay=0.08, sched="cosine", warmup_epochs=20,
        auto_augment="randaugment", ra_magnitude=9, reprob=0.2, label_smoothing=0.1),
    # --- detection (--task detect) ---
    # The digit-scenes goal: SSDLite on MobileNetV4-Conv-S, backbone from the digits classifier
    # (--set pretrained=runs/<digits run>/best.pt), on 2 CPU cores (benchmarks/DETECTION.md).
    # Digits are 24-128 px: default boxes from 32 to 160 px (torchvision's 64-304 px miss the
    # small ones: a 24 px digit has IoU 0.14 with a 64 px box). channels_last: 25 % faster training
    # steps on 2 CPU threads (SSDLite-MNv4-Conv-S, batch 8, measured interleaved).
    "digit_scenes": Recipe(
        task="detect", model="ssdlite320_mobilenetv4_conv_small", model_kwargs={"anchor_ratios": [0.1, 0.5]},
        dataset="digit-scenes", img_size=320, channels_last=True,
        epochs=7, batch_size=16, opt="sgd", lr=0.05, momentum=0.9, weight_decay=4e-5, sched="cosine",
        warmup_epochs=0.5, hflip=0.0, label_smoothing=0.0, scene_images=2000, scene_val_images=500),
    # torchvision's SSDLite320-MobileNetV3 COCO recipe (references/detection: 660 epochs, cosine,
    # lr 0.15 for 8 GPUs x 24 images, weight decay 4e-5), its lr scaled to one process of 24.
    "ssdlite": Recipe(
        task="detect", model="ssdlite320_mobilenetv3_large_100", dataset="folder", img_size=320, epochs=660,
        batch_size=24, opt="sgd", lr=0.15 * 24 / 192, momentum=0.9, weight_decay=4e-5, sched="cosine",
        warmup_epochs=0, hflip=0.0, label_smoothing=0.0),
    # torchvision's Faster R-CNN MobileNetV3-FPN COCO recipe (26 epochs, lr 0.02 for 8 GPUs x 2
    # images, weight decay 1e-4; its steps at 16 and 22 become a cosine), lr scaled to one process of 2.
    "fasterrcnn": Recipe(
        task="detect", model="fasterrcnn_mobilenetv3_large_100_fpn", dataset="folder", img_size=800, epochs=26,
        batch_size=2, opt="sgd", lr=0.02 * 2 / 16, momentum=0.9, weight_decay=1e-4, sched="cosine",
        warmup_epochs=0.1, hflip=0.0, label_smoothing=0.0),
    # --- segmentation (--task segment) ---
    # The digit-scenes goal: LR-ASPP on MobileNetV4-Conv-S, backbone from the digits classifier
    # (--set pretrained=runs/<digits run>/best.pt), on 2 CPU cores (benchmarks/SEGMENTATION.md).
    # The digits recipe's normalization (the backbone was trained with it). 192 px training crops
    # of the 320 px scenes (evaluated whole) with a mild 0.75-1.25 scale jitter: twice the images
    # per second of 320 crops, 11 epochs in about 20 minutes, +0.05 mIoU at equal time.
    "digit_scenes_seg": Recipe(
        task="segment", model="lraspp_mobilenetv4_conv_small", dataset="digit-scenes", img_size=320,
        crop_size=192, seg_scale=(0.75, 1.25),
        epochs=11, batch_size=16, opt="sgd", lr=0.05, momentum=0.9, weight_decay=1e-5, sched="poly",
        warmup_epochs=0.25, hflip=0.0, label_smoothing=0.0, mean=DIGITS_MEAN, std=DIGITS_STD,
        scene_images=2000, scene_val_images=500),
    # torchvision's MobileNetV3 segmentation recipes (references/segmentation: 30 epochs, SGD
    # momentum 0.9, lr 0.01 for 8 GPUs x 4 images, weight decay 1e-6, poly 0.9; DeepLabV3 with
    # the aux loss at 0.5), lr scaled to one process of 4; crops of img_size (torchvision: 480
    # crops, evaluation at 520).
    "lraspp": Recipe(
        task="segment", model="lraspp_mobilenetv3_large_100", dataset="folder", img_size=520, crop_size=480,
        epochs=30,
        batch_size=4, opt="sgd", lr=0.01 * 4 / 32, momentum=0.9, weight_decay=1e-6, sched="poly",
        warmup_epochs=0, hflip=0.0, label_smoothing=0.0),
    "deeplabv3": Recipe(
        task="segment", model="deeplabv3_mobilenetv3_large_100", model_kwargs={"aux_loss": True},
        dataset="folder", img_size=520, crop_size=480, epochs=30, batch_size=4, opt="sgd", lr=0.01 * 4 / 32,
        momentum=0.9,
        weight_decay=1e-6, sched="poly", warmup_epochs=0, hflip=0.0, label_smoothing=0.0, aux_loss_weight=0.5),
}


class UnknownRecipeError(KeyError, ValueError):
    """Unknown recipe name. A ``KeyError`` (lookup) and a ``ValueError`` (bad argument)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def recipe_for_data(task: str, data) -> "str | None":
    """The named recipe made for a built-in dataset, when it trains ``task``: the dataset's name
    with ``_`` for ``-`` (``--data digit-clutter`` -> ``digit_clutter``); ``None`` otherwise."""
    name = str(data or "").replace("-", "_")
    return name if name in RECIPES and RECIPES[name].task == task else None


def get_recipe(name: str) -> Recipe:
    """A copy of a named recipe (:class:`UnknownRecipeError`, a ``KeyError``, listing the names
    for an unknown one)."""
    if name not in RECIPES:
        raise UnknownRecipeError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return copy.deepcopy(RECIPES[name])
