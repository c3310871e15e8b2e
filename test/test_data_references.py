"""The `references` dataset: the node's reference files (your own annotated views) as pairs."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from semcorr_ros.cli import main
from semcorr_ros.data import build_dataset
from semcorr_ros.errors import ConfigError, DatasetError

from _toy import texture  # noqa: E402  (test helper next to this file)

KPS = {"handle": [40.0, 50.0], "rim": [110.0, 45.0], "base": [80.0, 95.0], "spout": [130.0, 110.0]}


def _view(folder: Path, stem: str, shift: int, drop: str | None = None, depth_m: float | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.roll(texture(160, 200, seed=len(folder.name)), (shift, 2 * shift), axis=(0, 1))
    Image.fromarray(img).save(folder / f"{stem}.png")
    doc = {"image": f"{stem}.png",
           "keypoints": {n: [x + 2 * shift, y + shift] for n, (x, y) in KPS.items() if n != drop}}
    if depth_m is not None:
        Image.fromarray(np.full((160, 200), int(depth_m * 1000), np.uint16)).save(folder / f"{stem}_depth.png")
        doc["depth"] = f"{stem}_depth.png"
        doc["intrinsics"] = [200.0, 200.0, 100.0, 80.0]
    (folder / f"{stem}.yaml").write_text(yaml.safe_dump(doc))


def _tree(root: Path) -> None:
    _view(root / "mug", "a", 0, depth_m=0.8)
    _view(root / "mug", "b", 4, drop="spout", depth_m=0.9)
    _view(root / "mug", "c", 8, depth_m=0.85)
    _view(root / "lamp", "x", 0)
    _view(root / "lamp", "y", 6)


def test_pairs_align_keypoints_by_name_and_carry_depth(tmp_path):
    _tree(tmp_path)
    ds = build_dataset("references", tmp_path)
    assert len(ds) == 6 + 2 and ds.categories == ["lamp", "mug"]
    assert ds.pair_ids[2] == "mug/a-b"
    s = ds[2]
    assert s.kp_names == ["base", "handle", "rim", "spout"]
    np.testing.assert_allclose(s.src_kps[1], KPS["handle"])
    np.testing.assert_allclose(s.tgt_kps[1], np.add(KPS["handle"], [8, 4]))
    assert np.isfinite(s.src_kps[3]).all() and np.isnan(s.tgt_kps[3]).all()  # b has no spout
    np.testing.assert_allclose(s.tgt_bbox, [48, 49, 118, 99])  # b's own keypoints' box
    assert s.src_depth.shape == (160, 200) and np.nanmax(np.abs(s.tgt_depth - 0.9)) < 1e-6
    lamp = ds[0]
    assert lamp.category == "lamp" and lamp.src_depth is None and lamp.tgt_depth is None
    assert len(build_dataset("references", tmp_path, categories=["mug"], max_pairs=4)) == 4


def test_bad_roots_and_files_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        build_dataset("references", tmp_path / "nowhere")
    _view(tmp_path / "solo", "only", 0)
    with pytest.raises(DatasetError, match="no category has two views"):
        build_dataset("references", tmp_path)
    _view(tmp_path / "solo", "second", 3)
    with pytest.raises(ConfigError, match="split"):
        build_dataset("references", tmp_path, split="trn")
    (tmp_path / "solo" / "broken.yaml").write_text("keypoints: [1, 2")
    with pytest.raises(DatasetError, match="not valid YAML"):
        build_dataset("references", tmp_path)
    (tmp_path / "solo" / "broken.yaml").write_text(yaml.safe_dump({"image": "gone.png", "keypoints": {"a": [1, 2]}}))
    ds = build_dataset("references", tmp_path)
    idx = ds.pair_ids.index("solo/broken-only")
    with pytest.raises(DatasetError, match="image file not found"):
        ds[idx]


def test_train_and_evaluate_on_your_own_views(tmp_path, capsys):
    """train-fusion --dataset references (projected, depth-aware data) and eval --dataset references, end to end
    with the embedded default model."""
    _tree(tmp_path / "views")
    out = tmp_path / "mine.safetensors"
    rc = main(["train-fusion", "--dataset", "references", "--root", str(tmp_path / "views"), "--fusion-model",
               "projected", "--rank", "8", "--epochs", "1", "--categories", "mug", "--out", str(out), "--json",
               str(tmp_path / "t.json"), "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "t.json").read_text())["train_pairs"] == 6
    rc = main(["eval", "--dataset", "references", "--root", str(tmp_path / "views"), "--fusion-weights", str(out),
               "--no-progress", "--device", "cpu", "--json", str(tmp_path / "e.json")])
    assert rc == 0, capsys.readouterr().err
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["pairs"] == 8 and 0.0 <= e["pck"]["0.1"] <= 1.0
    # the views carry depth: the weights model can learn the depth-aware parameters from them
    rc = main(["train-fusion", "--dataset", "references", "--root", str(tmp_path / "views"), "--categories", "mug",
               "--epochs", "1", "--out", str(tmp_path / "w.safetensors"), "--json", str(tmp_path / "w.json"),
               "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "w.json").read_text())["depth_aware"]["learned"] is True


def test_synth_views_tool_writes_a_references_dataset(tmp_path):
    """lab/dev/synth_views.py: rendered frames of one object as reference files, readable as pairs."""
    pytest.importorskip("semcorr_ros.lab.synth")
    from _tools import load_script  # noqa: E402

    tool = load_script("lab/dev/synth_views.py", "semcorr_synth_views_tool")
    assert tool.main([str(tmp_path), "--seeds", "3", "--frames", "2", "--categories", "mug"]) == 0
    ds = build_dataset("references", tmp_path)
    assert ds.pair_ids == ["mug_s3/view_000-view_001", "mug_s3/view_001-view_000"]
    s = ds[0]
    assert s.src_image.shape == (480, 640, 3) and s.src_depth.shape == (480, 640)
    assert "rim_front" in s.kp_names and np.isfinite(s.src_kps).all(1).sum() >= 3
