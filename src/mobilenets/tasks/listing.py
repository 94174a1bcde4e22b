"""What ``mobilenets list`` prints for a model, fast: parameters and MACs, as
:func:`mobilenets.count_params` and :func:`~mobilenets.analysis.profile` (classification, 224) /
:func:`mobilenets.tasks.cost.task_macs` (detection at 320, segmentation at 520) count them on a
freshly built model, with shortcuts that change no number (bar one RNG accident, below):

* **no random initialisation.** A model is built once (not once for the parameters and again
  for the MACs), with every random fill (``uniform_``, ``normal_``, ... : most of the build time
  of a large model) replaced by a zero fill (:class:`zero_init`). Parameter counts and the MACs
  of a forward pass depend on shapes only, except the proposals a Faster R-CNN's box head runs
  on: with zero weights always the RPN's ``post_nms_top_n`` cap (150 at 320, 1000 at 800); with
  random weights mostly the cap, but not for every state of the global RNG (a full ``list --task
  detection`` used to show one ``_320_fpn`` model with 143 proposals, 100 M MACs fewer than when
  listed alone). ``tests/test_listing.py`` compares both ways, box head at the cap, over the
  registry.
* **no arithmetic in zero-weight products.** A convolution or matrix product whose weight is
  all zeros outputs its bias (:class:`_ZeroProducts`): the forward pass runs every op, the
  counters see every op and its output shape, but a detector at 800 px or a segmenter at 520
  px no longer spends seconds multiplying zeros.
* **worker processes.** The models not in the cache are counted in forked processes (Linux; one
  per CPU, at most 4), one intra-op thread each.
* **a per-version cache** of the counts, ``$XDG_CACHE_HOME/mobilenets/<version>/costs-<key>.json``
  (``~/.cache`` without ``XDG_CACHE_HOME``): ``<key>`` is a hash of the package's source files
  and the torch / torchvision versions, so an edited architecture or another torch never reads
  stale counts (the caches of the last few other source trees of a version are kept, older ones
  removed). Entries are keyed by task, name and input size; the file is replaced atomically
  (a concurrent ``list`` loses at most its own additions), and an unreadable or unwritable cache
  is ignored: the counts are then computed each time, as before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..data import default_workers
from .cost import COST_SIZE

__all__ = ["COST_SIZES", "cache_file", "model_costs", "zero_init"]

#: the input size each task's MACs are counted at (``mobilenets list``'s ``MACs @<size>`` column):
#: 224 for classification, the tasks' :data:`~mobilenets.tasks.cost.COST_SIZE`
COST_SIZES = {"classification": 224, **COST_SIZE}

_RANDOM_FILLS = {torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.bernoulli_,
                 torch.Tensor.random_, torch.Tensor.exponential_, torch.Tensor.cauchy_,
                 torch.Tensor.log_normal_, torch.Tensor.geometric_}
# torch.nn.init's random initialisers hand a mode the whole call (they check has_torch_function),
# and the fills they then make run with the mode off: they are caught as a whole
_RANDOM_FILLS |= {getattr(torch.nn.init, f) for f in (
    "uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
    "xavier_normal_", "orthogonal_", "sparse_")}


class zero_init(TorchFunctionMode):
    """Within this context, in-place random fills (``Tensor.uniform_``, ``normal_`` ..., what
    ``torch.nn.init`` and ``reset_parameters`` use) fill with zeros instead: a model builds
    without the cost of drawing its random weights (and without touching the global RNG).

    >>> with zero_init():
    ...     m = torch.nn.Linear(4, 2)
    >>> bool(m.weight.eq(0).all())
    True
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_FILLS:
            with torch.no_grad():  # torch.nn.init passes its tensor by keyword, a method as self
                return (args[0] if args else kwargs["tensor"]).zero_()
        return func(*args, **kwargs)


_aten = torch.ops.aten


