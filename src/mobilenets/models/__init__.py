"""Registry, the generic MobileNet builder, heads and feature extraction."""

from .base import Backbone, MapAndTokens, StageOutput, check_input
from .features import FeatureExtractor
from .info import ModelInfo, model_info, set_model_info
from .mobilenet import ClassifierHead, MobileNet, register_spec
from .mobileformer import MobileFormer
from .registry import ModelEntry, UnknownModelError, get_entry, list_models, register

__all__ = ["Backbone", "ClassifierHead", "FeatureExtractor", "MapAndTokens", "MobileFormer", "MobileNet",
           "ModelEntry", "ModelInfo", "StageOutput", "UnknownModelError", "check_input", "get_entry", "list_models",
           "model_info", "register", "register_spec", "set_model_info"]
