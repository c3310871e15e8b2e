"""lab/ablation.py: step runner (logging, skip, timeout), uniform fusion file, markdown rendering."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from _tools import load_script  # noqa: E402  (test helper next to this file)


@pytest.fixture(scope="module")
def ablation():
    return load_script("lab/ablation.py", "semcorr_ablation_tool")


def _writer(path: Path, text: str) -> list[str]:
    return [sys.executable, "-c", f"open({str(path)!r}, 'w').write({text!r})"]


def test_runner_logs_command_and_skips_existing_output(ablation, tmp_path):
    runner = ablation.Runner(tmp_path, force=False)
    done = tmp_path / "sub" / "x.json"
    rec = runner.run("step", _writer(done, "1"), done)
    assert done.read_text() == "1" and rec["skipped"] is False
    log = (tmp_path / "logs" / "step.log").read_text()
    assert log.startswith("$ " + sys.executable)
    # second run: output exists -> not executed (would write "2")
    rec2 = runner.run("step", _writer(done, "2"), done)
    assert rec2["skipped"] is True and done.read_text() == "1"
    forced = ablation.Runner(tmp_path, force=True)
    forced.run("step", _writer(done, "2"), done)
    assert done.read_text() == "2"


def test_runner_reports_failure_and_timeout(ablation, tmp_path):
    runner = ablation.Runner(tmp_path, force=False)
    with pytest.raises(ablation.StepFailed, match="exit 3"):
        runner.run("bad", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "never.json")
    with pytest.raises(ablation.StepFailed, match="ran past"):
        runner.run("slow", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "never2.json",
                   timeout=1.0)
    assert runner.steps[-1]["timed_out"] is True


def test_uniform_source_file_gives_equal_source_weight(ablation, tmp_path):
    from semcorr_ros.engine.fusion import FeatureFusion, load_fusion, save_fusion

    keys = ["a/l1", "a/l2", "b/l1", "b/l2", "b/l3"]
    learned = tmp_path / "learned.safetensors"
    save_fusion(FeatureFusion(keys, weights=[5, 1, 1, 1, 1]), learned)
    w = ablation.write_uniform_source(learned, tmp_path / "u.safetensors")
    assert w == pytest.approx([0.25, 0.25, 1 / 6, 1 / 6, 1 / 6], abs=1e-4)
    fusion = FeatureFusion(keys)
    load_fusion(fusion, tmp_path / "u.safetensors")  # strict: same keys and format
    assert fusion.weights[:2].sum().item() == pytest.approx(0.5, abs=1e-5)


def test_markdown_tables_and_missing_synth_block(ablation, tmp_path):
    ref = {"name": "uniform_source", "configuration": "ref", "data": "d", "note": "held-out", "pck_005": 0.4,
           "pck_01": 0.68, "latency_p50_ms": 100.0, "match_p50_ms": 10.0, "eval_command": "e", "bench_command": "b"}
    row = {"name": "x", "configuration": "cfg", "data": "d", "note": "held-out", "pck_005": 0.41234,
           "pck_01": 0.7, "latency_p50_ms": 123.4, "match_p50_ms": 20.0, "eval_command": "semcorr eval A",
           "bench_command": "semcorr bench A"}
    result = {"machine": "2 CPU cores", "load_before": 3.0, "load_after": 4.0, "wall_s": 10.0,
              "finished_utc": "now", "skipped_steps": 0,
              "blocks": {"fusion": {"title": "Fusion", "train_command": "semcorr train-fusion", "rows": [ref, row]},
                         "synth": {"title": "Synth", "missing": True, "summary": "s.json",
                                   "produce_command": "python lab/synth_benchmark.py", "rows": []}}}
    md = ablation.markdown(result)
    assert "| cfg | d; held-out | 0.412 | 0.700 | +2.0 | 123 | 20 | `semcorr eval A`; `semcorr bench A` |" in md
    assert "| ref | d; held-out | 0.400 | 0.680 | +0.0 |" in md
    assert "did not exist" in md and "python lab/synth_benchmark.py" in md
    json.dumps(result)  # the result stays serialisable


def test_matcher_block_shows_the_projected_fusion_command(ablation):
    row = {"name": "nn", "configuration": "matcher nn", "data": "d", "note": "held-out", "pck_005": 0.4,
           "pck_01": 0.7, "latency_p50_ms": 100.0, "match_p50_ms": 10.0, "eval_command": "e", "bench_command": "b"}
    proj = dict(row, name="nn_projected", configuration="projected", pck_01=0.75)
    result = {"machine": "2 CPU cores", "wall_s": 1.0, "finished_utc": "now", "skipped_steps": 0,
              "blocks": {"matcher": {"title": "Matcher and projected fusion", "head_note": "h",
                                     "train_command": "semcorr train-kbcnet X",
                                     "fusion_train_command": "semcorr train-fusion --fusion-model projected Y",
                                     "rows": [row, proj]}}}
    md = ablation.markdown(result)
    assert "    semcorr train-fusion --fusion-model projected Y" in md
    assert "| projected | d; held-out | 0.400 | 0.750 | +5.0 |" in md
