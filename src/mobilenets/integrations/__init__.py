"""Bridges to other frameworks: :mod:`mobilenets.integrations.ultralytics` (Ultralytics YOLO).

Layer: above the package root (an integration may use the whole public API); nothing in the
core imports it. Each bridge imports its framework lazily, inside functions, so importing
:mod:`mobilenets` (or a bridge module) never imports the framework; a missing framework is an
``ImportError`` naming the extra to install.
"""
