"""Safe checkpoint reading and writing.

Never unpickles arbitrary objects: ``.pth/.pt/.bin/.ckpt/.pth.tar`` files go through
``torch.load(weights_only=True)``, ``.safetensors`` through safetensors. The one class allowed
besides tensors and plain containers is ``argparse.Namespace`` (an attribute bag; nothing runs
when it is rebuilt), which timm's training script stores as ``args`` in every checkpoint it
writes (``model_best.pth.tar``: the official Mobile-Former weights were trained with it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

PathLike = Union[str, os.PathLike]
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")  # .tar: timm's "*.pth.tar"
# Classes torch.load may rebuild besides tensors and containers (see the module docstring).
SAFE_CLASSES = (argparse.Namespace,)
SAFETENSORS_SUFFIXES = (".safetensors",)
# Wrappers training scripts put around a state dict, in the order we look for them.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is not a state dict, or does not fit the model."""


def unwrap_state_dict(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict inside a checkpoint object (``{"state_dict": ...}``, ``{"model": ...}``
    ..., ``module.`` / ``_orig_mod.`` prefixes removed) and our metadata, if any."""
    return _unwrap(obj, path)


#: ``recipe["task"]`` of a ``mobilenets train`` checkpoint -> what it is, in words
TRAINING_TASKS = {"classify": "classification", "detect": "detection", "segment": "segmentation"}


def training_task_meta(obj: Mapping) -> dict:
    """What a ``mobilenets train`` checkpoint (``{"state_dict", "recipe", "classes", ...}``)
    records about its model, as metadata: ``task`` (``classify`` / ``detect`` / ``segment``),
    ``arch`` (the recipe's model) and ``num_classes``; ``{}`` for any other object. Readers use
    it to say which task a checkpoint is for (:func:`mobilenets.weights.check_checkpoint_task`)."""
    recipe = obj.get("recipe")
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("model"), str):
        return {}
    task = recipe.get("task", "classify")
    meta = {"task": str(task), "arch": recipe["model"]}
    if isinstance(obj.get("classes"), (list, tuple)):
        meta["num_classes"] = str(len(obj["classes"]))
    return meta


def _unwrap(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict]:
    meta: dict = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("mobilenets_meta"), Mapping):
            meta = dict(obj["mobilenets_meta"])
        meta.update(training_task_meta(obj))
        for k in WRAPPER_KEYS:
            inner = obj.get(k)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: contains no tensors (keys: {list(obj)[:8]})")
    # DistributedDataParallel / torch.compile prefixes
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors, meta


def not_a_torch_file(path: PathLike) -> Optional[str]:
    """Why the file at ``path`` cannot be a ``torch.save`` file, from its first bytes (``None``
    when it may be one: a zip archive, or a pickle as old PyTorch versions wrote). Says what it
    looks like instead (text, an HTML page, a Git LFS pointer, a safetensors / ONNX / LiteRT /
    ExecuTorch file, empty), so a bad download is not reported as a refused pickle."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None  # zip (torch >= 1.6) or pickle protocol >= 2 (legacy torch.save)
    if not head:
        return "it is empty"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "it is a safetensors file: give it the .safetensors suffix"
    if head[4:8] == b"TFL3":
        return "it is a LiteRT (.tflite) model, not weights"
    if head[4:8] in (b"ET12", b"ET13", b"ET14"):
        return "it is an ExecuTorch (.pte) program, not weights"
    text = head.lstrip()
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (run git lfs pull)"
    if text[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a failed download?)"
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8].hex(' ')}, not a zip archive or a pickle"
    if all(c.isprintable() or c in "\r\n\t" for c in sample):
        return f"it is a text file (it starts with {sample[:24]!r})"
    return f"it starts with the bytes {head[:8].hex(' ')}, not a zip archive or a pickle"


