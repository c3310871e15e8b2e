"""Ground truth of the synthetic scenes: keypoints projected into a view with their visibility, the object's
pose, box and pixel fraction (:func:`_ground_truth`), visibility alone for the reference view search
(:func:`_ground_truth_points`), and the occluding panel of ``SceneSpec.occlusion`` (:func:`_occlude`).

Shapes and units: keypoints ``[K, 2]`` pixels (pixel centres at integers; off-image or behind-camera points are
set to -1e6), ``[K, 3]`` metres in the camera optical frame (x right, y down, z forward), visibility ``[K]``
bool; ``object_pose`` is ``T_camera_object`` 4x4 (metres); the box is ``[x0, y0, x1, y1]`` pixels (NaN when
the object is not in view); ``K`` [3, 3] in pixels; poses ``T_world_camera`` / ``T_world_object``.
"""

from __future__ import annotations

import numpy as np

from semcorr_ros.lab.synth.categories import Model
from semcorr_ros.lab.synth.world import World


def _occlude(rgb: np.ndarray, z: np.ndarray, gid: np.ndarray, target_id: int) -> tuple[int, int, int, int] | None:
    """Paint a flat grey panel over the object's pixels' box (plus 25 % margin each side) in place: colour, depth
    (0.3 m, or half the object's nearest depth if that is nearer) and ids (the id type's maximum: nothing).
    Returns the panel ``(x0, y0, x1, y1)`` (pixel edges, ``x1``/``y1`` exclusive), or None when the object is not
    in view."""
    ys, xs = np.nonzero(gid == target_id)
    if len(xs) == 0:
        return None
    h, w = gid.shape
    mx, my = 0.25 * (xs.max() - xs.min() + 1), 0.25 * (ys.max() - ys.min() + 1)
    x0, y0 = max(0, int(xs.min() - mx)), max(0, int(ys.min() - my))
    x1, y1 = min(w, int(np.ceil(xs.max() + 1 + mx))), min(h, int(np.ceil(ys.max() + 1 + my)))
    near = float(np.nanmin(z[ys, xs]))
    rgb[y0:y1, x0:x1] = 128
    z[y0:y1, x0:x1] = min(0.3, 0.5 * near)
    gid[y0:y1, x0:x1] = np.iinfo(gid.dtype).max if gid.dtype.kind in "iu" else -1
    return x0, y0, x1, y1


def _ground_truth(world: World, model: Model, T_wc: np.ndarray, T_wo: np.ndarray, K: np.ndarray, gid: np.ndarray,
                  width: int, height: int, target_id: int | None = None) -> dict:
    T_co = np.linalg.inv(T_wc) @ T_wo
    kp_h = np.concatenate([model.keypoints, np.ones((len(model.keypoints), 1))], 1)
    kp3 = (T_co @ kp_h.T).T[:, :3]
    z = kp3[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = kp3 @ K.T
        kp2 = uvw[:, :2] / uvw[:, 2:3]
    inside = ((z > 1e-6) & (kp2[:, 0] >= -0.5) & (kp2[:, 0] <= width - 0.5) & (kp2[:, 1] >= -0.5)
              & (kp2[:, 1] <= height - 0.5))
    kp_w = (T_wo @ kp_h.T).T[:, :3]
    visible = inside & world.visibility(T_wc, kp_w)
    mask = gid == (world.target_id if target_id is None else target_id)
    if mask.any():
        ys, xs = np.nonzero(mask)
        bbox = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
    else:
        bbox = np.full(4, np.nan)
    kp2 = np.where(np.isfinite(kp2), kp2, -1e6)
    return dict(keypoints_2d=kp2, visible=visible, keypoints_3d=kp3, object_pose=T_co, object_box=bbox,
                object_fraction=float(mask.mean()))


def _ground_truth_points(world: World, T_wc, T_wo, kp_h, kp_w, K, width, height) -> np.ndarray:
    """Visibility only (no render): the reference view search."""
    T_co = np.linalg.inv(T_wc) @ T_wo
    kp3 = (T_co @ kp_h.T).T[:, :3]
    uvw = kp3 @ K.T
    z = kp3[:, 2]
    kp2 = uvw[:, :2] / np.where(np.abs(uvw[:, 2:3]) > 1e-9, uvw[:, 2:3], 1e-9)
    inside = ((z > 1e-6) & (kp2[:, 0] >= -0.5) & (kp2[:, 0] <= width - 0.5) & (kp2[:, 1] >= -0.5)
              & (kp2[:, 1] <= height - 0.5))
    return inside & world.visibility(T_wc, kp_w)
