"""Architecture specs, one module per family: pure data (no model imports). The names are
bound to specs and builders in :mod:`mobilenets.zoo`."""

from . import (mobileformer, mobilenet_edgetpu, mobilenetv1, mobilenetv2, mobilenetv3, mobilenetv4,  # noqa: F401
               mobilenetv5)
from .spec import BlockSpec, HeadSpec, NetSpec, parse_block, parse_stages, scale_repeats

__all__ = ["BlockSpec", "HeadSpec", "NetSpec", "parse_block", "parse_stages", "scale_repeats"]
