"""Reading and writing the project's small safetensors files (fusion weights, KBCNet heads) with typed errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from semcorr_ros.errors import WeightsError

__all__ = ["read_safetensors", "write_safetensors"]


def read_safetensors(path: str | os.PathLike, what: str, hint: str = "") -> tuple[dict[str, str],
                                                                                  dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a safetensors file, loaded on the CPU.

    Raises:
        WeightsError: ``"{what} file not found: {path}{hint}"``, or the file cannot be read (corrupt).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} file not found: {path}{hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for corrupted files
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    return meta, tensors


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                      make_parents: bool = False) -> None:
    """Write ``tensors`` with ``metadata`` atomically (a temporary file next to ``path``, then renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
