"""Runtime of each feature source: PyTorch, or the source's own ``forward_features`` compiled with OpenVINO.

``EngineConfig.runtime`` chooses it once at start-up (read-only afterwards):

- ``torch``: the source runs as a PyTorch module (bfloat16 on CPUs with native bf16, see ``cpu_bf16``).
- ``openvino``: ``forward_features`` (the model part, after the resize and before the L2 normalisation) is
  converted once with ``openvino.convert_model(module, example_input=x)`` from the float32 weights and compiled
  for the CPU with ``INFERENCE_PRECISION_HINT`` ``bf16`` where the CPU has native bf16 and ``cpu_bf16`` is on
  (else ``f32``), the engine's thread count (``torch.get_num_threads()``) and the latency hint. CPU only.
- ``auto``: per source, by the rule of :func:`resolve_runtime` (measured on 2 AMD EPYC cores with bf16:
  ViT-S@224 36 ms OpenVINO vs 64 ms torch, EfficientNet-Lite2@320 39 ms vs 29 ms): OpenVINO for the DINOv2 (ViT)
  sources on the CPU, torch for EfficientNet-Lite2, Stable Diffusion and on CUDA; torch when OpenVINO is not
  installed (logged at info level).

The converted model (OpenVINO IR) and OpenVINO's compiled blob are cached on disk under
``$SEMCORR_CACHE_DIR/openvino`` (default ``~/.cache/semcorr_ros/openvino``), one folder per key: a hash of the
source's name, class, layers, input size, a fingerprint of its state_dict (every tensor's bytes: a new weights
file, random weights or another layer choice gives another key), the precision and the OpenVINO version. A
changed key converts again; a folder per key is never overwritten.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from semcorr_ros.config import RUNTIMES
from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["RUNTIMES", "OPENVINO_REQUIREMENT", "openvino_available", "resolve_runtime", "cache_root",
           "cache_key", "OpenVINOFeatures", "compile_openvino", "apply_runtimes"]

#: The pinned requirement named in errors (requirements.txt has the same pin).
OPENVINO_REQUIREMENT = "openvino==2026.4.1"


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, name: str, device: torch.device) -> str:
    """``torch`` or ``openvino`` for the source ``name`` (``<name>@<scale>`` too) under the configured ``runtime``.

    ``auto`` rule: ``openvino`` for DINOv2 (ViT) sources on the CPU when OpenVINO is installed; ``torch`` for
    everything else (EfficientNet-Lite2 is faster in torch bf16; CUDA devices and Stable Diffusion always torch).

    Raises:
        ConfigError: ``openvino`` requested but not installed, or with a CUDA device.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "torch":
        return "torch"
    if runtime == "openvino":
        if device.type != "cpu":
            raise ConfigError(f"runtime 'openvino' runs the sources on the CPU, but the device is {device}: use "
                              "device 'cpu', or runtime 'torch' or 'auto' on CUDA")
        if not openvino_available():
            raise ConfigError(f"runtime 'openvino' needs the openvino package: pip install {OPENVINO_REQUIREMENT} "
                              "(or use runtime 'torch' or 'auto')")
        return "openvino"
    if device.type != "cpu" or not name.startswith("dinov2"):
        return "torch"
    if not openvino_available():
        log.info("runtime auto: openvino is not installed, %s runs in torch (pip install %s for the faster "
                 "OpenVINO path)", name, OPENVINO_REQUIREMENT)
        return "torch"
    return "openvino"


