#!/usr/bin/env bash
# Prune the symlink-installed Python package DIR (used by tools/setup.sh and tools/test.sh before installing):
# links to source files that were deleted or moved, byte code whose source is gone, and folders left empty
# (a moved subpackage's folder with only __pycache__/ in it would still import as a namespace package).
set -euo pipefail
pkg="$1"
find "$pkg" -xtype l -delete
find "$pkg" -path '*/__pycache__/*.pyc' -type f -print0 | while IFS= read -r -d '' pyc; do
    dir="$(dirname "$(dirname "$pyc")")"
    base="$(basename "$pyc")"
    [[ -e "$dir/${base%%.*}.py" ]] || rm -f "$pyc"
done
find "$pkg" -depth -type d -empty -delete
