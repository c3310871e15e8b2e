"""Point the ROS wheels' exported CMake files at this environment's Python and NumPy headers.

The ros-kilted-* wheels are built in a manylinux container, and some of their exported CMake
targets (``*__rosidl_generator_pyExport.cmake``) hard-code include directories under
``/opt/python/cp311-cp311/...``.  CMake refuses to use an imported target whose include
directory does not exist, so building any package that depends on those messages fails.

This script rewrites every such path in ``<prefix>/share/**/*.cmake`` to the running
interpreter's own locations.  It is idempotent: once rewritten, nothing matches any more.

Usage: ``python tools/_rewrite_cmake_paths.py [PREFIX]`` (default: ``sys.prefix``, the venv).
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

# A build-container path, up to the next list separator or quote.
_FOREIGN = re.compile(r"/opt/python/cp3\d+-cp3\d+[^;\"\s)]*")


def _numpy_include() -> str:
    try:
        import numpy
    except ImportError:  # numpy is a requirement; without it the NumPy path stays as it is
        return ""
    return numpy.get_include()


def _replacement(path: str, py_include: str, np_include: str, site_packages: str) -> str:
    """The local path corresponding to one build-container path (unchanged if unknown)."""
    if "/numpy/" in path and path.rstrip("/").endswith("include") and np_include:
        return np_include
    if re.search(r"/include/python3\.\d+/?$", path):
        return py_include
    match = re.search(r"/site-packages(/.*)?$", path)
    if match:
        return site_packages + (match.group(1) or "")
    return path


def rewrite(prefix: Path) -> int:
    """Rewrite the files under ``prefix/share``; return how many files changed."""
    paths = sysconfig.get_paths()
    py_include = paths["include"]
    site_packages = paths["purelib"]
    np_include = _numpy_include()
    changed = 0
    share = prefix / "share"
    if not share.is_dir():
        return 0
    for cmake_file in share.rglob("*.cmake"):
        try:
            text = cmake_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "/opt/python/" not in text:
            continue
        new_text = _FOREIGN.sub(
            lambda m: _replacement(m.group(0), py_include, np_include, site_packages), text
        )
        if new_text != text:
            cmake_file.write_text(new_text, encoding="utf-8")
            changed += 1
    return changed


def main() -> int:
    prefix = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.prefix)
    changed = rewrite(prefix)
    if changed:
        print(f"  rewrote build-container paths in {changed} CMake file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
