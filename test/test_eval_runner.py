"""Evaluation runner, JSON contract and plots (tiny PF-WILLOW fixture in the original format)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from semcorr_ros.data import PairSample, PFWillowDataset
from semcorr_ros.errors import ConfigError, DatasetError, InputError
from semcorr_ros.eval import EvalReport, PCKAccumulator, evaluate
from semcorr_ros.eval.pck_plots import draw_matches, plot_pck_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_pfwillow(root: Path, classes: dict[str, int], k: int = 4) -> None:
    """Sub-class folders of ``<stem>.png`` + ``<stem>.mat`` (``pts_coord`` 2 x K, 1-based), like the release."""
    rng = np.random.default_rng(0)
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            w, h = 40 + 4 * i, 30
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"im{i}.png")
            kps = np.stack([np.linspace(1, w, k), np.linspace(1, h, k)], axis=1)
            scipy.io.savemat(str(root / cls / f"im{i}.mat"), {"pts_coord": kps.T})


def oracle(sample: PairSample) -> np.ndarray:
    return sample.tgt_kps.copy()


def test_oracle_scores_one(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"a": 3, "b": 2})
    for threshold in ("bbox", "img"):
        report = evaluate(PFWillowDataset(tmp_path), oracle, threshold=threshold, progress=False)
        assert report.pairs == 8 and not report.skipped
        assert report.pck == {0.05: 1.0, 0.1: 1.0, 0.15: 1.0}
        assert report.threshold == threshold


def test_corrupt_image_is_reported_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_pfwillow(tmp_path, {"a": 3, "b": 2})
    (tmp_path / "a" / "im1.png").write_bytes(PNG_MAGIC + b"truncated")
    with caplog.at_level(logging.WARNING, logger="semcorr_ros.eval.benchmark"):
        report = evaluate(PFWillowDataset(tmp_path), oracle, progress=False)
    bad = {"a/im0-im1", "a/im1-im0", "a/im1-im2", "a/im2-im1"}
    assert {s.pair_id for s in report.skipped} == bad
    assert all(s.stage == "load" and "im1.png" in s.reason for s in report.skipped)
    assert report.pairs == 4  # a/im0-im2, a/im2-im0, b/im0-im1, b/im1-im0 still scored
    assert report.accumulator.category_counts() == {"a": (2, 8), "b": (2, 8)}
    assert report.pck[0.1] == 1.0
    assert "a/im0-im1" in caplog.text and "skipping" in caplog.text
    with pytest.raises(DatasetError, match="im1.png"):
        evaluate(PFWillowDataset(tmp_path), oracle, progress=False, on_error="raise")


def test_predictor_errors(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"a": 2})
    ds = PFWillowDataset(tmp_path)

    def picky(sample: PairSample) -> np.ndarray:
        if sample.src_name == "im0":
            raise InputError("cannot handle this one")
        return sample.tgt_kps

    report = evaluate(ds, picky, progress=False)
    assert report.pairs == 1
    assert [(s.pair_id, s.stage) for s in report.skipped] == [("a/im0-im1", "predict")]
    assert "cannot handle" in report.skipped[0].reason

    report = evaluate(ds, lambda s: np.zeros((3, 2)), progress=False)  # wrong shape: reported, not scored
    assert report.pairs == 0 and {s.stage for s in report.skipped} == {"score"}

    def buggy(sample: PairSample) -> np.ndarray:
        raise ZeroDivisionError("a bug is not a bad sample")

    with pytest.raises(ZeroDivisionError):
        evaluate(ds, buggy, progress=False)


def test_hand_computed_scores_and_wrong_options() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    gt = np.array([[10.0, 10.0], [50.0, 50.0]])
    # target box 0..40 x 0..20 -> L = 40 px: thresholds 2, 4, 6 px
    samples = [PairSample("p0", "c", "s", "t", img, img, gt, gt, None, np.array([0.0, 0.0, 40.0, 20.0]))]
    report = evaluate(samples, lambda s: s.tgt_kps + [[4.0, 0.0], [0.0, 12.0]], progress=False)
    assert report.pck == {0.05: 0.0, 0.1: 0.5, 0.15: 0.5}
    report = evaluate(samples, lambda s: s.tgt_kps + [[4.0, 0.0], [0.0, 12.0]], threshold="img", progress=False)
    assert report.pck == {0.05: 0.5, 0.1: 1.0, 0.15: 1.0}  # L = 200 px: thresholds 10, 20, 30 px
    with pytest.raises(ConfigError, match="bbox, img"):
        evaluate(samples, oracle, threshold="box")
    with pytest.raises(ConfigError, match="skip, raise"):
        evaluate(samples, oracle, on_error="ignore")
    with pytest.raises(ConfigError, match="alphas"):
        evaluate(samples, oracle, alphas=())


def test_json_contract_and_table(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"car(G)": 3, "duck(S)": 2})
    (tmp_path / "duck(S)" / "im1.mat").write_bytes(b"broken")
    ds = PFWillowDataset(tmp_path)
    report = evaluate(ds, lambda s: s.tgt_kps + 1.5, progress=False)
    d = report.to_json_dict()
    json.loads(json.dumps(d, allow_nan=False))  # strict JSON
    for key in ("pck", "pck_per_image", "per_category", "pairs", "skipped", "threshold", "timing"):
        assert key in d
    assert list(d["pck"]) == ["0.05", "0.1", "0.15"] and list(d["pck_per_image"]) == ["0.05", "0.1", "0.15"]
    assert d["threshold"] == "bbox" and d["pairs"] == 6
    assert set(d["per_category"]) == {"car(G)"}
    assert d["per_category"]["car(G)"]["pairs"] == 6 and list(d["per_category"]["car(G)"]["pck"]) == ["0.05",
                                                                                                      "0.1", "0.15"]
    assert [s["pair_id"] for s in d["skipped"]] == ["duck(S)/im0-im1", "duck(S)/im1-im0"]
    assert d["timing"]["s_per_pair"] >= 0
    table = report.format_table()
    lines = table.splitlines()
    assert any(line.startswith("car(G)") for line in lines)
    assert any(line.startswith("all") for line in lines)
    assert "PCK@0.1" in table and "s/pair" in table and "skipped: 2" in table


def test_empty_report_is_valid_json() -> None:
    report = evaluate([], oracle, progress=False)
    d = report.to_json_dict()
    assert d["pairs"] == 0 and d["pck"] == {"0.05": None, "0.1": None, "0.15": None}
    json.dumps(d, allow_nan=False)
    assert "all" in report.format_table()


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing


def test_plots(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_pfwillow(data, {"a": 3, "b": 2})
    ds = PFWillowDataset(data)
    report = evaluate(ds, lambda s: s.tgt_kps + np.array([2.0, 0.0]), progress=False)
    assert isinstance(report, EvalReport)
    out = tmp_path / "out" / "sub"
    _assert_png(plot_pck_curve(report, out / "curve.png"))
    _assert_png(plot_pck_curve(report.accumulator, out / "curve_acc.png", per_category=False))
    _assert_png(plot_pck_curve({0.05: 0.2, 0.1: 0.5, 0.15: 0.7}, out / "curve_dict.png"))
    _assert_png(plot_pck_curve({"mine": {0.1: 0.5, 0.2: 0.9}, "theirs": {0.1: 0.4}}, out / "curves.png"))
    with pytest.raises(InputError):
        plot_pck_curve([0.1, 0.2], out / "bad.png")  # type: ignore[arg-type]

    s = ds[0]
    pred = s.tgt_kps + 3.0
    pred[1] = np.nan
    path = draw_matches(s.src_image, s.tgt_image, s.src_kps, pred, gt_kps=s.tgt_kps,
                        valid=np.array([True, False, True, True]), names=["a", "b", "c", "d"],
                        path=out / "matches.png", title=s.pair_id)
    _assert_png(path)
    with Image.open(path) as im:
        assert im.size[0] > im.size[1]  # side by side
    _assert_png(draw_matches(s.src_image, s.tgt_image, s.src_kps, pred, path=out / "plain.png"))
    with pytest.raises(InputError, match="pred_kps"):
        draw_matches(s.src_image, s.tgt_image, s.src_kps, pred[:2], path=out / "x.png")
    with pytest.raises(InputError, match="src_img"):
        draw_matches(s.src_image.astype(float), s.tgt_image, s.src_kps, pred, path=out / "x.png")


def test_dense_curve_from_report_matches_reported_alphas(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"a": 3})
    report = evaluate(PFWillowDataset(tmp_path), lambda s: s.tgt_kps + np.array([0.0, 2.0]), progress=False)
    acc: PCKAccumulator = report.accumulator
    np.testing.assert_allclose(acc.curve(report.alphas), list(report.pck.values()))
