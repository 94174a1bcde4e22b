"""Model registry: name -> builder, family and spec. Raises on duplicates.

Wherever a name goes, a spec goes too: a :class:`NetSpec` string (``str(spec)``) or a ``.json``
spec file is resolved by :func:`get_entry` to an unregistered entry named by the spec string
(:func:`spec_entry`), so a searched or hand-written architecture builds, trains, exports and
profiles as a registry model does; :func:`model_spec` gives any name's spec.

A name may carry a pretrained tag, as timm's do (``mobilenetv3_large_100.ra_in1k``): the tags of
a name are timm's for the same architecture (``ModelEntry.reference["timm"]``), read from the
generated :mod:`.timm_cfgs`, timm's default tag first. :func:`get_entry` and :func:`is_model`
accept tagged names and check the tag; :func:`list_models` lists them with
``include_tags=True`` (and only those with weights with ``pretrained=True``), as timm's does.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch.nn as nn

from ..archs.spec import NetSpec, is_spec_string, load_spec
from . import timm_cfgs
from .mobilenet import MobileNet


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes:
        name: registry name. family: ``mobilenetv1`` ... ``mobileformer``.
        builder: ``builder(**kwargs) -> nn.Module``.
        spec: the architecture spec the builder uses (when it has one).
        defaults: keyword defaults passed to the builder (e.g. ``width_mult``).
        reference: ``{"timm": name, "torchvision": name}`` of the same architecture elsewhere.
        task: ``"classification"`` (the backbones), ``"detection"`` or ``"segmentation"``
            (task models on a backbone; their builders take ``pretrained`` themselves).
        options: the keyword options ``create_model`` passes on to the builder (what a misspelt
            keyword is matched against).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    spec: Any = None
    defaults: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    task: str = "classification"
    options: tuple[str, ...] = ()

    @property
    def pretrained_cfgs(self) -> list[dict]:
        """timm's ``pretrained_cfg`` of every tag of this architecture (copies; timm's default tag
        first; timm's values, module names included); ``[]`` where timm has none."""
        return [dict(c) for c in timm_cfgs.CFGS.get(self.reference.get("timm", ""), ())]

    @property
    def tags(self) -> tuple[str, ...]:
        """The pretrained tags this name accepts (``name.tag``), timm's default first."""
        return tuple(c.get("tag") for c in timm_cfgs.CFGS.get(self.reference.get("timm", ""), ()) if c.get("tag"))

    @property
    def pretrained_tags(self) -> tuple[str, ...]:
        """The tags that have weights (a URL or a Hugging Face Hub id), in :attr:`tags` order."""
        return tuple(c.get("tag") for c in timm_cfgs.CFGS.get(self.reference.get("timm", ""), ())
                     if c.get("tag") and has_weights(c))


def has_weights(cfg: dict) -> bool:
    """Whether a timm ``pretrained_cfg`` names weights (timm's ``PretrainedCfg.has_weights``)."""
    return bool(cfg.get("url") or cfg.get("file") or cfg.get("hf_hub_id"))


def split_tag(name: str) -> tuple[str, str]:
    """``"mobilenetv3_large_100.ra_in1k"`` -> ``("mobilenetv3_large_100", "ra_in1k")``; ``""`` for no
    tag (timm's ``split_model_name_tag``)."""
    arch, _, tag = name.partition(".")
    return arch, tag


def keyword_options(*fns: Callable) -> tuple[str, ...]:
    """The named keyword parameters of callables (a class: its ``__init__``), in order, without
    ``self``, a leading spec / backbone argument and ``*args`` / ``**kwargs``."""
    names: list[str] = []
    for fn in fns:
        for p in list(inspect.signature(fn).parameters.values()):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("self", "spec", "backbone"):
                continue
            if p.name not in names:
                names.append(p.name)
    return tuple(names)