class _ZeroProducts(TorchDispatchMode):
    """Convolutions and matrix products with an all-zero weight (every weight of a
    :class:`zero_init` model) are not computed: their output is their bias, exactly what the
    kernel would give on finite inputs. The counters above this mode (``profile``'s,
    ``FlopCounterMode``) still see every op with its true output shape, so the counts are
    unchanged; what goes is the arithmetic (most of a detector's time at 800 px)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not kwargs:
            if func is _aten.convolution.default and _is_zero(args[1]):
                return _filled(_conv_shape(*args[:2], *args[3:]), args[0], args[2], channel_dim=1)
            if func in (_aten.mm.default, _aten.bmm.default) and (_is_zero(args[0]) or _is_zero(args[1])):
                return _filled((*args[0].shape[:-1], args[1].shape[-1]), args[0], None)
            if func is _aten.addmm.default and (_is_zero(args[1]) or _is_zero(args[2])):
                return _filled((args[1].shape[0], args[2].shape[1]), args[1], args[0])
        return func(*args, **kwargs)


def _is_zero(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.any())


def _conv_shape(x, w, stride, padding, dilation, transposed, output_padding, groups) -> tuple:
    """The output shape of ``aten.convolution``."""
    n = len(x.shape) - 2

    def per_dim(v):
        return list(v) * n if len(v) == 1 else list(v)

    stride, padding, dilation, output_padding = map(per_dim, (stride, padding, dilation, output_padding))
    if transposed:  # weight (Cin, Cout / groups, k...)
        size = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, k, s, p, d, op in
                zip(x.shape[2:], w.shape[2:], stride, padding, dilation, output_padding)]
        return (x.shape[0], w.shape[1] * groups, *size)
    size = [(i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d in
            zip(x.shape[2:], w.shape[2:], stride, padding, dilation)]
    return (x.shape[0], w.shape[0], *size)


def _filled(shape: tuple, like: torch.Tensor, bias, channel_dim: Optional[int] = None) -> torch.Tensor:
    """A ``shape`` tensor (``like``'s dtype and device; channels-last when ``like`` is) holding
    ``bias`` (zeros without): what a conv / matrix product gives when its weight is zero and its
    input finite."""
    cl = len(shape) == 4 and like.dim() == 4 and not like.is_contiguous() and \
        like.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty(shape, dtype=like.dtype, device=like.device,
                      memory_format=torch.channels_last if cl else torch.contiguous_format)
    if bias is None:
        return out.zero_()
    if channel_dim is not None:  # a conv's per-channel bias
        bias = bias.reshape([1] * channel_dim + [-1] + [1] * (len(shape) - channel_dim - 1))
    return out.copy_(bias.expand(shape))


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    """A hash of everything the counts depend on: this package's sources, torch, torchvision."""
    from importlib import metadata

    from ..version import __version__

    try:  # the installed version, without importing torchvision (a second or more)
        tv = metadata.version("torchvision")
    except metadata.PackageNotFoundError:  # pragma: no cover - torchvision is a dependency
        tv = "none"
    h = hashlib.sha256(f"{__version__}|{torch.__version__}|{tv}".encode())
    root = Path(__file__).resolve().parent.parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_file() -> Path:
    """The cost cache of this version and source tree (it may not exist yet)."""
    from ..version import __version__

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mobilenets" / __version__ / f"costs-{_fingerprint()}.json"


_KEEP_OTHER_CACHES = 3


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    costs = data.get("costs") if isinstance(data, dict) else None
    if not isinstance(costs, dict):
        return {}
    return {k: v for k, v in costs.items()
            if isinstance(v, dict) and all(isinstance(v.get(f), int) for f in v) and "params" in v}


def _save(path: Path, new: dict) -> None:
    """Merge ``new`` into the cache file, atomically; any OS error leaves the cache as it was."""
    from ..weights.io import atomic_write

    try:
        costs = _load(path)
        for k, v in new.items():
            costs[k] = {**costs.get(k, {}), **v}
        text = json.dumps({"fingerprint": _fingerprint(), "costs": costs}, separators=(",", ":"), sort_keys=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        # other source trees' caches of this version: the newest few stay (two checkouts in turn)
        others = sorted((p for p in path.parent.glob("costs-*.json") if p != path),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for old in others[_KEEP_OTHER_CACHES:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _count(name: str, task: str, macs: bool) -> dict:
    """Build ``name`` (random fills as zeros) and count its parameters and, with ``macs``, the
    MACs at its task's :data:`COST_SIZES` size."""
    from ..factory import count_params, create_model

    with zero_init():
        model = create_model(name)
    out = {"params": count_params(model)}
    if macs:
        size = COST_SIZES[task]
        with _ZeroProducts():  # below the counters' own modes: they see every op
            if task == "classification":
                from ..analysis.profile import profile
                out["macs"] = profile(model, (size, size)).macs
            else:
                from .cost import task_macs
                out["macs"] = task_macs(model, task, size)
    return out


def _one_thread() -> None:
    torch.set_num_threads(1)


def _count_all(names: list, task: str, macs: bool, workers: int) -> list:
    """:func:`_count` of each name, in order; in ``workers`` forked processes when there are
    several names to count (and ``fork`` is how this platform starts processes: Linux)."""
    count = functools.partial(_count, task=task, macs=macs)
    if workers > 1 and len(names) > 2 and sys.platform.startswith("linux"):
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(workers, len(names)), initializer=_one_thread) as pool:
            return pool.map(count, names, chunksize=1)
    threads = torch.get_num_threads()
    # one thread: the forward passes are many small ops, which torch's intra-op threads slow
    # down (by 10x and more when another process holds the other cores)
    torch.set_num_threads(1)
    try:
        return [count(n) for n in names]
    finally:
        torch.set_num_threads(threads)


def model_costs(names: Iterable[str], task: str = "classification", macs: bool = True,
                cache: bool = True, workers: Optional[int] = None) -> dict:
    """``{name: {"params": int, "macs": int}}`` for registered models of ``task`` (``"macs"``
    only with ``macs``): the numbers :func:`mobilenets.count_params` and the MAC counters give on
    a randomly initialised model, from the cache when it has them (see the module doc).

    Args:
        names: registry names, all of ``task``.
        task: ``classification`` (MACs at 224), ``detection`` (320) or ``segmentation`` (520).
        macs: also count MACs (a forward pass per model not in the cache).
        cache: read and update the on-disk cache (False: count every model).
        workers: processes counting the models not in the cache (default: the CPUs this
            process may use, at most 4; 1: this process). The counts are the same.
    """
    if task not in COST_SIZES:
        raise ValueError(f"task must be one of {sorted(COST_SIZES)}, got {task!r}")
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1 (1: this process), got {workers!r}")
    names = list(names)
    path: Optional[Path] = cache_file() if cache else None
    known = _load(path) if path is not None else {}
    fields = ("params", "macs") if macs else ("params",)
    out, todo = {}, []
    for n in names:
        have = known.get(f"{task}/{n}@{COST_SIZES[task]}", {})
        if all(f in have for f in fields):
            out[n] = {f: have[f] for f in fields}
        else:
            todo.append(n)
    counted = dict(zip(todo, _count_all(todo, task, macs, workers)))
    if counted and path is not None:
        _save(path, {f"{task}/{n}@{COST_SIZES[task]}": c for n, c in counted.items()})
    return {n: out.get(n) or counted[n] for n in names}
