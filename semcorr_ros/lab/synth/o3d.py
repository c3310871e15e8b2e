"""Import open3d for its CPU ray caster.

The ``open3d-cpu`` wheel links against ``libusb-1.0`` (for RealSense support we never use). The machines this
project targets may lack the Debian package ``libusb-1.0-0``, so the shared library shipped by the
``libusb-package`` wheel is loaded with ``RTLD_GLOBAL`` first; ``import open3d`` then resolves it from there.
"""

from __future__ import annotations

import ctypes
from types import ModuleType

from semcorr_ros.errors import SemcorrError

_O3D: ModuleType | None = None


class Open3dUnavailableError(SemcorrError, RuntimeError):
    """open3d (or the libusb it needs) cannot be loaded."""


def open3d() -> ModuleType:
    """The ``open3d`` module (imported once; :class:`Open3dUnavailableError` says why it cannot be)."""
    global _O3D
    if _O3D is not None:
        return _O3D
    try:
        import libusb_package

        lib = libusb_package.get_library_path()
        if lib is not None:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError) as exc:
        # Fall through: a system libusb may still satisfy open3d; the import below reports the real failure.
        _preload_error = exc
    else:
        _preload_error = None
    try:
        import open3d as o3d
    except (ImportError, OSError) as exc:
        hint = f" (preloading libusb from libusb-package failed: {_preload_error})" if _preload_error else ""
        raise Open3dUnavailableError(
            f"cannot import open3d, needed by `semcorr synth` for CPU ray casting: {exc}{hint}. Install the "
            "lab requirements (pip install -r requirements-lab.txt: the pinned open3d-cpu and libusb-package), or "
            "the Debian package libusb-1.0-0.") from exc
    _O3D = o3d
    return o3d
