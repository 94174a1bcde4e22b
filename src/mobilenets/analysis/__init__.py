"""Hardware-aware analysis: per-layer MACs / params / bytes, the MobileNetV4 roofline
latency model, calibration against this machine, and plots.

>>> from mobilenets.analysis import profile, roofline, sweep
>>> p = profile("mobilenetv4_conv_small")              # doctest: +SKIP
>>> roofline(p, peak_macs=1e12, mem_bw=50e9).time      # doctest: +SKIP

Byte convention: see :mod:`mobilenets.analysis.profile`.
"""

import functools

from .accuracy import ACCURACY, Accuracy, top1
from .calibrate import (Calibration, CalibrationReport, calibrate, predict_vs_measure,
                        spearman)
from .profile import DTYPE_BYTES, LayerRecord, Profile, profile
from .roofline import (DEFAULT_PEAK_MACS, DEFAULT_RPS, LayerTime, RooflineResult, Sweep,
                       pareto_front, roofline, sweep)


@functools.lru_cache(maxsize=None)
def macs_at_224(name: str) -> int:
    """MACs of a registered model at 224x224, batch 1 (cached).

    Args:
        name: registry name.
    """
    return profile(name, (224, 224)).macs


__all__ = ["ACCURACY", "Accuracy", "Calibration", "CalibrationReport", "DEFAULT_PEAK_MACS",
           "DEFAULT_RPS", "DTYPE_BYTES", "LayerRecord", "LayerTime", "Profile", "RooflineResult",
           "Sweep", "calibrate", "macs_at_224", "pareto_front", "predict_vs_measure", "profile",
           "roofline", "spearman", "sweep", "top1"]