def cache_root() -> Path:
    """``$SEMCORR_CACHE_DIR/openvino``, default ``~/.cache/semcorr_ros/openvino``."""
    base = os.environ.get("SEMCORR_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "semcorr_ros") / "openvino"


def _state_fingerprint(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict(keep_vars=False).items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def cache_key(source: FeatureSource, precision: str, version: str | None = None) -> str:
    """Cache folder name of ``source`` compiled at ``precision`` (see the module doc for what it covers)."""
    if version is None:
        import openvino

        version = openvino.__version__
    parts = [type(source).__module__, type(source).__qualname__, source.name, str(source.input_size),
             ",".join(source.layer_names), _state_fingerprint(source), precision, version]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
    return f"{source.name.replace('@', '_at_')}-{source.input_size}-{precision}-{digest}"


class _Features(nn.Module):
    """``forward_features`` as a module returning a tuple (what ``convert_model`` traces)."""

    def __init__(self, source: FeatureSource) -> None:
        super().__init__()
        self.source = source

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.source.forward_features(x))


class OpenVINOFeatures:
    """A compiled ``forward_features``: ``[B, 3, S, S]`` float -> list of float32 ``[B, C, h, w]`` maps.

    Compiled for batch 1 (the latency path); a larger batch runs image by image.

    Attributes:
        precision: ``bf16`` or ``f32``.
        cache_dir: the cache folder of this model.
        converted: whether this start-up converted the model (False: loaded from the cache).
    """

    def __init__(self, compiled, precision: str, cache_dir: Path, converted: bool) -> None:
        self.compiled = compiled
        self.precision = precision
        self.cache_dir = cache_dir
        self.converted = converted
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.detach().float().cpu().contiguous().numpy()
        per_image = []
        with self._lock:
            for i in range(x.shape[0]):
                out = self._request.infer([x[i:i + 1]])
                per_image.append([torch.from_numpy(out[o].copy()) for o in self.compiled.outputs])
        if len(per_image) == 1:
            return per_image[0]
        return [torch.cat(ms) for ms in zip(*per_image)]


def compile_openvino(source: FeatureSource, *, precision: str, threads: int,
                     root: Path | None = None) -> OpenVINOFeatures:
    """Convert (or load from the cache) and compile ``source.forward_features`` for the CPU.

    ``source`` must hold float32 weights on the CPU.
    """
    import openvino as ov

    key_dir = (root or cache_root()) / cache_key(source, precision, ov.__version__)
    xml = key_dir / "model.xml"
    core = ov.Core()
    converted = not xml.is_file()
    if converted:
        s = source.input_size
        with torch.no_grad():
            model = ov.convert_model(_Features(source).eval(), example_input=torch.rand(1, 3, s, s))
        key_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=key_dir.name + ".", dir=key_dir.parent))
        try:
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            try:
                tmp.rename(key_dir)
            except OSError:  # another process wrote the same key meanwhile: keep theirs
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("openvino: converted %s (cached in %s)", source.name, key_dir)
    model = core.read_model(str(xml)) if xml.is_file() else model
    blob_dir = key_dir / "blob"
    blob_dir.mkdir(parents=True, exist_ok=True)
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(blob_dir)})
    return OpenVINOFeatures(compiled, precision, key_dir, converted)


def openvino_precision(cpu_bf16: bool) -> str:
    """``bf16`` when ``cpu_bf16`` and the CPU has native bf16 (as for the torch path), else ``f32``."""
    from semcorr_ros.engine.features import preferred_cpu_dtype

    return "bf16" if cpu_bf16 and preferred_cpu_dtype() == torch.bfloat16 else "f32"


def apply_runtimes(sources: Sequence[FeatureSource], runtime: str, device: torch.device, *,
                   cpu_bf16: bool = True, torch_dtype: torch.dtype | None = None,
                   threads: int | None = None) -> dict[str, str]:
    """Resolve each source's runtime and set it up in place: ``openvino`` ones compiled (their ``runner``) from
    their float32 weights, ``torch`` ones cast to ``torch_dtype`` when given.

    Returns:
        source name -> ``torch`` or ``openvino``.
    """
    chosen = {}
    precision = openvino_precision(cpu_bf16)
    for src in sources:
        which = resolve_runtime(runtime, src.name, device)
        chosen[src.name] = which
        if which == "openvino":
            src.float()  # OpenVINO applies the precision hint itself
            src.runner = compile_openvino(src, precision=precision, threads=threads or torch.get_num_threads())
        elif torch_dtype is not None:
            src.to(torch_dtype)
    return chosen