TASKS = ("classification", "detection", "segmentation")
_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: str, builder: Callable[..., nn.Module], spec: Any = None,
             defaults: Optional[dict] = None, reference: Optional[dict] = None,
             task: str = "classification", options: tuple[str, ...] = ()) -> ModelEntry:
    """Register a model name. Raises ``ValueError`` if the name is taken. ``options``: the
    keywords the builder accepts besides its named parameters (when it forwards ``**kwargs``)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered (family {_REGISTRY[name].family})")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    entry = ModelEntry(name, family, builder, spec, dict(defaults or {}), dict(reference or {}), task,
                       tuple(dict.fromkeys(keyword_options(builder) + tuple(options))))
    _REGISTRY[name] = entry
    return entry


def register_spec(name: str, spec: NetSpec, width_mult: float = 1.0,
                  reference: Optional[dict] = None, **fixed) -> ModelEntry:
    """Register ``name`` as ``MobileNet(spec, width_mult=..., **fixed)``; callers may override
    any keyword (``width_mult`` included) at ``create_model`` time. The entry's spec carries the
    width (``spec.width_mult``), so :func:`model_spec` gives the whole architecture."""
    spec = spec.replace(width_mult=width_mult)
    defaults = {"width_mult": width_mult, **fixed}

    def build(**kw) -> MobileNet:
        return MobileNet(spec, **{**defaults, **kw})

    build.__doc__ = f"{name}: {spec.family} ({spec.paper}), width {width_mult}."
    return register(name, spec.family, build, spec=spec, defaults=defaults, reference=reference,
                    options=keyword_options(MobileNet))


def spec_entry(spec: NetSpec) -> ModelEntry:
    """An unregistered entry building ``MobileNet(spec)``, named by the spec string."""
    def build(**kw) -> MobileNet:
        return MobileNet(spec, **kw)

    build.__doc__ = f"a {spec.family} architecture given as a spec."
    return ModelEntry(str(spec), spec.family, build, spec, {"width_mult": spec.width_mult}, {},
                      "classification", keyword_options(MobileNet))


def _is_spec_source(name: str) -> bool:
    return is_spec_string(name) or (isinstance(name, str) and name.lower().endswith(".json"))


def model_spec(name: str) -> Any:
    """The architecture spec of a model name (a :class:`NetSpec` for MobileNet V1-V4, the TF
    ports and EdgeTPU, whose ``str()`` is the spec string ``create_model`` accepts; MobileNetV5's
    and Mobile-Former's own spec records), or of a spec string / ``.json`` spec file.

    Raises:
        UnknownModelError: an unknown name (closest matches named); ValueError: a task model
            (``ssdlite320_*``: its backbone has the spec).
    """
    entry = get_entry(name)
    if entry.spec is None:
        backbone = entry.defaults.get("backbone")
        raise ValueError(f"{entry.name} is a {entry.task} model with no architecture spec of its own"
                         + (f"; its backbone's: model_spec({backbone!r})" if backbone else ""))
    return entry.spec


def list_models(pattern: str = "*", family: Optional[str] = None, task: Optional[str] = None,
                pretrained: bool = False, include_tags: Optional[bool] = None,
                exclude_filters: Union[str, Sequence[str]] = ()) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``family``, and ``task``:
    ``"classification"``, ``"detection"`` or ``"segmentation"``; ``None``: every task).

    As timm's ``list_models``: ``include_tags=True`` lists ``name.tag`` for every pretrained tag
    (a name without tags stays untagged; a ``pattern`` without a tag part also matches its
    tags); ``pretrained=True`` keeps only what has weights (tags with a URL or Hub id; untagged:
    names whose default tag has weights) and includes the tags unless ``include_tags=False``;
    ``exclude_filters``: patterns to drop.

    No match returns ``[]`` (as timm does) with a warning naming the families there are, so a
    pattern for another library's models (``"resnet*"``) or a misspelt family is not silent."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    include_tags = pretrained if include_tags is None else include_tags
    entries = [e for e in _REGISTRY.values()
               if (family is None or e.family == family) and (task is None or e.task == task)]
    names: dict[str, bool] = {}  # name (tagged or not) -> has weights
    for e in entries:
        if include_tags and e.tags:
            cfgs = e.pretrained_cfgs
            names.update((f"{e.name}.{c['tag']}", has_weights(c)) for c in cfgs)
        else:
            names[e.name] = bool(e.tags) and has_weights(e.pretrained_cfgs[0])  # the default tag's
    excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)

    def matches(n: str, pat: str) -> bool:  # "name*" also matches "name*.tag", as timm expands it
        return fnmatch.fnmatch(n, pat) or (include_tags and "." not in pat and fnmatch.fnmatch(n, pat + ".*"))

    matched = [n for n in names if matches(n, pattern) and not any(matches(n, x) for x in excludes)]
    found = sorted(n for n in matched if names[n] or not pretrained)
    if not matched and _REGISTRY:
        families = sorted({e.family for e in _REGISTRY.values() if task is None or e.task == task})
        warnings.warn(f"no model matches {pattern!r}" + (f" in family {family!r}" if family else "")
                      + (f" for task {task!r}" if task else "") + f"; the families are {', '.join(families)}",
                      stacklevel=2)
    return found


def list_pretrained(pattern: str = "*", exclude_filters: Union[str, Sequence[str]] = ()) -> list[str]:
    """``name.tag`` of every pretrained tag with weights matching ``pattern`` (timm's
    ``list_pretrained``: ``list_models(pattern, pretrained=True, include_tags=True)``)."""
    return list_models(pattern, pretrained=True, include_tags=True, exclude_filters=exclude_filters)


#: classification families that are not backbones of the task models (detection, segmentation,
#: YOLO), and why
NOT_TASK_BACKBONES = {
    "mobilenetv5": "MobileNetV5 is Gemma 3n's 300M-parameter vision encoder with its own multi-scale fusion neck "
                   "and RMSNorm (no BatchNorm for the task heads' frozen-BN and SSDLite settings); use its "
                   "features_only maps directly",
}


def task_backbones() -> list[str]:
    """The classification names the task models are built on (every family but
    :data:`NOT_TASK_BACKBONES`)."""
    return [n for n in list_models(task="classification") if _REGISTRY[n].family not in NOT_TASK_BACKBONES]


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name`` (``name.tag``: the name's entry, once the tag is checked); an unknown
    name raises ``KeyError`` naming the closest matches, an unknown tag :class:`UnknownTagError`
    naming the name's tags, the closest first. A spec string or ``.json`` spec file gives
    :func:`spec_entry` (a ``ValueError`` naming what does not parse)."""
    if _is_spec_source(name):
        return spec_entry(load_spec(name))
    arch, tag = split_tag(name)
    if arch in _REGISTRY:
        entry = _REGISTRY[arch]
        if tag and tag not in entry.tags:
            raise UnknownTagError(_tag_message(entry, tag))
        return entry
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(arch, list(_REGISTRY), n=40, cutoff=0.5)
        # suggest models of the task the closest match has: a misspelt classifier name gets
        # classifiers, not the segmenters and detectors built on that classifier
        close = [n for n in close if _REGISTRY[n].task == _REGISTRY[close[0]].task][:5] if close else []
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see mobilenets.list_models())") from None


