"""Architecture specs, one module per family: pure data (no model imports). The names are
bound to specs and builders in :mod:`mobilenets.zoo`."""

from . import mobileformer, mobilenetv1, mobilenetv2, mobilenetv3, mobilenetv4, mobilenetv5  # noqa: F401
from .spec import BlockSpec, HeadSpec, NetSpec, parse_block, parse_stages

__all__ = ["BlockSpec", "HeadSpec", "NetSpec", "parse_block", "parse_stages"]
