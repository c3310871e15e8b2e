"""The `semcorr` command: --help everywhere, and real runs (embedded default model) of match, eval, bench."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from semcorr_ros.cli import COMMANDS, main

BIN = Path(sys.executable).parent / "semcorr"


def test_help_for_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: semcorr " + name in out


def test_installed_launcher_runs():
    r = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "bench" in r.stdout


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.fixture(scope="module")
def willow(tmp_path_factory):
    """A two-image PF-WILLOW-format dataset: an image and its shifted copy (known answer)."""
    root = tmp_path_factory.mktemp("willow")
    cat = root / "thing(G)"
    cat.mkdir()
    img = _texture(160, 200, 0)
    shifted = np.roll(img, (10, 16), axis=(0, 1))
    kps = np.array([[50, 60], [120, 50], [90, 100], [140, 120], [70, 130]], float)
    for name, im, k in (("a", img, kps), ("b", shifted, kps + [16, 10])):
        Image.fromarray(im).save(cat / f"{name}.png")
        scipy.io.savemat(cat / f"{name}.mat", {"pts_coord": (k + 1).T})  # MATLAB 1-based, 2 x K
    (root / "broken(G)").mkdir()
    for name in ("x", "y"):
        (root / "broken(G)" / f"{name}.png").write_bytes(b"corrupt")
        scipy.io.savemat(root / "broken(G)" / f"{name}.mat", {"pts_coord": (kps + 1).T})
    return root, img, shifted, kps


def test_eval_match_and_bench_end_to_end(willow, tmp_path, capsys):
    root, img, shifted, kps = willow
    out = tmp_path / "eval.json"
    assert main(["eval", "--dataset", "pf-willow", "--root", str(root), "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["pairs"] == 2 and len(res["skipped"]) == 2          # the corrupt category is reported, not fatal
    assert res["pck"]["0.1"] >= 0.8                                  # a shifted copy is easy
    assert set(res["pck"]) == {"0.05", "0.1", "0.15"} and "thing(G)" in res["per_category"]
    assert out.with_suffix(".png").stat().st_size > 1000

    Image.fromarray(img).save(tmp_path / "src.png")
    Image.fromarray(shifted).save(tmp_path / "tgt.png")
    (tmp_path / "kp.yaml").write_text("keypoints:\n" + "".join(f"  k{i}: [{x}, {y}]\n" for i, (x, y) in enumerate(kps)))
    mj = tmp_path / "match.json"
    assert main(["match", str(tmp_path / "src.png"), str(tmp_path / "tgt.png"), "--keypoints",
                 str(tmp_path / "kp.yaml"), "--out", str(tmp_path / "vis.png"), "--json", str(mj)]) == 0
    m = json.loads(mj.read_text())
    err = np.abs(np.asarray(m["xy"]) - (kps + [16, 10])).max(1)
    assert (err < 12).mean() >= 0.8 and (tmp_path / "vis.png").stat().st_size > 1000

    bj = tmp_path / "bench.json"
    assert main(["bench", "--frames", "2", "--warmup", "1", "--no-progress", "--json", str(bj)]) == 0
    b = json.loads(bj.read_text())
    assert b["frames"] == 2 and b["latency_ms"]["p50"] > 0 and b["peak_rss_mb"] > 0
    assert b["depth_weighted"] and b["frame"] == [640, 480]

    # two objects of two views each beside one object, in one run
    assert main(["bench", "--objects", "2", "--views", "2", "--frames", "2", "--warmup", "0", "--block", "1",
                 "--no-progress", "--json", str(bj)]) == 0
    b = json.loads(bj.read_text())
    assert set(b["compare"]) == {"1x1", "2x2"} and all(c["frames"] == 2 for c in b["compare"].values())
    assert b["objects"] == 2 and b["views"] == 2
    assert {"latency", "features", "match", "pose"} <= set(b["ratio_p50"])
    assert all(v > 0 for v in b["compare"]["2x2"]["stages_ms_p50"].values())


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["eval", "--dataset", "pf-willow", "--root", str(tmp_path / "nowhere")]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["match", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--keypoints",
                 str(tmp_path / "missing.yaml")]) == 1
    assert main(["bench", "--backbone", "nonsense", "--frames", "1"]) == 1
    assert "valid" in capsys.readouterr().err
