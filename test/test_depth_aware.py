"""Depth-aware weighting: cell statistics, robust object model, weights."""

import math

import numpy as np
import torch

from semcorr_ros.engine.depth_aware import DepthModel, cell_depth_stats, depth_weights, fit_depth_model


def test_cell_stats_ignore_invalid_pixels():
    d = torch.full((4, 4), 2.0)
    d[:2, :2] = torch.tensor([[1.0, 3.0], [float("nan"), 0.0]])  # top-left cell: valid 1 and 3
    d[2:, 2:] = float("nan")                                       # bottom-right cell: no valid pixel
    mean, var, valid = cell_depth_stats(d, 2)
    assert mean[0, 0].item() == 2.0 and abs(var[0, 0].item() - 1.0) < 1e-6
    assert mean[0, 1].item() == 2.0 and var[0, 1].item() == 0.0
    assert not valid[1, 1] and valid[0, 0]


def test_fit_model_robust_to_outlier_and_weights():
    z = np.array([1.0, 1.02, 0.98, 1.01, 5.0, np.nan])
    m = fit_depth_model(z, sigma_min=0.01)
    assert abs(m.mean - 1.01) < 0.011 and m.sigma < 0.05
    # Zero weight removes a keypoint; extent widens the spread to the full extent (not half of it).
    m2 = fit_depth_model(z, weights=np.array([0, 0, 0, 0, 1.0, 1.0]), extent=0.4)
    assert m2.mean == 5.0 and abs(m2.sigma - 0.4) < 1e-9
    assert fit_depth_model(np.array([np.nan, 0.0])) is None


def test_depth_weights_values():
    d = torch.tensor([[1.0, 2.0], [float("nan"), 1.5]])
    w = depth_weights(d, DepthModel(mean=1.0, sigma=0.5), grid=2, floor=0.2)
    assert abs(w[0, 0].item() - 1.0) < 1e-6                         # at the object depth
    expect = 0.2 + 0.8 * math.exp(-1.0 / (2 * 0.25))                # 2 sigma away
    assert abs(w[0, 1].item() - expect) < 1e-6
    assert w[1, 0].item() == 1.0                                     # no depth: neutral
    assert 0.2 <= w.min().item() <= w.max().item() <= 1.0


def test_extent_keeps_object_ends_plausible():
    # Keypoints bunched at the near end of an object 0.3 m deep: the median sits at that end, yet a cell at the far
    # end of the object (0.3 m behind it) must stay well above the floor, and a wall 1 m behind must not.
    z = np.array([1.0, 1.0, 1.01, 1.02, 1.3])
    m = fit_depth_model(z, extent=0.3, sigma_min=0.01)
    assert abs(m.mean - 1.01) < 1e-9 and abs(m.sigma - 0.3) < 1e-9
    d = torch.tensor([[1.0, 1.3], [2.3, float("nan")]])
    w = depth_weights(d, m, grid=2, floor=0.25)
    assert w[0, 1].item() > 0.25 + 0.75 * math.exp(-0.5) - 1e-6     # far end of the object: >= e^{-1/2} term
    assert w[1, 0].item() < 0.26                                    # background 1 m behind: at the floor


def test_max_cells_keep_silhouette_cells_and_flatten_the_object():
    import pytest

    m = DepthModel(mean=1.0, sigma=0.2)
    d = torch.full((4, 4), 3.0)                     # background wall 2 m behind the object
    d[:2, :2] = 1.15                                # cell (0, 0): object, 0.15 m behind the median (inside s)
    d[2, 2] = 0.95                                  # cell (1, 1): one object pixel among wall pixels (silhouette)
    d[2:, :2] = float("nan")                        # cell (1, 0): no valid pixel
    # cell (0, 1): all wall
    w = depth_weights(d, m, grid=2, floor=0.25, cells="max")
    assert w[0, 0].item() == 1.0                    # plateau: anywhere within s of the median keeps 1
    assert w[1, 1].item() == 1.0                    # one plausible pixel is enough
    assert w[1, 0].item() == 1.0                    # no depth: neutral
    expect = 0.25 + 0.75 * math.exp(-((2.0 - 0.2) ** 2) / (2 * 0.2 ** 2))
    assert abs(w[0, 1].item() - expect) < 1e-6      # wall: the Gaussian tail beyond s
    # the mean statistic down-weights the same object and silhouette cells
    wm = depth_weights(d, m, grid=2, floor=0.25)
    assert wm[0, 0].item() < 0.95 and wm[1, 1].item() < 0.5
    d2 = torch.full((2, 2), 1.5)                    # 0.5 m away: 0.3 beyond s -> tail
    w2 = depth_weights(d2, m, grid=1, floor=0.0, cells="max")
    assert abs(w2.item() - math.exp(-(0.3 ** 2) / (2 * 0.04))) < 1e-6
    with pytest.raises(ValueError, match="cells must be one of"):
        depth_weights(d, m, grid=2, floor=0.25, cells="median")


def test_config_and_cli_take_the_cell_statistic():
    import pytest

    from semcorr_ros.cli import build_parser
    from semcorr_ros.cli.common import engine_config
    from semcorr_ros.config import EngineConfig
    from semcorr_ros.errors import ConfigError

    assert EngineConfig().depth_cells == "mean"
    with pytest.raises(ConfigError, match="depth_cells must be one of"):
        EngineConfig(depth_cells="median")
    args = build_parser().parse_args(["bench", "--depth-cells", "max"])
    assert engine_config(args).depth_cells == "max"
