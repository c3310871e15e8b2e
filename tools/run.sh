#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default model (no downloads):
#   1. bash tools/setup.sh            (venv, pinned dependencies, build + install of the ROS package)
#   2. semcorr synth                  (a small synthetic RGB-D scene bag with ground truth + a reference)
#   3. semcorr bag-eval               (replays the bag over real DDS into correspond_node, records
#                                      /matches and scores PCK, 3D error, pose error, latency, drops)
#   4. semcorr bench                  (per-frame latency and memory on a 640x480 RGB-D frame)
#   5. semcorr eval on PF-WILLOW      (when the development split is present next to the repository,
#                                       or at SEMCORR_PFWILLOW_ROOT)
# Results (JSON + PNG) go to out/.
#
# Usage: bash tools/run.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup.sh
SEMCORR="$ROOT/.venv/bin/semcorr"
OUT="$ROOT/out"
mkdir -p "$OUT"
# Run from outside the repository root so the source folder never shadows the installed package.
cd "$OUT"

DEMO_START=$SECONDS
echo "== semcorr synth: a 60-frame mug scene (640x480 RGB + 16UC1 depth + camera info at 15 Hz, ground truth)"
"$SEMCORR" synth "$OUT/demo_scene" --category mug --frames 60 --seed 0 --overwrite --no-progress
echo "== semcorr bag-eval: the bag replayed at its recorded rate over DDS into correspond_node"
"$SEMCORR" bag-eval "$OUT/demo_scene/bag" --reference "$OUT/demo_scene/reference.yaml" --out "$OUT/bag_eval" \
    --no-progress
echo "== demo (synth + bag-eval) took $((SECONDS - DEMO_START)) s"

echo "== semcorr bench (embedded default model, CPU)"
"$SEMCORR" bench --device cpu --frames 30 --no-progress --json "$OUT/bench.json"

WILLOW="${SEMCORR_PFWILLOW_ROOT:-$ROOT/../shared/data/pf-willow-dev}"
if [[ -d "$WILLOW" ]]; then
    echo "== semcorr eval --dataset pf-willow --root $WILLOW"
    "$SEMCORR" eval --dataset pf-willow --root "$WILLOW" --no-progress --json "$OUT/eval_pfwillow.json"
else
    echo "== PF-WILLOW not found at $WILLOW (set SEMCORR_PFWILLOW_ROOT): skipping the evaluation"
fi
echo "== results in $OUT: demo_scene/ (bag, reference, preview.png), bag_eval/ (bag_eval.json, pck_curve.png,"
echo "   latency_hist.png, contact_sheet.png), bench.json, eval_pfwillow.json, eval_pfwillow.png"
