"""YOLO11 model YAMLs on our backbones, generated from the installed Ultralytics' own
``yolo11.yaml`` (its scales, neck and head), in the widely copied tutorial layout:

- layer 0: the backbone row (``MobileNetBackbone``), standing for layers 0-4: the hook
  (:mod:`.hook`) expands it into layers 1-4 = its P2..P5 maps (strides 4, 8, 16, 32);
- layer 5: ``SPPF`` on P5, layer 6: ``C2PSA``; then YOLO11's head, concatenating the backbone's
  P4 (layer 3) and P3 (layer 2), Detect on layers 12 / 15 / 18.

YOLO11's rows are taken from ``ultralytics/cfg/models/11/yolo11.yaml`` and renumbered by
rule, not copied by hand: its backbone layers the head reads (P3, P4) and the one ``SPPF``
reads (P5) become layers 2, 3, 4; every layer from ``SPPF`` on moves to the numbering above.

:func:`write_yamls` writes the shipped files (``cfg/``, package data): YOLO11 n/s/m/l/x on
the five MobileNetV4 models, MobileNetV3-Large and Mobile-Former-294M.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .backbone import LEVEL_STRIDES, check_width

SCALES = ("n", "s", "m", "l", "x")
#: the backbones the shipped YAMLs cover: the five MobileNetV4 models users ask for, V3-Large, MF-294M
SHIPPED_BACKBONES = ("mobilenetv4_conv_small", "mobilenetv4_conv_medium", "mobilenetv4_conv_large",
                     "mobilenetv4_hybrid_medium", "mobilenetv4_hybrid_large", "mobilenetv3_large_100",
                     "mobileformer_294m")
CFG_DIR = Path(__file__).parent / "cfg"
#: the layer of each backbone level in the tutorial layout (P2..P5 -> 1..4) and of SPPF
LEVEL_LAYERS = {stride: 1 + i for i, stride in enumerate(LEVEL_STRIDES)}
NECK_START = 1 + len(LEVEL_STRIDES)


def stock_yaml_path() -> Path:
    """``yolo11.yaml`` of the installed Ultralytics."""
    from .hook import ultralytics_tasks

    tasks = ultralytics_tasks()
    path = Path(tasks.__file__).parent.parent / "cfg" / "models" / "11" / "yolo11.yaml"
    if not path.is_file():
        raise ImportError(f"the installed Ultralytics has no YOLO11 model file ({path}); "
                          f"pip install -U 'mobilenets[yolo]'")
    return path


def stock_yolo11() -> dict:
    """The installed Ultralytics' YOLO11 model dict (``nc``, ``scales``, ``backbone``, ``head``)."""
    import yaml

    return yaml.safe_load(stock_yaml_path().read_text(encoding="utf-8"))


def _sources(row: Sequence) -> list[int]:
    f = row[0]
    return list(f) if isinstance(f, (list, tuple)) else [f]


def yolo11_neck_head(stock: Optional[dict] = None) -> tuple[list, list]:
    """YOLO11's rows from ``SPPF`` on (``SPPF``, ``C2PSA``) and its head, renumbered for the
    tutorial layout (module docstring). Raises ``ValueError`` if the installed ``yolo11.yaml``
    is not shaped as YOLO11 is (one ``SPPF``; a head reading two backbone layers before it)."""
    stock = copy.deepcopy(stock if stock is not None else stock_yolo11())
    backbone, head = stock["backbone"], stock["head"]
    sppf = [i for i, r in enumerate(backbone) if r[2] == "SPPF"]
    read = sorted({s for r in head for s in _sources(r) if 0 <= s < (sppf or [0])[0]})
    if len(sppf) != 1 or len(read) != 2 or backbone[sppf[0]][0] != -1:
        raise ValueError(f"{stock_yaml_path()}: not YOLO11's layout (expected one SPPF reading the layer "
                         f"before it and a head reading two backbone layers, P3 and P4; found SPPF at "
                         f"{sppf}, head reading {read})")
    start = sppf[0]
    renumber = {read[0]: LEVEL_LAYERS[8], read[1]: LEVEL_LAYERS[16], start - 1: LEVEL_LAYERS[32]}
    shift = NECK_START - start

    def move(s: int) -> int:
        if s == -1:
            return -1
        return renumber[s] if s < start else s + shift

    rows = []
    for r in backbone[start:] + head:
        f = [move(s) for s in r[0]] if isinstance(r[0], (list, tuple)) else move(r[0])
        rows.append([f, *r[1:]])
    n_tail = len(backbone) - start
    return rows[:n_tail], rows[n_tail:]


def backbone_row(backbone: str, width: float = 1.0, kwargs: Optional[dict] = None) -> list:
    """The YAML row of layer 0: ``[-1, 1, MobileNetBackbone, [backbone, width(, kwargs)]]``."""
    args: list[Any] = [backbone, check_width(width)]
    if kwargs:
        args.append(dict(kwargs))
    return [-1, 1, "MobileNetBackbone", args]


