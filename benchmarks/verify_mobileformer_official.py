"""Numerical parity of our Mobile-Former with the official implementation.

    python benchmarks/verify_mobileformer_official.py --official-dir PATH/TO/MobileFormer
        [--variants 26m 96m ...] [--odd-size 193x161] [--batch 2] [--seed 0] [--train]
        [--tol 1e-4] [--tol64 1e-9] [--attn-gain 2] [--device cpu] [--threads N]

``--official-dir`` is a clone of github.com/AAboys/MobileFormer (the directory holding
``mobile_former.py`` and ``dna_blocks.py``; default: ``$MOBILEFORMER_OFFICIAL_DIR``). No
official code is part of this repository: the two files are imported from that directory. They
were written as part of timm (``from .helpers import build_model_with_cfg``,
``from .registry import register_model``, ``from .layers import DropPath``), so this script
writes a small stand-in package into a temporary directory at run time (the shims: helpers =
"call the class with the keyword arguments", registry = identity decorator, layers = timm's
``DropPath``) whose package path also covers ``--official-dir``, and imports the official
modules through it. The official ``mobile_former.py`` imports ``timm.data``, so timm must be
installed (``pip install timm``, a test/benchmark-only dependency).

Per variant (official ``mobile_former_26m`` ... ``_508m`` = our ``mobileformer_26m`` ...):

1. build the official model (``drop_path_rate=0``) and give *every* parameter random values of
   a sensible scale (conv / linear weights N(0, 1/fan_in), biases N(0, 0.1^2), BatchNorm and
   LayerNorm weights U(0.5, 1.5), BatchNorm running mean N(0, 0.1^2) and running variance
   U(0.5, 1.5), tokens N(0, 1)); the bridges' and the Former's query / key projections are
   scaled by ``--attn-gain`` (default 2) so that their softmaxes are less uniform;
2. build ours with ``mobilenets.create_model(name, pretrained=official.state_dict())``
   (the official key layout is detected and mapped, strictly);
3. float32, ``eval()``: compare the logits on the same random input at 224 x 224 and at an
   odd, non-square size (default 193 x 161; the official code handles any size), batch
   ``--batch``, as ``max |ours - official| / max |official|`` (columns ``rel 224``,
   ``rel HxW``); tolerance ``--tol`` (1e-4; measured ~1e-6);
4. the reverse direction: :func:`mobilenets.weights.export_mobileformer_official` of our model
   must load into a fresh official model with ``load_state_dict(strict=True)`` and give the
   same logits at 224 x 224 (``rel export``, tolerance ``--tol``);
5. float64, ``eval()``, odd size (``rel f64``): rounding no longer hides small differences
   (with random weights some bridges are nearly uniform, so a change there moves float32 logits
   by less than 1e-5); tolerance ``--tol64`` (1e-9; measured ~1e-14);
6. with ``--train``: float64, both models in ``train()`` mode (BatchNorm on batch statistics),
   one forward at the odd size; compares the logits and the updated BatchNorm running
   statistics (``rel train``, tolerance ``--tol64``; measured ~1e-12). Float64 because
   batch-statistics BatchNorm on random activations amplifies float32 rounding to ~1e-2.

PASS needs equal parameter counts and every difference within its tolerance. Prints one table
row per variant and exits 1 if any variant fails (2 on usage errors).
``tests/test_mobileformer.py::test_official_code_parity`` runs :func:`run` when
``MOBILEFORMER_OFFICIAL_DIR`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import itertools
import math
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn

import mobilenets
from mobilenets.weights import export_mobileformer_official

OFFICIAL_FILES = ("mobile_former.py", "dna_blocks.py")
ENV_VAR = "MOBILEFORMER_OFFICIAL_DIR"
ODD_SIZE = (193, 161)

# Linear layers (official names) whose output feeds a softmax as query or key.
_ATTN_PROJ = ("local_global.q", "global_block.q", "global_local.k")

_SHIMS = {
    "helpers.py": """
        def build_model_with_cfg(model_cls, variant, pretrained, default_cfg=None, **kwargs):
            return model_cls(**kwargs)


        def default_cfg_for_features(default_cfg):
            return default_cfg
        """,
    "registry.py": """
        def register_model(fn):
            return fn
        """,
    "layers.py": """
        from timm.layers import DropPath  # noqa: F401
        """,
}

_counter = itertools.count()


def variants() -> list[str]:
    """Our Mobile-Former names, smallest first."""
    names = mobilenets.list_models(family="mobileformer")
    return sorted(names, key=lambda n: int("".join(c for c in n.rsplit("_", 1)[1] if c.isdigit())))


def _official_name(name: str) -> str:
    return mobilenets.get_entry(name).reference["official"]


def _resolve(variant: str) -> str:
    """``26m`` / ``mobileformer_26m`` / ``mobile_former_26m`` -> ``mobileformer_26m``."""
    known = variants()
    for cand in (variant, f"mobileformer_{variant}", variant.replace("mobile_former_", "mobileformer_")):
        if cand in known:
            return cand
    raise ValueError(f"unknown Mobile-Former variant {variant!r}; known: {', '.join(known)}")


def check_official_dir(official_dir) -> Path:
    """The directory as a Path; raises FileNotFoundError naming the missing files."""
    path = Path(official_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory (expected a clone of AAboys/MobileFormer)")
    missing = [f for f in OFFICIAL_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: missing {', '.join(missing)} (expected a clone of "
            f"https://github.com/AAboys/MobileFormer holding {' and '.join(OFFICIAL_FILES)})")
    return path.resolve()


def load_official(official_dir):
    """Import the official ``mobile_former`` module from ``official_dir``, through a stand-in
    package (helpers / registry / layers shims) written to a temporary directory."""
    path = check_official_dir(official_dir)
    try:
        importlib.import_module("timm.data")  # the official mobile_former.py imports it
        importlib.import_module("timm.layers")  # DropPath, for the layers shim
    except ImportError as e:
        raise ImportError(f"the official Mobile-Former code needs timm (pip install timm): {e}") from None
    pkg = f"_mobileformer_official_{os.getpid()}_{next(_counter)}"
    with tempfile.TemporaryDirectory(prefix="mf_official_shim_") as tmp:
        root = Path(tmp) / pkg
        root.mkdir()
        (root / "__init__.py").write_text(
            "# stand-in for timm.models: the official files are submodules of this package\n"
            f"__path__.append({str(path)!r})\n")
        for fname, src in _SHIMS.items():
            (root / fname).write_text(textwrap.dedent(src).lstrip())
        sys.path.insert(0, tmp)
        no_pyc, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave the clone as it is
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                module = importlib.import_module(f"{pkg}.mobile_former")
        finally:
            sys.path.remove(tmp)
            sys.dont_write_bytecode = no_pyc
    return module


def build_official(module, name: str, **kwargs) -> nn.Module:
    """The official model for our ``name`` (its constructors print a lot: silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return getattr(module, _official_name(name))(**kwargs)


def randomize_(model: nn.Module, gen: torch.Generator, attn_gain: float = 2.0) -> nn.Module:
    """Random values for every parameter and BatchNorm statistic of the official model."""
    covered = set()
    with torch.no_grad():
        for name, m in model.named_modules():
            own = [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                gain = attn_gain if isinstance(m, nn.Linear) and name.endswith(_ATTN_PROJ) else 1.0
                std = gain / math.sqrt(m.weight[0].numel())  # 1 / sqrt(fan_in)
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
            else:
                continue
            covered.update(own)
    left = [n for n, _ in model.named_parameters() if n not in covered]
    if left:
        raise RuntimeError(f"parameters the randomization does not cover: {left[:5]}")
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    if ours.shape != ref.shape:
        return math.inf
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _bn_stats_diff(ours_sd: dict, ref_sd: dict) -> float:
    worst = 0.0
    for k, v in ours_sd.items():
        if k.endswith(("running_mean", "running_var")):
            worst = max(worst, rel_diff(v, ref_sd[k]))
        elif k.endswith("num_batches_tracked") and int(v) != int(ref_sd[k]):
            return math.inf
    return worst


def compare_variant(module, name: str, *, odd_size: Sequence[int] = ODD_SIZE, batch: int = 2,
                    seed: int = 0, attn_gain: float = 2.0, train: bool = False, device="cpu",
                    tol: float = 1e-4, tol64: float = 1e-9) -> dict:
    """Compare our ``name`` with the official model (``module`` from :func:`load_official`).

    Returns a dict: ``variant``, ``official``, ``params_ours``, ``params_official``,
    ``rel_224``, ``rel_odd``, ``rel_export`` (float32), ``rel_f64`` (float64, odd size),
    ``rel_train`` (float64 train mode, logits and BatchNorm statistics; None without
    ``train``), ``ok`` and ``error`` (a message when something raised)."""
    name = _resolve(name)
    row = dict(variant=name, official=_official_name(name), params_ours=None, params_official=None,
               rel_224=None, rel_odd=None, rel_export=None, rel_f64=None, rel_train=None,
               ok=False, error=None)
    gen = torch.Generator().manual_seed(seed)
    try:
        ref = randomize_(build_official(module, name, drop_path_rate=0.0), gen, attn_gain)
        ours = mobilenets.create_model(name, pretrained=ref.state_dict(), drop_path_rate=0.0)
        row["params_ours"], row["params_official"] = count_params(ours), count_params(ref)
        x224 = torch.randn(batch, 3, 224, 224, generator=gen)
        x_odd = torch.randn(batch, 3, *odd_size, generator=gen)

        # float32, eval
        ref32, ours32 = copy.deepcopy(ref).to(device).eval(), copy.deepcopy(ours).to(device).eval()
        with torch.no_grad():
            row["rel_224"] = rel_diff(ours32(x224.to(device)), ref32(x224.to(device)))
            row["rel_odd"] = rel_diff(ours32(x_odd.to(device)), ref32(x_odd.to(device)))
            # the reverse direction: our state dict in the official layout, strictly
            back = build_official(module, name, drop_path_rate=0.0)
            back.load_state_dict(export_mobileformer_official(ours32), strict=True)
            back = back.to(device).eval()
            row["rel_export"] = rel_diff(ours32(x224.to(device)), back(x224.to(device)))

        # float64: eval, then (optionally) train mode with batch statistics
        ref64 = ref.to(device, torch.float64).eval()
        ours64 = ours.to(device, torch.float64).eval()
        x64 = x_odd.to(device, torch.float64)
        with torch.no_grad():
            row["rel_f64"] = rel_diff(ours64(x64), ref64(x64))
            if train:
                ref64.train(), ours64.train()
                logits = rel_diff(ours64(x64), ref64(x64))
                stats = _bn_stats_diff(export_mobileformer_official(ours64), ref64.state_dict())
                row["rel_train"] = max(logits, stats)
    except Exception as e:  # report it in the table, go on with the next variant
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    ok32 = all(row[k] <= tol for k in ("rel_224", "rel_odd", "rel_export"))
    ok64 = all(row[k] <= tol64 for k in ("rel_f64", "rel_train") if row[k] is not None)
    row["ok"] = row["params_ours"] == row["params_official"] and ok32 and ok64
    return row


def run(official_dir, names: Optional[Sequence[str]] = None, **kwargs) -> list[dict]:
    """:func:`compare_variant` for each of ``names`` (default: all seven), one row each."""
    module = load_official(official_dir)
    return [compare_variant(module, n, **kwargs) for n in (names or variants())]


def format_table(rows: list[dict], odd_size: Sequence[int] = ODD_SIZE) -> str:
    odd = f"{odd_size[0]}x{odd_size[1]}"
    train = any(r["rel_train"] is not None for r in rows)
    fmt = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
    count = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
    head = ["variant", "params ours", "params official", "rel 224", f"rel {odd}", "rel export",
            "rel f64"] + (["rel train f64"] if train else []) + ["result"]
    body = []
    for r in rows:
        line = [r["variant"], count(r["params_ours"]), count(r["params_official"]), fmt(r["rel_224"]),
                fmt(r["rel_odd"]), fmt(r["rel_export"]), fmt(r["rel_f64"])]
        line += [fmt(r["rel_train"])] if train else []
        body.append(line + ["PASS" if r["ok"] else "FAIL"])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
           "-+-".join("-" * w for w in widths)]
    out += [" | ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in body]
    out += [f"{r['variant']}: {r['error']}" for r in rows if r["error"]]
    return "\n".join(out)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 193x161, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32 (five stride-2 stages), got {text!r}")
    return h, w


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description="Check that our Mobile-Former computes what the official code "
                    "(github.com/AAboys/MobileFormer) computes with the same weights.")
    p.add_argument("--official-dir", default=os.environ.get(ENV_VAR),
                   help=f"clone of AAboys/MobileFormer holding {' and '.join(OFFICIAL_FILES)} "
                        f"(default: ${ENV_VAR})")
    p.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                   help="26m 52m 96m 151m 214m 294m 508m (or full names; default: all)")
    p.add_argument("--odd-size", type=_size, default=ODD_SIZE, metavar="HxW",
                   help="the second, non-square input size (default: 193x161)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default: 0)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="float32: max |ours - official| / max |official| to pass (default: 1e-4)")
    p.add_argument("--tol64", type=float, default=1e-9, help="the same in float64 (default: 1e-9)")
    p.add_argument("--attn-gain", type=float, default=2.0,
                   help="scale of the attention query/key projections (default: 2)")
    p.add_argument("--train", action="store_true",
                   help="also compare a float64 train-mode forward (BatchNorm batch statistics)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)

    if not args.official_dir:
        p.error(f"--official-dir is required (or set ${ENV_VAR}): a clone of "
                "https://github.com/AAboys/MobileFormer")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    if args.train and args.batch < 2:
        p.error("--train needs --batch >= 2 (BatchNorm1d in the head)")
    try:
        check_official_dir(args.official_dir)
        names = [_resolve(v) for v in args.variants] if args.variants else variants()
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda"):  # TF32 would dominate the comparison
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    try:
        module = load_official(args.official_dir)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        rows.append(compare_variant(module, name, odd_size=args.odd_size, batch=args.batch,
                                    seed=args.seed, attn_gain=args.attn_gain, train=args.train,
                                    device=args.device, tol=args.tol, tol64=args.tol64))
        print(f"  {name}: {'PASS' if rows[-1]['ok'] else 'FAIL'}", file=sys.stderr, flush=True)
    print(f"Mobile-Former vs official ({Path(args.official_dir)}): batch {args.batch}, seed {args.seed}, "
          f"attn gain {args.attn_gain:g}; rel = max|ours - official| / max|official|, "
          f"float32 tol {args.tol:g}, float64 tol {args.tol64:g}")
    print(format_table(rows, args.odd_size))
    failed = [r["variant"] for r in rows if not r["ok"]]
    print(f"FAILED: {', '.join(failed)}" if failed else f"all {len(rows)} variants PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