def _check_torch_file(p: Path) -> None:
    """:class:`CheckpointError` naming what the file is, when it cannot be a ``torch.save`` file."""
    why = not_a_torch_file(p)
    if why:
        raise CheckpointError(f"{p}: not a PyTorch checkpoint (corrupt, or another kind of file): {why}. "
                              f"Expected a file written by torch.save (.pth / .pt / .bin / .ckpt) or a "
                              f".safetensors file")


def read_checkpoint(path: PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a state dict and our metadata (empty for foreign files) from a file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unknown suffix, corrupt file, or a pickle that is not plain tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd = load_file(str(p), device="cpu")
            from safetensors import safe_open
            with safe_open(str(p), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
        return _unwrap(sd, str(p))[0], meta
    if suffix in TORCH_SUFFIXES:
        _check_torch_file(p)
        allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        try:
            with allow(list(SAFE_CLASSES)) if allow else contextlib.nullcontext():
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{p}: refusing to unpickle objects other than tensors and plain containers "
                f"(nothing in it was run): {refused_object(str(e))}; re-save the weights as a "
                f"plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors") from None
        except Exception as e:  # noqa: BLE001 - a corrupt archive surfaces as any error of the unpickler
            # (KeyError from its memo, AssertionError, struct.error, EOFError, BadZipFile, ...)
            raise CheckpointError(f"{p}: corrupt or not a PyTorch checkpoint "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
        return _unwrap(obj, str(p))
    raise CheckpointError(f"{p}: unknown checkpoint type {suffix!r}; expected one of "
                          f"{TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}")


def refused_object(torch_message: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to load with
    ``weights_only=False`` (which would run the code in the file)."""
    for line in torch_message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return "an object that is not a tensor or a plain container"


_HF = re.compile(r"^hf[-_]hub:(?P<repo>[\w.\-]+/[\w.\-]+)(?:@(?P<rev>[\w.\-/]+))?$")


def resolve_hf_hub(spec: str, filenames: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")) -> Path:
    """Resolve ``hf-hub:org/name[@revision]`` to a local file through huggingface_hub.

    The local cache is used first, so a cached repo works offline (``HF_HUB_OFFLINE=1``).
    """
    m = _HF.match(spec)
    if not m:
        raise ValueError(f"expected 'hf-hub:org/name' or 'hf-hub:org/name@revision', got {spec!r}")
    from ..extras import require
    hf_hub_download = require("huggingface_hub", "loading 'hf-hub:' weights").hf_hub_download
    errors = []
    for fn in filenames:
        for local_only in (True, False):
            try:
                return Path(hf_hub_download(m["repo"], fn, revision=m["rev"], local_files_only=local_only))
            except Exception as e:  # noqa: BLE001 - hub raises many types; we report them all
                errors.append(f"{fn} ({'cache' if local_only else 'hub'}): {type(e).__name__}")
    raise CheckpointError(f"{spec}: none of {filenames} found in the Hugging Face cache or hub "
                          f"({'; '.join(errors)})")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: no half-written file on failure.

    The file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` less the
    umask; an existing file keeps its own), not the temporary file's private ``0o600``, so others
    can read a shared run folder as with any file the user writes."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    mode = p.stat().st_mode & 0o777 if p.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return p


def write_checkpoint(state_dict: Mapping[str, torch.Tensor], path: PathLike,
                     meta: Optional[Mapping[str, str]] = None) -> Path:
    """Write a state dict as ``.safetensors`` (by suffix) or a ``.pth`` file, atomically."""
    p = Path(path)
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {k: str(v) for k, v in (meta or {}).items()}
    if p.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import save_file
        return atomic_write(p, lambda t: save_file(sd, t, metadata=meta))
    if p.suffix.lower() in TORCH_SUFFIXES:
        return atomic_write(p, lambda t: torch.save({"state_dict": sd, "mobilenets_meta": meta}, t))
    raise CheckpointError(f"{p}: unknown checkpoint type {p.suffix!r}; use .safetensors or .pth")
