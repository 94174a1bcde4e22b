"""``python -m mobilenets.integrations.ultralytics``: write or check the shipped YOLO11 YAMLs.

    python -m mobilenets.integrations.ultralytics --write-yamls [DIR]   # default: the package's cfg/
    python -m mobilenets.integrations.ultralytics --check               # exit 1 if a shipped file is stale
    python -m mobilenets.integrations.ultralytics --print n mobilenetv4_conv_small 0.75
"""

from __future__ import annotations

import argparse
import sys

from .layout import CFG_DIR, SHIPPED_BACKBONES, shipped_yamls, stock_yolo11, write_yamls, yaml_name, yaml_text


def stale_yamls() -> list[str]:
    """Names of shipped YAMLs that differ from what the generator makes now (or are missing)."""
    stock, shipped = stock_yolo11(), shipped_yamls()
    bad = []
    for backbone in SHIPPED_BACKBONES:
        for scale in "nsmlx":
            name = yaml_name(scale, backbone)
            if name not in shipped or shipped[name].read_text(encoding="utf-8") != yaml_text(scale, backbone, stock=stock):
                bad.append(name)
    expected = {yaml_name(s, b) for b in SHIPPED_BACKBONES for s in "nsmlx"}
    return bad + sorted(set(shipped) - expected)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobilenets.integrations.ultralytics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write-yamls", nargs="?", const=str(CFG_DIR), metavar="DIR")
    g.add_argument("--check", action="store_true")
    g.add_argument("--print", nargs="+", metavar=("SCALE", "BACKBONE [WIDTH]"))
    args = p.parse_args(argv)
    if args.write_yamls:
        paths = write_yamls(args.write_yamls)
        print(f"wrote {len(paths)} YAMLs to {args.write_yamls}")
        return 0
    if args.check:
        bad = stale_yamls()
        print("shipped YAMLs up to date" if not bad else "stale or unexpected: " + ", ".join(bad))
        return 1 if bad else 0
    scale, backbone, *rest = args.print + (["mobilenetv4_conv_small"] if len(args.print) == 1 else [])
    sys.stdout.write(yaml_text(scale, backbone, float(rest[0]) if rest else 1.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
