"""Registry, the generic MobileNet builder, heads and feature extraction."""

from .features import FeatureExtractor
from .mobilenet import ClassifierHead, MobileNet, check_input, register_spec
from .mobileformer import MobileFormer
from .registry import ModelEntry, UnknownModelError, get_entry, list_models, register

__all__ = ["ClassifierHead", "FeatureExtractor", "MobileFormer", "MobileNet", "ModelEntry",
           "UnknownModelError", "check_input", "get_entry", "list_models", "register", "register_spec"]
