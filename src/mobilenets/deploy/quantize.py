"""INT8 quantization under its historical import path.

``mobilenets.deploy.quantize.X`` keeps working for every name this module used to define; the
code now lives in one module per job:

* :mod:`~mobilenets.deploy.ort`: ONNX Runtime sessions and the measures (``ort_session``,
  ``onnx_logits``, ``int8_op_counts``, ``agreement``, ``cosine``);
* :mod:`~mobilenets.deploy.calibration`: calibration images (``calibration_batches``);
* :mod:`~mobilenets.deploy.onnx_passes`: ONNX graph rewrites (``finalize_qdq``...);
* :mod:`~mobilenets.deploy.ptq`: post-training quantization (``quantize_onnx``) and its notes
  on data types;
* :mod:`mobilenets.deploy.qat`: quantization-aware training (``prepare_qat``, ``QATModel``,
  ``export_qat_onnx``).

New code imports from :mod:`mobilenets.deploy` or those modules. Assigning a name here (say
``monkeypatch.setattr(quantize, "finalize_qdq", f)``) assigns it in the module that defines it as
well, so a patch through the old path still reaches the code that calls it.
"""

from __future__ import annotations

import sys
import types

# the private helpers are re-exported too (noqa): old callers and tests import them from here
from .calibration import CALIB_SOURCES, NO_CALIBRATION, Calibration, _as_batches, calibration_batches  # noqa: F401
from .onnx_passes import (MIN_QDQ_OPSET, _dequantize_outputs, _drop_unused_initializers,  # noqa: F401
                          _repeat_multiplier_dw_inputs, _spatial_means_as_global_pool, _unshare_initializers,
                          finalize_qdq)
from .ort import _require_ort, agreement, cosine, int8_op_counts, onnx_logits, ort_session  # noqa: F401
from .ptq import ACTIVATION_TYPES, METHODS, WEIGHT_TYPES, quantize_onnx
from .qat import (ActFakeQuant, QATModel, QConv2d, QLinear, export_qat_onnx, fake_quant_weight, prepare_qat,
                  weight_scale)

__all__ = ["ACTIVATION_TYPES", "CALIB_SOURCES", "METHODS", "MIN_QDQ_OPSET", "NO_CALIBRATION", "WEIGHT_TYPES",
           "ActFakeQuant", "Calibration", "QATModel", "QConv2d", "QLinear", "agreement", "calibration_batches",
           "cosine", "export_qat_onnx", "fake_quant_weight", "finalize_qdq", "int8_op_counts", "onnx_logits",
           "ort_session", "prepare_qat", "quantize_onnx", "weight_scale"]


# where each re-exported name is defined, fixed at import: a patch and its undo both go there
# (looking the home up from the current value would lose the way back once a patch from
# elsewhere, say a test's function, is in place)
_HOMES = {name: sys.modules[obj.__module__] for name, obj in list(globals().items())
          if not name.startswith("__") and getattr(obj, "__module__", None) in sys.modules
          and obj.__module__ != __name__ and obj.__module__.startswith(__package__ + ".")}


class _ForwardingModule(types.ModuleType):
    """This module's type: setting a re-exported function or class sets it in its home module too."""

    def __setattr__(self, name: str, value) -> None:
        home = _HOMES.get(name)
        if home is not None:
            setattr(home, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ForwardingModule
