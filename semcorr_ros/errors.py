"""Typed errors raised by library code (never ``assert`` on user input).

Every error names the offending input and, where there is a fixed set of choices, lists them.
"""

from __future__ import annotations


class SemcorrError(Exception):
    """Base class of every error this package raises on purpose.

    Args:
        *args: the message (as for :class:`Exception`).
        kind: a short class of the problem (``"color"``, ``"depth"``, ``"camera_info"``, ``"frame_id"``...)
            under which the node counts the frames it rejects for it; default: the error class's ``kind``.
    """

    kind = "error"

    def __init__(self, *args: object, kind: str | None = None) -> None:
        super().__init__(*args)
        if kind is not None:
            self.kind = kind


class InputError(SemcorrError, ValueError):
    """An image, depth map, keypoint array or intrinsics matrix has the wrong shape, dtype or content."""

    kind = "input"


class ConfigError(SemcorrError, ValueError):
    """An option has a value outside its valid set or range."""

    kind = "config"


class WeightsError(SemcorrError, RuntimeError):
    """A weights file is missing, unreadable, not a plain state_dict, or its keys do not fit the model."""

    kind = "weights"


class BadReferenceError(SemcorrError, ValueError):
    """A reference (image + named keypoints file) is missing or malformed."""

    kind = "reference"


class DatasetError(SemcorrError, RuntimeError):
    """A dataset root is wrong or a sample in it cannot be read."""

    kind = "dataset"


class NoReferenceError(SemcorrError, RuntimeError):
    """``match`` was called before ``set_reference``."""

    kind = "no_reference"
