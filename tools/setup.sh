#!/usr/bin/env bash
# Set up the development environment of semcorr_ros on a plain machine (no ROS install needed):
#   1. create .venv with Python 3.11 (if missing),
#   2. install the requirements into it (skipped when unchanged since the last successful run): all of them,
#      since development machines and CI test everything:
#        requirements.txt      the product (engine, node, references, semcorr match/eval/bench/bag-eval): a robot
#                              installs only this one (pip install -r requirements.txt)
#        requirements-lab.txt  the lab part (semcorr_ros/lab: synth, train; lab/: ablations, sweeps)
#        requirements-dev.txt  pytest and ruff (the tests and the linter of .ci/run)
#        requirements-sd.txt   the optional Stable Diffusion source (its tests use a tiny random model)
#   3. point the ROS wheels' exported CMake files at this venv's Python/NumPy headers,
#   4. configure, build and install the package (messages + Python modules + launchers) into the
#      venv with CMake, in symlink mode: installed .py files are links to the sources,
#   5. check that `rclpy` and `semcorr_ros.msg` import from the venv,
#   6. install the real ROS 2 launch system (`launch`, `launch_ros`) for the launch tests from
#      ../shared/ros2-launch-kit when that folder exists (without it those tests skip).
# Safe to re-run at any time; re-run it after adding or removing Python files or messages.
#
# Usage: bash tools/setup.sh
# Environment: SEMCORR_PYTHON (interpreter used to create the venv, default python3.11),
#              SEMCORR_SETUP_FORCE_PIP=1 (reinstall requirements even if unchanged).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
BUILD="$ROOT/build"
PYTHON_BOOT="${SEMCORR_PYTHON:-python3.11}"
STAMP="$VENV/.semcorr-requirements.sha256"
START_S=$SECONDS

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
# pip on these machines prints many harmless "WARNING: Location '...' is ignored" lines.
quiet_pip_filter() { grep -v -E "^WARNING: Location .* is ignored" || true; }

# A ROS installation sourced in this shell must not leak into the venv build.
unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH || true

# 1. virtual environment --------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON_BOOT" >/dev/null 2>&1 || die "$PYTHON_BOOT not found (set SEMCORR_PYTHON=/path/to/python3.11)"
    say "creating .venv with $("$PYTHON_BOOT" --version 2>&1)"
    "$PYTHON_BOOT" -m venv "$VENV"
    rm -f "$STAMP"
fi
PY="$VENV/bin/python"
PY_VERSION="$("$PY" -S -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PY_VERSION" == "3.11" ]] || die ".venv has Python $PY_VERSION; the ROS 2 wheels need 3.11 (remove .venv and re-run)"

# 2. requirements ---------------------------------------------------------------------------------
# Product, lab, dev and sd together (see the header): the package itself needs only requirements.txt.
REQUIREMENTS=(requirements.txt requirements-lab.txt requirements-dev.txt requirements-sd.txt)
REQ_HASH="$( (echo "python $PY_VERSION"; cat "${REQUIREMENTS[@]}") | sha256sum | cut -d' ' -f1)"
if [[ "${SEMCORR_SETUP_FORCE_PIP:-0}" == "1" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$REQ_HASH" ]]; then
    say "installing ${REQUIREMENTS[*]} (first time: a few minutes)"
    PIP_ARGS=()
    for req in "${REQUIREMENTS[@]}"; do PIP_ARGS+=(-r "$req"); done
    "$PY" -m pip install --disable-pip-version-check --no-input -q "${PIP_ARGS[@]}" 2>&1 | quiet_pip_filter
    echo "$REQ_HASH" > "$STAMP"
else
    say "requirements unchanged: skipping pip"
fi

# 3. CMake files of the ROS wheels ----------------------------------------------------------------
"$PY" tools/_rewrite_cmake_paths.py "$VENV"

# 4. configure, build, install --------------------------------------------------------------------
# A build folder configured elsewhere (a copied tree, another venv) cannot be reused.
if [[ -f "$BUILD/CMakeCache.txt" ]] && ! grep -qx "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD/CMakeCache.txt"; then
    say "build/ was configured for another location: removing it"
    rm -rf "$BUILD"
fi
mkdir -p "$BUILD"
LOG="$BUILD/setup.log"
: > "$LOG"
run_logged() {  # run a step, keep its output in build/setup.log, show the end of it on failure
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        die "failed: $* (full log: $LOG)"
    fi
}
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    say "configuring (CMake, ament_cmake)"
    GENERATOR=()
    command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
    run_logged cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$PY" \
        -DAMENT_CMAKE_SYMLINK_INSTALL=ON \
        -DBUILD_TESTING=OFF
fi
say "building messages and installing into .venv"
exec 9>"$BUILD/.install.lock"
flock 9  # one build/install at a time in this tree (tools/test.sh takes the same lock)
# Links to Python files that were deleted or renamed since the last install would linger.
INSTALLED_PKG="$VENV/lib/python$PY_VERSION/site-packages/semcorr_ros"
# So would folders of moved subpackages, holding nothing but byte code (they would import as namespace packages).
if [[ -d "$INSTALLED_PKG" ]]; then bash tools/_prune_install.sh "$INSTALLED_PKG"; fi
run_logged cmake --build "$BUILD" --parallel "$(nproc 2>/dev/null || echo 2)"
# (from inside build/: the symlink installer writes its manifest into the current directory)
(cd "$BUILD" && run_logged cmake --install .)
exec 9>&-

# 5. check, from outside the repository (the source folder would shadow the installed package) ----
(cd / && "$PY" -c '
import rclpy
import semcorr_ros
import semcorr_ros.msg
from semcorr_ros.msg import Correspondence, CorrespondenceArray
assert "site-packages" in semcorr_ros.__file__, semcorr_ros.__file__
') || die "semcorr_ros.msg does not import from .venv"
[[ -x "$VENV/bin/semcorr" && -x "$VENV/lib/semcorr_ros/correspond_node" ]] || die "launchers not installed"

# 6. launch system for the launch tests (test infrastructure from ../shared, never copied here) ----
KIT_INSTALL="$ROOT/../shared/ros2-launch-kit/install.sh"
if [[ -f "$KIT_INSTALL" ]]; then
    say "installing the ROS 2 launch system from ../shared/ros2-launch-kit (launch tests)"
    bash "$KIT_INSTALL" "$VENV" || die "installing ../shared/ros2-launch-kit failed"
else
    say "../shared/ros2-launch-kit not found: the launch tests (test/test_launch_real.py) will skip"
fi

say "done in $((SECONDS - START_S)) s: run the tests with 'bash tools/test.sh'"