def model_dict(backbone: str = "mobilenetv4_conv_small", width: float = 1.0, nc: int = 80,
           kwargs: Optional[dict] = None, stock: Optional[dict] = None) -> dict:
    """The model dict of YOLO11 (all five scales) on ``backbone`` at ``width``, tutorial layout."""
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ValueError(f"nc (number of classes) must be an integer >= 1, got {nc!r}")
    stock = stock if stock is not None else stock_yolo11()
    tail, head = yolo11_neck_head(stock)
    return {"nc": nc, "scales": copy.deepcopy(stock["scales"]),
            "backbone": [backbone_row(backbone, width, kwargs)] + tail, "head": head}


def yaml_name(scale: str, backbone: str, width: float = 1.0) -> str:
    """``yolo11{scale}-{backbone}[-{width}].yaml``: Ultralytics reads the scale from the name."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)} (YOLO11n ... YOLO11x), got {scale!r}")
    return f"yolo11{scale}-{backbone}" + ("" if float(width) == 1.0 else f"-{float(width):g}") + ".yaml"


def _flow(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()


def _comment(i: int, row: list, n_backbone: int) -> str:
    if i == 0:
        return "0-4: P2..P5, strides 4/8/16/32 (layers 1-4 after the hook expands this row)"
    layer = i + NECK_START - 1
    names = {v: f"backbone P{k.bit_length() - 1}" for k, v in LEVEL_LAYERS.items()}  # stride 8: P3
    reads = [s for s in _sources(row) if s != -1]
    what = row[2]
    if what == "Concat":
        return f"{layer}: cat " + ", ".join(names.get(s, f"layer {s}") for s in reads)
    if what == "Detect":
        return f"{layer}: Detect(P3, P4, P5) on layers " + ", ".join(map(str, reads))
    return f"{layer}" + (f": {what}" if i < n_backbone else "")


def yaml_text(scale: str, backbone: str = "mobilenetv4_conv_small", width: float = 1.0, nc: int = 80,
              kwargs: Optional[dict] = None, stock: Optional[dict] = None) -> str:
    """The YAML file of YOLO11``scale`` on ``backbone``: :func:`model_dict` with comments (each
    row's layer index, what the head's concats read)."""
    d = model_dict(backbone, width, nc, kwargs, stock)
    name = yaml_name(scale, backbone, width)
    lines = [f"# {name}: YOLO11{scale} on the mobilenets backbone {backbone} (width {float(width)}).",
             "# Generated by mobilenets.integrations.ultralytics.layout (python -m mobilenets.integrations.ultralytics",
             "# --write-yamls DIR); neck and head are YOLO11's (ultralytics/cfg/models/11/yolo11.yaml), renumbered",
             "# for the one-row backbone. Build with Ultralytics after registering the module name:",
             "#   from mobilenets.integrations.ultralytics import register; register()",
             f"#   model = ultralytics.YOLO(\"path/to/{name}\")   # pip install 'mobilenets[yolo]'",
             f"# (the same model: mobilenets.integrations.ultralytics.yolo({scale!r}, {backbone!r}, {float(width)}))"]
    lines += ["", f"nc: {d['nc']} # number of classes",
              "scales: # [depth, width, max_channels] of YOLO11's neck and head; the file name picks the scale"]
    lines += [f"  {k}: {_flow(v)}" for k, v in d["scales"].items()]
    for section in ("backbone", "head"):
        lines += ["", f"{section}:"]
        if section == "backbone":
            lines.append("  # [from, repeats, module, args]")
        offset = 0 if section == "backbone" else len(d["backbone"])
        for i, row in enumerate(d[section]):
            lines.append(f"  - {_flow(row)} # {_comment(offset + i, row, len(d['backbone']))}")
    return "\n".join(lines) + "\n"


def shipped_yamls() -> dict[str, Path]:
    """The YAML files shipped in the package: ``{file name: path}``."""
    return {p.name: p for p in sorted(CFG_DIR.glob("yolo11*.yaml"))}


def yaml_path(scale: str, backbone: str) -> Path:
    """The shipped YAML of YOLO11``scale`` on ``backbone`` (``FileNotFoundError`` listing the
    shipped backbones otherwise; :func:`yaml_text` makes one for any backbone and width).

    When Ultralytics is installed, this also registers our module names (:func:`~.hook.register`), so
    ``ultralytics.YOLO(str(yaml_path(...)))`` builds as it is."""
    from .hook import register_if_installed

    p = CFG_DIR / yaml_name(scale, backbone)
    if not p.is_file():
        raise FileNotFoundError(f"no shipped YAML {p.name}: shipped are YOLO11 {'/'.join(SCALES)} on "
                                f"{', '.join(SHIPPED_BACKBONES)}; for another backbone or width use "
                                f"yolo() or layout.yaml_text()")
    register_if_installed()
    return p


def write_yamls(out_dir: Union[str, Path] = CFG_DIR, backbones: Sequence[str] = SHIPPED_BACKBONES,
                scales: Sequence[str] = SCALES) -> list[Path]:
    """Write ``yolo11{scale}-{backbone}.yaml`` for every scale and backbone, atomically (the
    shipped files: ``python -m mobilenets.integrations.ultralytics --write-yamls``)."""
    from ...weights.io import atomic_write

    stock = stock_yolo11()
    written = []
    for backbone in backbones:
        for scale in scales:
            text = yaml_text(scale, backbone, stock=stock)
            written.append(atomic_write(Path(out_dir) / yaml_name(scale, backbone),
                                        lambda t, text=text: Path(t).write_text(text, encoding="utf-8")))
    return written
