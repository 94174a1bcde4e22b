"""Registry, the generic MobileNet builder, heads and feature extraction."""

from .base import Backbone, MapAndTokens, StageOutput, check_input
from .features import FeatureExtractor
from .mobilenet import ClassifierHead, MobileNet, register_spec
from .mobileformer import MobileFormer
from .registry import ModelEntry, UnknownModelError, get_entry, list_models, register

__all__ = ["Backbone", "ClassifierHead", "FeatureExtractor", "MapAndTokens", "MobileFormer", "MobileNet",
           "ModelEntry", "StageOutput", "UnknownModelError", "check_input", "get_entry", "list_models",
           "register", "register_spec"]
