"""Hand-computed tests of the sparse matching primitives."""

import torch
import torch.nn.functional as F

from semcorr_ros.engine.matching import (
    match_keypoints,
    pixels_to_uv,
    sample_descriptors,
    similarity,
    soft_argmax,
    uv_to_pixels,
)


def test_pixel_uv_round_trip():
    xy = torch.tensor([[0.0, 0.0], [639.0, 479.0], [10.25, 3.5]])
    uv = pixels_to_uv(xy, 640, 480)
    assert torch.allclose(uv[0], torch.tensor([0.5 / 640, 0.5 / 480]))
    assert torch.allclose(uv_to_pixels(uv, 640, 480), xy, atol=1e-4)


def test_sample_descriptors_at_cell_centre_is_exact():
    fmap = F.normalize(torch.randn(5, 4, 4), dim=0)
    uv = torch.tensor([[(2 + 0.5) / 4, (1 + 0.5) / 4]])  # cell (row 1, col 2)
    d = sample_descriptors(fmap, uv)
    assert torch.allclose(d[0], fmap[:, 1, 2], atol=1e-6)


def test_soft_argmax_plain_and_symmetric_window():
    sim = torch.zeros(1, 5, 5)
    sim[0, 2, 3] = 1.0
    uv, peak = soft_argmax(sim, 0, 0.1)
    assert torch.allclose(uv, torch.tensor([[3.5 / 5, 2.5 / 5]]))
    assert peak.item() == 1.0
    # Two equal neighbours left/right of the peak: the soft-argmax stays on the peak column by symmetry.
    sim[0, 2, 2] = sim[0, 2, 4] = 0.5
    uv, _ = soft_argmax(sim, 1, 0.5)
    assert torch.allclose(uv[0, 0], torch.tensor(3.5 / 5), atol=1e-6)
    # One-sided neighbour pulls towards it.
    sim[0, 2, 4] = 0.0
    uv, _ = soft_argmax(sim, 1, 0.5)
    assert uv[0, 0] < 3.5 / 5


def test_soft_argmax_window_clipped_at_border():
    sim = torch.zeros(1, 4, 4)
    sim[0, 0, 0] = 1.0
    uv, _ = soft_argmax(sim, 2, 1e-3)  # very low temperature: the argmax cell
    assert torch.allclose(uv, torch.tensor([[0.5 / 4, 0.5 / 4]]), atol=1e-4)
    assert torch.isfinite(uv).all()


def test_match_keypoints_identity_is_mutual_with_high_score():
    fmap = F.normalize(torch.randn(16, 8, 8), dim=0)
    uv = torch.tensor([[1.5 / 8, 2.5 / 8], [6.5 / 8, 5.5 / 8]])
    desc = sample_descriptors(fmap, uv)
    m = match_keypoints(desc, uv, fmap, fmap, radius=0)
    assert torch.allclose(m.uv, uv, atol=1e-6)
    assert torch.allclose(m.cycle_error, torch.zeros(2), atol=1e-6)
    assert torch.allclose(m.score, torch.ones(2), atol=1e-5)
    assert similarity(desc, fmap).shape == (2, 8, 8)


def test_match_keypoints_weights_move_the_argmax():
    fmap = torch.zeros(2, 1, 4)
    fmap[0, 0, 0] = 1.0
    fmap[0, 0, 3] = 1.0                       # two identical candidates
    fmap[1, 0, 1:3] = 1.0
    fmap = F.normalize(fmap, dim=0)
    desc = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[0.2, 1.0, 1.0, 1.0]])  # depth says the left one is implausible
    m = match_keypoints(desc, torch.tensor([[0.125, 0.5]]), fmap, fmap, radius=0, tgt_weights=w)
    assert torch.allclose(m.uv[0, 0], torch.tensor(3.5 / 4))


def test_match_keypoints_empty():
    fmap = torch.randn(4, 3, 3)
    m = match_keypoints(torch.zeros(0, 4), torch.zeros(0, 2), fmap, fmap)
    assert m.uv.shape == (0, 2) and m.score.shape == (0,)
