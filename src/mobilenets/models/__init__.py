"""Registry, the generic MobileNet builder, heads and feature extraction."""

from .base import Backbone, MapAndTokens, StageOutput, check_input
from .features import FeatureExtractor
from .info import ModelInfo, model_info, set_model_info
from .mobilenet import ClassifierHead, MobileNet
from .mobileformer import MobileFormer
from .pretrained import resolve_pretrained_cfg
from .registry import (ModelEntry, UnknownModelError, UnknownTagError, get_entry, list_models, list_pretrained,
                       model_spec, register, register_spec, split_tag)

__all__ = ["Backbone", "ClassifierHead", "FeatureExtractor", "MapAndTokens", "MobileFormer", "MobileNet",
           "ModelEntry", "ModelInfo", "StageOutput", "UnknownModelError", "UnknownTagError", "check_input", "get_entry",
           "list_models", "list_pretrained", "model_info", "model_spec", "register", "register_spec", "resolve_pretrained_cfg",
           "set_model_info", "split_tag"]