def _tag_message(entry: ModelEntry, tag: str) -> str:
    if not entry.tags:
        return (f"{entry.name} has no pretrained tags (timm has no pretrained cfg for it), got {tag!r}; "
                f"use {entry.name!r}")
    ranked = sorted(entry.tags, key=lambda t: -difflib.SequenceMatcher(None, tag, t).ratio())
    return (f"unknown pretrained tag {tag!r} for {entry.name}; did you mean {entry.name}.{ranked[0]}? "
            f"(expected one of, closest first: {', '.join(ranked)}; timm's default: {entry.tags[0]})")


def is_model(name: str) -> bool:
    """Whether :func:`get_entry` (and ``create_model``) accepts ``name`` (a tag must be known; a
    spec string or ``.json`` spec file must parse)."""
    if _is_spec_source(name):
        try:
            load_spec(name)
        except (ValueError, OSError):
            return False
        return True
    arch, tag = split_tag(name)
    return arch in _REGISTRY and (not tag or tag in _REGISTRY[arch].tags)


class UnknownModelError(KeyError, ValueError):
    """Unknown model name. A ``KeyError`` (lookup) and a ``ValueError`` (bad argument)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownTagError(UnknownModelError):
    """A known name with an unknown pretrained tag (``name.tag``)."""
