"""Registration: binds every model name to its spec (:mod:`mobilenets.archs`, pure data) and
its builder (:mod:`mobilenets.models`). This is the only module that imports both, so the
dependency order stays one-way: archs -> layers -> blocks -> models -> zoo.

Importing :mod:`mobilenets` imports this module, which registers every model.
"""

from __future__ import annotations

from .archs import mobileformer, mobilenet_edgetpu, mobilenetv1, mobilenetv2, mobilenetv3, mobilenetv4, mobilenetv5
from .archs.mobileformer import MobileFormerSpec
from .models.mobileformer import MobileFormer
from .models.mobilenet import MobileNet
from .models.mobilenetv5 import register_mobilenetv5
from .models.registry import keyword_options, register, register_spec


def _register_v3(name: str, width: float, reference: dict, make_spec, doc: str) -> None:
    """A V3 name: ``make_spec(reduced_tail)`` gives its spec (torchvision's ``reduced_tail`` /
    ``dilated`` options apply to every V3 variant)."""
    def build(width_mult: float = width, reduced_tail: bool = False, dilated: bool = False,
              **kw) -> MobileNet:
        if dilated:
            kw.setdefault("output_stride", 16)
        return MobileNet(make_spec(reduced_tail), width_mult=width_mult, **kw)

    build.__doc__ = f"{name}: {doc} x{width}."
    register(name, "mobilenetv3", build, spec=make_spec(False).replace(width_mult=width), defaults={"width_mult": width},
             reference=reference, options=keyword_options(MobileNet))


def _register_mobileformer(spec: MobileFormerSpec) -> None:
    defaults = {"width_mult": 1.0}

    def build(**kw) -> MobileFormer:
        return MobileFormer(spec, **{**defaults, **kw})

    build.__doc__ = f"{spec.name}: Mobile-Former ({spec.paper}), {spec.num_tokens} tokens x {spec.token_dim}."
    register(spec.name, spec.family, build, spec=spec, defaults=defaults,
             reference={"official": spec.official_name}, options=keyword_options(MobileFormer))


def register_all() -> None:
    """Register every model (once; called on import)."""
    for spec in mobileformer.SPECS.values():
        _register_mobileformer(spec)
    for name, width, ref, *spec in mobilenetv1.VARIANTS:
        register_spec(name, spec[0] if spec else mobilenetv1.V1, width, reference=ref)
    for name, width, ref, *opts in mobilenetv2.VARIANTS:
        register_spec(name, mobilenetv2.v2_spec(**opts[0]) if opts else mobilenetv2.V2, width, reference=ref)
    for name, large, width, ref, *opts in mobilenetv3.VARIANTS:
        kw = opts[0] if opts else {}
        doc = ("TF-ported " if kw.get("tf_port") else "") + f"MobileNetV3-{'Large' if large else 'Small'}" \
            + ("-Minimalistic" if kw.get("minimal") else "") + (f" depth x{kw['depth_mult']}" if "depth_mult" in kw else "")
        _register_v3(name, width, ref, lambda rt, large=large, kw=kw: mobilenetv3.v3_spec(large, rt, **kw), doc)
    for name, width, ref in mobilenetv3.RW_VARIANTS:
        _register_v3(name, width, ref, mobilenetv3.v3_rw_spec, "timm's MobileNetV3-Large (rw)")
    for name, width, ref in mobilenet_edgetpu.VARIANTS:
        register_spec(name, mobilenet_edgetpu.SPECS[name], width, reference=ref)
    for name, key, width in mobilenetv4.VARIANTS:
        register_spec(name, mobilenetv4.SPECS[key], width, reference={"timm": name})
    for name, spec in mobilenetv5.SPECS.items():
        register_mobilenetv5(spec, reference={"timm": name})


register_all()
