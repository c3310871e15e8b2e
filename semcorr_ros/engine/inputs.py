"""Validation and conversion of user-facing inputs (images, keypoints) with typed, specific errors."""

from __future__ import annotations

import numpy as np
import torch

from semcorr_ros.errors import InputError


def validate_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return a contiguous ``uint8 [H, W, 3]`` RGB view/copy of ``image``.

    Accepts ``uint8`` ``[H, W, 3]`` (RGB), ``[H, W, 4]`` (RGBA, alpha dropped) or ``[H, W]`` (grey), and float
    arrays in [0, 1] of the same shapes. Raises :class:`InputError` naming the problem otherwise.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a numpy array [H, W, 3], got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{what} must have shape [H, W, 3] (RGB), got {image.shape}")
    image = image[:, :, :3]
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InputError(f"{what} is too small: {image.shape[1]}x{image.shape[0]} pixels (need at least 8x8)")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype.kind == "f":
        if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
            raise InputError(f"float {what} must be finite and in [0, 1]")
        return np.ascontiguousarray((image * 255.0 + 0.5).astype(np.uint8))
    raise InputError(f"{what} must be uint8 (or float in [0, 1]), got dtype {image.dtype}")


def validate_keypoints(keypoints: np.ndarray, image_size: tuple[int, int], what: str = "keypoints") -> np.ndarray:
    """Return ``float64 [K, 2]`` pixel keypoints ``(x, y)``, checked to be finite and inside the image.

    Args:
        keypoints: array-like ``[K, 2]`` (``K`` may be 0).
        image_size: ``(width, height)``.
    """
    try:
        kp = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be numeric [K, 2] (x, y) pixels: {exc}") from exc
    if kp.size == 0:
        return np.zeros((0, 2))
    if kp.ndim != 2 or kp.shape[1] != 2:
        raise InputError(f"{what} must have shape [K, 2] (x, y), got {kp.shape}")
    if not np.isfinite(kp).all():
        raise InputError(f"{what} contain non-finite values (rows {np.where(~np.isfinite(kp).all(1))[0].tolist()})")
    width, height = image_size
    outside = (kp[:, 0] < -0.5) | (kp[:, 0] > width - 0.5) | (kp[:, 1] < -0.5) | (kp[:, 1] > height - 0.5)
    if outside.any():
        raise InputError(f"{what} {np.where(outside)[0].tolist()} lie outside the {width}x{height} image")
    return kp


def image_to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> float ``[1, 3, H, W]`` in [0, 1] on ``device``."""
    if not image.flags.writeable:  # e.g. a view of a ROS message buffer; torch needs writable memory
        image = image.copy()
    t = torch.from_numpy(image).to(device, non_blocking=True)
    return t.permute(2, 0, 1)[None].float().div_(255.0)
