"""Stable Diffusion UNet decoder features (optional source ``sd``; GPU only; needs ``diffusers``).

The image (RGB in [0, 1], resized to ``S x S``) is encoded by the VAE (posterior mean, times the VAE's scaling
factor), noised to a fixed timestep ``t`` (default 261) with one fixed noise sample (seed 0, the same for every
image), and passed once through the UNet with an empty prompt: the text encoder's embedding of ``""`` when the
model folder has ``text_encoder/`` and ``tokenizer/``, else zeros ``[1, 77, cross_attention_dim]``. The maps are
the outputs of the UNet decoder blocks ``up_blocks[k]`` (after their upsampler), captured with forward hooks;
the UNet stops after the deepest selected block.

**Layer convention.** Layer ``k`` is ``unet.up_blocks[k]``, 0-based (4 blocks in SD 1.x/2.x); default
``(1, 2)``. For SD 1.5 at the default ``S = 512`` (latent 64x64), ``up_blocks[1]`` gives ``[B, 1280, 32, 32]``
(``S/16``) and ``up_blocks[2]`` ``[B, 640, 64, 64]`` (``S/8``); every map is resized (bilinear, antialiased)
to the size of the coarsest selected one, so the default output is ``[B, 1280, S/16, S/16]`` and
``[B, 640, S/16, S/16]``. ``S`` must be a multiple of the model's total stride (VAE factor x UNet
downsamplings = 64 for SD); its default is the model's own resolution (``unet sample_size x`` VAE factor:
512 for SD 1.5, 768 for SD 2.1).

Weights: a user-given local diffusers model folder (``unet/`` and ``vae/`` with ``config.json`` and weights;
optionally ``text_encoder/``, ``tokenizer/``, ``scheduler/``), loaded with
``from_pretrained(..., local_files_only=True)``; nothing is downloaded. Without ``scheduler/`` the SD noise schedule
(scaled linear, betas 0.00085..0.012, 1000 steps) is used. The VAE decoder is dropped after loading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.features.effnet import validate_input_size, validate_layers
from semcorr_ros.errors import ConfigError, WeightsError

NAME = "sd"
DIFFUSERS_PIN = "diffusers==0.42.1"
DEFAULT_LAYERS = (1, 2)
DEFAULT_TIMESTEP = 261
NOISE_SEED = 0
PROMPT_LENGTH = 77
MAX_INPUT_SIZE = 2048
_SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


class _Stop(Exception):
    """Raised by the hook of the deepest selected block to skip the rest of the UNet."""


def _read_config(folder: Path, sub: str) -> dict:
    path = folder / sub / "config.json"
    if not path.is_file():
        raise WeightsError(f"{NAME}: {str(folder)!r} is not a diffusers Stable Diffusion folder: {sub}/config.json "
                           f"is missing (expected {sub}/ with config.json and its weights)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{NAME}: cannot read {str(path)!r}: {exc}") from exc


def _import_diffusers():
    try:
        import diffusers
    except ImportError as exc:
        raise ConfigError(f"the {NAME} source needs the optional dependency diffusers: pip install {DIFFUSERS_PIN} "
                          "(or pip install -r requirements-sd.txt)") from exc
    return diffusers


class StableDiffusionSource(FeatureSource):
    """Multi-layer Stable Diffusion UNet decoder features.

    Args:
        weights: path of a local diffusers model folder (e.g. ``/models/stable-diffusion-v1-5``).
        layers: 0-based ``unet.up_blocks`` indices, default ``(1, 2)``.
        input_size: square input side, a multiple of the model's stride; default the model's resolution.
        timestep: diffusion timestep of the added noise, in ``[0, num_train_timesteps)`` (default 261).
        allow_cpu: build and run without CUDA (internal: tests with tiny random models).

    Raises:
        ConfigError: no CUDA (unless ``allow_cpu``), diffusers not installed, bad layers/input size/timestep.
        WeightsError: no path, missing folder or sub-folder, weights that diffusers cannot load.
    """

    name = NAME

    def __init__(self, weights: str | os.PathLike | None = None, layers: Sequence[int] | None = None,
                 input_size: int | None = None, *, timestep: int = DEFAULT_TIMESTEP,
                 allow_cpu: bool = False) -> None:
        super().__init__()
        self.allow_cpu = bool(allow_cpu)
        if not self.allow_cpu and not torch.cuda.is_available():
            raise ConfigError(f"the {NAME} source needs a CUDA device; none is available (this source "
                              "is supported on GPUs only); use another --backbone")
        if weights is None:
            raise WeightsError(f"{NAME} needs a local diffusers model folder (e.g. --weights "
                               f"{NAME}=/models/stable-diffusion-v1-5 with unet/ and vae/); nothing is downloaded")
        folder = Path(weights).expanduser()
        if folder.is_file():
            raise WeightsError(f"{NAME}: {str(folder)!r} is a file; expected a diffusers model folder (unet/, vae/); "
                               "save a single-file checkpoint in that layout first (diffusers' save_pretrained)")
        if not folder.is_dir():
            raise WeightsError(f"{NAME}: model folder not found: {str(folder)!r}")
        unet_cfg, vae_cfg = _read_config(folder, "unet"), _read_config(folder, "vae")
        n_up = len(unet_cfg.get("up_block_types", ())) or 4
        self.layers = validate_layers(layers, n_up, DEFAULT_LAYERS, NAME)
        vae_factor = 2 ** (len(vae_cfg.get("block_out_channels", ())) or 4) // 2
        stride = vae_factor * 2 ** (len(unet_cfg.get("down_block_types", ())) or 4) // 2
        sample = unet_cfg.get("sample_size", 64)
        default = (sample if isinstance(sample, int) else 64) * vae_factor
        default = max(stride, default - default % stride)
        self.input_size = validate_input_size(input_size, default, stride, stride, MAX_INPUT_SIZE, NAME)
        self.layer_names = tuple(f"up{k}" for k in self.layers)

        diffusers = _import_diffusers()
        from diffusers.utils import is_accelerate_available

        fast = dict(local_files_only=True, low_cpu_mem_usage=is_accelerate_available())  # no warning without it
        unet = _load(lambda: diffusers.UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", **fast), folder, "unet")
        vae = _load(lambda: diffusers.AutoencoderKL.from_pretrained(
            folder, subfolder="vae", **fast), folder, "vae")
        vae.decoder = None  # only the encoder is used
        if hasattr(vae, "post_quant_conv"):
            vae.post_quant_conv = None
        if (folder / "scheduler").is_dir():
            sched = _load(lambda: diffusers.DDPMScheduler.from_pretrained(
                folder, subfolder="scheduler", local_files_only=True), folder, "scheduler")
        else:
            sched = diffusers.DDPMScheduler(**_SD_SCHEDULE)
        n_steps = len(sched.alphas_cumprod)
        if isinstance(timestep, bool) or not isinstance(timestep, int) or not 0 <= timestep < n_steps:
            raise ConfigError(f"{NAME} timestep must be an int in [0, {n_steps}), got {timestep!r}")
        self.timestep = timestep
        acp = float(sched.alphas_cumprod[timestep])
        self.signal, self.noise_scale = acp ** 0.5, (1.0 - acp) ** 0.5
        self.unet, self.vae = unet.eval(), vae.eval()
        self.register_buffer("prompt", self._empty_prompt(folder, unet.config.cross_attention_dim), persistent=False)
        self._noise: dict[tuple, torch.Tensor] = {}
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    @torch.no_grad()
    def _empty_prompt(folder: Path, dim) -> torch.Tensor:
        """``[1, L, D]`` text-encoder embedding of ``""`` when the folder has one, else zeros ``[1, 77, D]``."""
        if not ((folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir()):
            if not isinstance(dim, int):
                raise WeightsError(f"{NAME}: cross_attention_dim {dim!r} is not an int; this UNet needs its "
                                   "text_encoder/ and tokenizer/")
            return torch.zeros(1, PROMPT_LENGTH, dim)
        from transformers import CLIPTextModel, CLIPTokenizer

        tok = _load(lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True),
                    folder, "tokenizer")
        enc = _load(lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True),
                    folder, "text_encoder")
        ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return enc.eval()(ids)[0].float()

    def _fixed_noise(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The same seeded ``[1, C, h, w]`` noise for every call (drawn on the CPU, cached per shape/device)."""
        key = (shape, like.device, like.dtype)
        if key not in self._noise:
            gen = torch.Generator().manual_seed(NOISE_SEED)
            self._noise[key] = torch.randn(shape, generator=gen).to(like.device, like.dtype)
        return self._noise[key]

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` RGB in [0, 1] -> one ``[B, C_k, h, w]`` map per layer (``h = w`` of the coarsest)."""
        if images.device.type != "cuda" and not self.allow_cpu:
            raise ConfigError(f"the {NAME} source needs a CUDA device; it was placed on {images.device.type!r} "
                              "(use --device cuda or another --backbone)")
        dtype = self.unet.conv_in.weight.dtype
        x = images.to(dtype) * 2.0 - 1.0
        latents = self.vae.encode(x).latent_dist.mean
        shift = getattr(self.vae.config, "shift_factor", None)
        latents = (latents - (shift or 0.0)) * self.vae.config.scaling_factor
        noise = self._fixed_noise((1, *latents.shape[1:]), latents)
        noisy = self.signal * latents + self.noise_scale * noise
        feats: dict[int, torch.Tensor] = {}
        last = max(self.layers)

        def hook(k: int):
            def fn(_module, _inputs, output):
                feats[k] = output
                if k == last:
                    raise _Stop
            return fn

        handles = [self.unet.up_blocks[k].register_forward_hook(hook(k)) for k in self.layers]
        try:
            prompt = self.prompt.to(dtype).expand(noisy.shape[0], -1, -1)
            self.unet(noisy, self.timestep, encoder_hidden_states=prompt)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        size = min(feats[k].shape[-1] for k in self.layers)
        return [feats[k] if feats[k].shape[-1] == size else
                F.interpolate(feats[k].float(), size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True) for k in self.layers]


def _load(fn, folder: Path, what: str):
    """Run a ``from_pretrained`` call, turning its errors into :class:`WeightsError` naming the part."""
    try:
        return fn()
    except (ConfigError, WeightsError):
        raise
    except Exception as exc:  # OSError/EnvironmentError (missing files), ValueError, RuntimeError (shapes), ...
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{NAME}: cannot load {what}/ from {str(folder)!r}: {msg}") from exc
