"""Typed errors raised by library code (never ``assert`` on user input).

Every error names the offending input and, where there is a fixed set of choices, lists them.
"""

from __future__ import annotations


class SemcorrError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(SemcorrError, ValueError):
    """An image, depth map, keypoint array or intrinsics matrix has the wrong shape, dtype or content."""


class ConfigError(SemcorrError, ValueError):
    """An option has a value outside its valid set or range."""


class WeightsError(SemcorrError, RuntimeError):
    """A weights file is missing, unreadable, not a plain state_dict, or its keys do not fit the model."""


class BadReferenceError(SemcorrError, ValueError):
    """A reference (image + named keypoints file) is missing or malformed."""


class DatasetError(SemcorrError, RuntimeError):
    """A dataset root is wrong or a sample in it cannot be read."""


class NoReferenceError(SemcorrError, RuntimeError):
    """``match`` was called before ``set_reference``."""
