"""Architecture specs, one module per family; importing registers every model."""

from . import mobileformer, mobilenetv1, mobilenetv2, mobilenetv3, mobilenetv4  # noqa: F401  (registration)
from .spec import BlockSpec, HeadSpec, NetSpec, parse_block, parse_stages

__all__ = ["BlockSpec", "HeadSpec", "NetSpec", "parse_block", "parse_stages"]
