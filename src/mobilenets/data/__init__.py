"""All data, one package: what every dataset shares, classification, detection and
segmentation datasets, their readers, writers and augmentations.

- :mod:`.common`: the normalisation constants, reading image files (:func:`read_rgb`, errors
  naming the file), scikit-learn's digits and their stratified split, the evaluation transform,
  :class:`DatasetError` and :class:`DataBundle` (a task's train / val sets and classes).
- :mod:`.classification`: ``digits`` / ``digit-clutter`` / ``imagefolder`` / ``fake`` datasets,
  the training transforms, MixUp / CutMix (:func:`build_datasets`, :func:`batch_mixer`).
- :class:`DigitClutter` (:mod:`.clutter`): ``digit-clutter``, the harder built-in classification
  task (the largest digit among distractors, fragments, rotation, blur and noise), generated
  deterministically on the fly; ``train`` / ``heldout`` / ``val`` splits never share a source digit.
- :mod:`.config`: timm's data-config API on our models: :func:`resolve_data_config` (the
  preprocessing a model's ``pretrained_cfg`` asks for, as timm resolves it) and
  :func:`create_transform` (timm's evaluation transform for that config).
- :mod:`.files`: what the file readers share (the bad-input log, the skip-and-count dataset).

Detection:

- :class:`DigitScenes`: scenes of scikit-learn digits with boxes, labels and instance masks,
  generated deterministically on the fly (train / val digits never mix).
- :func:`detection_transforms`: ``torchvision.transforms.v2`` pipelines on ``(image, target)``
  (photometric, zoom out, IoU crop, resize; never a flip).
- :func:`write_coco`, :func:`write_yolo`, :class:`CocoDetection`, :class:`YoloDetection`:
  datasets on disk, with counted warnings (:class:`DataWarning`) or errors naming the file for
  bad input.
- :func:`open_detection_data`: ``"digit-scenes"`` | COCO folder | YOLO folder -> a dataset;
  :func:`detection_collate` for the DataLoader.

Every detection dataset yields ``(image, target)``: float32 (3, H, W) in [0, 1], and a dict with
``boxes`` float32 (N, 4) xyxy pixels, ``labels`` int64 (N,) with 0 the background (torchvision's
convention), ``image_id`` and, where known, ``masks`` uint8 (N, H, W).

Semantic segmentation:

- :class:`SceneSegmentation`: digit-scenes as class maps (the scenes' :func:`semantic_mask`:
  digit ``d`` -> class ``d + 1``, 11 classes with the background), same determinism and no leak.
- :class:`VocSegmentation`: a VOC-style folder (``JPEGImages/``, ``SegmentationClass/``
  class-index PNGs, ``ImageSets/Segmentation/<split>.txt``, optional ``labelmap.txt``; VOC's 21
  classes by default, :data:`VOC_CLASSES`), with counted skips or errors naming the file for
  bad input; :func:`write_voc` writes any segmentation dataset in that layout.
- :func:`segmentation_transforms`: ``torchvision.transforms.v2`` pipelines on ``(image, mask)``
  (train: photometric, random resize 0.5-2x, random crop padded with 255; eval: shorter side
  resized; masks nearest-neighbour; never a flip).
- :func:`open_segmentation_data`: ``"digit-scenes"`` | VOC folder -> a dataset;
  :func:`segmentation_collate` stacks a batch, padding varied sizes (masks with 255).

Every segmentation dataset yields ``(image, mask)``: float32 (3, H, W) in [0, 1] and int64
(H, W) class indices, :data:`IGNORE_INDEX` (255) for pixels that count for nothing; ``.classes``
lists the names, background first, and ``.colors`` one ``(r, g, b)`` per class
(:func:`voc_colormap` unless the folder's labelmap gives them).
"""

from .common import (DIGITS_CROP_PCT, DIGITS_MEAN, DIGITS_SPLIT_SEED, DIGITS_STD, DIGITS_VAL_FRACTION,
                     IMAGENET_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, DataBundle, DatasetError,
                     ImageReadError, default_workers, eval_transform, load_digits_tensors, open_image, read_rgb,
                     stratified_split, transform_for)
from .clutter import CLUTTER_CLASSES, DigitClutter
from .config import create_transform, resolve_data_config, resolve_model_data_config
from .formats import (CocoDetection, DataWarning, YoloDetection, detection_collate, open_detection_data,
                      write_coco, write_yolo)
from .scenes import DIGIT_CLASSES, DigitScenes, semantic_mask
from .segmentation import SceneSegmentation, open_segmentation_data, segmentation_collate
from .transforms import detection_transforms, segmentation_transforms, to_tv_tensors
from .voc import IGNORE_INDEX, VOC_CLASSES, VocSegmentation, voc_colormap
from .writers import write_voc

__all__ = ["DIGITS_CROP_PCT", "DIGITS_MEAN", "DIGITS_SPLIT_SEED", "DIGITS_STD", "DIGITS_VAL_FRACTION",
           "IMAGENET_CROP_PCT", "IMAGENET_MEAN", "IMAGENET_STD", "IMG_EXTENSIONS", "DataBundle", "DatasetError",
           "ImageReadError", "default_workers", "eval_transform", "load_digits_tensors", "open_image", "read_rgb",
           "stratified_split", "transform_for", "create_transform", "resolve_data_config", "resolve_model_data_config",
           "CLUTTER_CLASSES", "DigitClutter", "DIGIT_CLASSES", "IGNORE_INDEX", "VOC_CLASSES", "CocoDetection", "DataWarning", "DigitScenes",
           "SceneSegmentation", "VocSegmentation", "YoloDetection", "detection_collate", "detection_transforms",
           "open_detection_data", "open_segmentation_data", "segmentation_collate", "segmentation_transforms",
           "semantic_mask", "to_tv_tensors", "voc_colormap", "write_coco", "write_voc", "write_yolo"]
