#!/usr/bin/env bash
# Run the test suite against the package installed in .venv (after `bash tools/setup.sh`).
#
# Usage: bash tools/test.sh [pytest arguments...]
#   e.g. bash tools/test.sh -m "not slow" -k matching -x
#
# Lanes (markers, assigned in test/conftest.py and registered in pytest.ini):
#   bash tools/test.sh                      everything (CI, .ci/run): a few minutes on 2 CPU cores
#   bash tools/test.sh -m "not slow"        the fast lane while developing: well under a minute
#   bash tools/test.sh -m unit              plain tensor/array/file tests only (no ROS 2 stack, no real model)
#   bash tools/test.sh -m "not ros"         without the ROS 2 stack (rclpy, messages, DDS, launch)
#   bash tools/test.sh -m "not model"       without loading the real default model
#   bash tools/test.sh -m gpu               the CUDA-only tests (skipped without a CUDA device)
# Every test is `unit`, `ros` and/or `model`; `slow` (more than about a second) and `gpu` come on top.
#
# Uses the venv's `pytest` console script, not `python -m pytest`: the latter puts the current
# directory (the repository root) on sys.path, and the source folder semcorr_ros/ (which has no
# generated `msg`) would shadow the installed package.
# Before running, the install step is repeated (fast; a no-op when nothing changed) so that Python
# files added since the last setup are linked into the venv.  SEMCORR_SKIP_INSTALL=1 skips it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
BUILD="$ROOT/build"

if [[ ! -x "$VENV/bin/pytest" || ! -f "$BUILD/CMakeCache.txt" ]]; then
    echo "[test] .venv or build/ missing: run 'bash tools/setup.sh' first" >&2
    exit 2
fi
unset PYTHONPATH

if [[ "${SEMCORR_SKIP_INSTALL:-0}" != "1" ]]; then
    # Serialise with other runs in this tree (parallel installs would race on the symlinks).
    (
        flock 9
        export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
        # drop links to Python files deleted since the last install (and folders of moved subpackages)
        for pkg in "$VENV"/lib/python3*/site-packages/semcorr_ros; do
            if [[ -d "$pkg" ]]; then bash tools/_prune_install.sh "$pkg"; fi
        done
        if ! { cmake --build "$BUILD" && cd "$BUILD" && cmake --install .; } >"$BUILD/test-install.log" 2>&1; then
            tail -n 30 "$BUILD/test-install.log" >&2
            echo "[test] updating the installed package failed; run 'bash tools/setup.sh'" >&2
            exit 2
        fi
    ) 9>"$BUILD/.install.lock"
fi

exec "$VENV/bin/pytest" "$@"
