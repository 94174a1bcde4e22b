"""Detection data: the built-in ``digit-scenes``, COCO / YOLO readers and writers, the detection
augmentations and the DataLoader collate.

- :class:`DigitScenes`: scenes of scikit-learn digits with boxes, labels and instance masks,
  generated deterministically on the fly (train / val digits never mix).
- :func:`detection_transforms`: ``torchvision.transforms.v2`` pipelines on ``(image, target)``
  (photometric, zoom out, IoU crop, resize; never a flip).
- :func:`write_coco`, :func:`write_yolo`, :class:`CocoDetection`, :class:`YoloDetection`:
  datasets on disk, with counted warnings (:class:`DataWarning`) or errors naming the file for
  bad input.
- :func:`open_detection_data`: ``"digit-scenes"`` | COCO folder | YOLO folder -> a dataset;
  :func:`detection_collate` for the DataLoader.

Every dataset yields ``(image, target)``: float32 (3, H, W) in [0, 1], and a dict with
``boxes`` float32 (N, 4) xyxy pixels, ``labels`` int64 (N,) with 0 the background (torchvision's
convention), ``image_id`` and, where known, ``masks`` uint8 (N, H, W).
"""

from .formats import (CocoDetection, DataWarning, YoloDetection, detection_collate, open_detection_data,
                      write_coco, write_yolo)
from .scenes import DIGIT_CLASSES, DigitScenes, semantic_mask
from .transforms import detection_transforms, to_tv_tensors

__all__ = ["DIGIT_CLASSES", "CocoDetection", "DataWarning", "DigitScenes", "YoloDetection", "detection_collate",
           "detection_transforms", "open_detection_data", "semantic_mask", "to_tv_tensors", "write_coco",
           "write_yolo"]
