"""semcorr_ros.engine.norms.unit_norm: the same as F.normalize, zero vectors and half precision included."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semcorr_ros.engine.norms import unit_norm


def test_unit_norm_equals_normalize_along_any_dim():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 40, 6, 7, generator=g) * 3.0
    x[0, :, 2, 3] = 0.0  # a zero vector stays zero, as F.normalize leaves it
    for dim in (0, 1, 2, 3):
        torch.testing.assert_close(unit_norm(x, dim), F.normalize(x, dim=dim), rtol=1e-6, atol=1e-7)
    assert torch.all(unit_norm(x, 1)[0, :, 2, 3] == 0.0)


def test_half_precision_squares_do_not_overflow():
    x = torch.full((4, 3), 300.0, dtype=torch.float16)  # 300^2 > the largest float16 (65504)
    y = unit_norm(x, 0)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), torch.full((4, 3), 0.5), rtol=1e-3, atol=1e-3)
