"""Safe loading of pretrained weights: plain state_dicts only, strict key and shape checks.

Two file kinds are accepted:

- PyTorch checkpoints (``.pth``, ``.pt``, ``.bin``, ``.ckpt``), read with ``torch.load(weights_only=True,
  map_location="cpu")``: only tensors and plain containers are unpickled, never arbitrary Python objects
  (a saved ``nn.Module`` or a custom class is refused with :class:`WeightsError`).
- ``.safetensors`` files.

Everything that goes wrong raises :class:`~semcorr_ros.errors.WeightsError` with the path and the reason.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from semcorr_ros.errors import WeightsError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
#: Keys under which training scripts commonly nest the real state_dict.
WRAPPER_KEYS = ("state_dict", "model", "teacher", "module")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_MAX_LISTED = 5


def _few(items: list[str]) -> str:
    """``'a', 'b', ... (+N more)`` for error messages."""
    shown = ", ".join(repr(s) for s in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a plain state_dict (``name -> Tensor``) from a local file, on the CPU.

    Common wrappers (``{"state_dict": {...}}``, ``{"model": {...}}``, ``{"teacher": {...}}``) are unwrapped
    when the top level is not itself a dict of tensors and the wrapped value is one.

    Args:
        path: a ``.pth``/``.pt``/``.bin``/``.ckpt`` (torch) or ``.safetensors`` file.

    Returns:
        ``dict[str, Tensor]`` with CPU tensors.

    Raises:
        WeightsError: missing file, unknown suffix, unreadable or corrupted file, a pickle holding arbitrary
            Python objects (not a plain state_dict), or non-tensor values.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"weights file not found: {str(p)!r}")
    if not p.is_file():
        raise WeightsError(f"weights path is not a file: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        obj: object = _load_safetensors(p)
    elif suffix in TORCH_SUFFIXES:
        obj = _load_torch(p)
    else:
        raise WeightsError(f"unsupported weights file suffix {suffix!r} for {str(p)!r}; "
                           f"expected one of {', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}")
    return _as_tensor_dict(obj, p)


def _load_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: all mean "cannot read this file"
        raise WeightsError(f"cannot read safetensors file {str(p)!r} (corrupted or not safetensors): "
                           f"{exc}") from exc


def _load_torch(p: Path) -> object:
    try:
        with p.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {str(p)!r}: {exc}") from exc
    if head[:4] != _ZIP_MAGIC and (not head or head[0] != _PICKLE_PROTO):
        raise WeightsError(f"{str(p)!r} is not a PyTorch checkpoint (neither a torch zip archive nor a pickle); "
                           "the file is corrupted or of another format")
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if m:
            raise WeightsError(
                f"{str(p)!r} is not a plain state_dict: it contains a pickled Python object ({m.group(1)}), which "
                "safe loading (torch.load(weights_only=True)) refuses to unpickle because it could run arbitrary "
                "code. Re-save only the tensors, e.g. torch.save(model.state_dict(), path)") from exc
        raise WeightsError(f"cannot unpickle {str(p)!r} with torch.load(weights_only=True): the file is corrupted "
                           f"or not a plain state_dict ({str(exc).strip().splitlines()[-1][:200]})") from exc
    except Exception as exc:  # RuntimeError from a broken zip, EOFError, ...
        raise WeightsError(f"cannot read PyTorch checkpoint {str(p)!r} (corrupted or truncated?): "
                           f"{str(exc).splitlines()[0][:300]}") from exc


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _as_tensor_dict(obj: object, p: Path) -> dict[str, torch.Tensor]:
    if _is_tensor_dict(obj):
        return dict(obj)  # type: ignore[arg-type]
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return dict(obj[key])
        bad = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if not obj:
            raise WeightsError(f"{str(p)!r} holds an empty dict, not a state_dict")
        raise WeightsError(f"{str(p)!r} is not a plain state_dict of tensors: non-tensor values at {_few(bad)} "
                           f"(and no nested state_dict under {', '.join(WRAPPER_KEYS)})")
    raise WeightsError(f"{str(p)!r} holds a {type(obj).__name__}, not a state_dict (dict of name -> tensor)")


def check_state_dict(expected: Mapping[str, torch.Size | tuple[int, ...]], state_dict: Mapping[str, torch.Tensor],
                     what: str = "model", strict: bool = True) -> None:
    """Compare a state_dict with the expected ``name -> shape`` table.

    Raises:
        WeightsError: listing (a few of) the missing keys, unexpected keys (only when ``strict``) and shape
            mismatches, with their counts.
    """
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
                  for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if problems:
        raise WeightsError(f"weights do not fit {what}: " + "; ".join(problems))


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
              what: str | None = None, assign: bool = False):
    """Load ``state_dict`` into ``module`` after checking keys and shapes.

    Args:
        module: the target module (parameters and persistent buffers).
        state_dict: ``name -> Tensor``.
        strict: when True, missing and unexpected keys are errors; shape mismatches always are.
        what: name used in error messages (default: the module's class name).
        assign: make the module's parameters *be* the given tensors (no copy); lets a module built on the
            ``meta`` device be filled without initialising it first.

    Returns:
        torch's ``_IncompatibleKeys(missing_keys, unexpected_keys)``.

    Raises:
        WeightsError: with a few of the missing/unexpected keys and shape mismatches.
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_state_dict(expected, state_dict, what or type(module).__name__, strict=strict)
    try:
        return module.load_state_dict(dict(state_dict), strict=strict, assign=assign)
    except RuntimeError as exc:  # dtype/size problems that slipped through
        raise WeightsError(f"cannot load weights into {what or type(module).__name__}: {exc}") from exc
