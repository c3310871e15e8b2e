"""lab/dev/depth_aware_sets.py: argument parsing and a two-frame run with the embedded default model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _tools import load_script  # noqa: E402  (test helper next to this file)

TOOL = Path(__file__).resolve().parents[1] / "lab" / "dev" / "depth_aware_sets.py"


@pytest.fixture(scope="module")
def tool():
    return load_script("lab/dev/depth_aware_sets.py", "semcorr_depth_aware_sets")


def test_parsing(tool):
    import argparse

    assert tool.seeds_arg("20-22,5") == [20, 21, 22, 5]
    assert tool.variant_arg("f=depth_floor=0.5,depth_spread=2") == ("f", {"depth_floor": 0.5, "depth_spread": 2})
    with pytest.raises(argparse.ArgumentTypeError):
        tool.variant_arg("nofields")


def _identity_projected_fusion(path):
    """A semcorr-fusion-v2 file of the default model with identity projections: the default fusion again."""
    import torch

    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.engine.fusion import save_fusion

    engine = CorrespondenceEngine()
    maps = engine.encode_maps(np.zeros((64, 64, 3), np.uint8))
    engine.fusion.set_projections([torch.eye(m.shape[1]) for m in maps])
    save_fusion(engine.fusion, path)


def test_two_frame_run_scores_every_variant_on_the_same_keypoints(tmp_path):
    pytest.importorskip("semcorr_ros.lab.synth")
    _identity_projected_fusion(tmp_path / "eye.safetensors")
    cmd = [sys.executable, str(TOOL), "--setting", "normal", "--seeds", "3", "--frames", "2",
           "--cache", str(tmp_path / "scenes"), "--json", str(tmp_path / "s.json"),
           "--variant", "floor1=depth_floor=1.0", "--variant", f"eye=fusion_weights='{tmp_path / 'eye.safetensors'}'"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    v = s["variants"]
    assert set(v) == {"on", "off", "floor1", "eye"} and v["on"]["keypoints"] > 0
    assert v["on"]["keypoints"] == v["off"]["keypoints"] == v["floor1"]["keypoints"] == v["eye"]["keypoints"]
    for row in v.values():
        assert 0.0 <= row["pck@0.05"] <= row["pck@0.1"] <= row["pck@0.15"] <= 1.0
    # floor 1 gives every cell weight 1: the same matches as no depth weighting at all
    assert v["floor1"]["pck@0.1"] == v["off"]["pck@0.1"]
    # identity projections with the default logits: the default fusion, loaded from a v2 file
    assert all(v["eye"][k] == v["on"][k] for k in ("pck@0.05", "pck@0.1", "pck@0.15"))
    assert len(list((tmp_path / "scenes").glob("*.pkl"))) == 3    # mug, bottle, lamp, rendered once
    bad = subprocess.run([sys.executable, str(TOOL), "--variant", "x=no_such_field=1", "--seeds", "3"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "unknown EngineConfig fields" in bad.stderr
