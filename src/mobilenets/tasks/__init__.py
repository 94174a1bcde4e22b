"""What users do with a backbone: detection (SSDLite, Faster R-CNN FPN, RetinaNet) and, later,
segmentation, assembled from torchvision's own detection / segmentation pieces on every
registered backbone, with the built-in ``digit-scenes`` data and COCO / YOLO readers and writers.

Layer: above :mod:`mobilenets.deploy` (tasks train with :mod:`mobilenets.train` and export with
:mod:`mobilenets.deploy`); nothing below imports it. Importing this package registers the task
models' names; torchvision's detection modules load only when a model is built.
"""
