"""The reference of a synthetic scene: another instance of the category, seen from a canonical front
three-quarter view (:class:`SceneReference`, made by :func:`_make_reference`), and, with
``SceneSpec.reference_views``, the other views of its reference set (:func:`_set_view`).

Shapes and units: ``image`` uint8 ``[H, W, 3]``; ``depth`` uint16 ``[H, W]`` millimetres (0 = invalid);
``K`` [3, 3] pixels; keypoints ``[k, 2]`` pixels; ``keypoints_3d`` ``[K, 3]`` metres in the camera optical
frame (x right, y down, z forward); ``object_pose`` is ``T_camera_object`` 4x4 (metres); view azimuth and
elevation in degrees (object frame), distance in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semcorr_ros.lab.synth.assembly import _build_world, _target_only_world
from semcorr_ros.lab.synth.camera import _calibrate_distance, _fit_distance, _pose, _rot_z, view_pose
from semcorr_ros.lab.synth.categories import Model, get_category
from semcorr_ros.lab.synth.noise import clean_depth_mm, noisy_depth_mm
from semcorr_ros.lab.synth.streams import _rng
from semcorr_ros.lab.synth.truth import _ground_truth, _ground_truth_points
from semcorr_ros.lab.synth.world import World

if TYPE_CHECKING:
    from semcorr_ros.lab.synth.scene import SceneSpec


#: in a reference set, a view needs at least this many visible keypoints (else it is raised, then left out)
MIN_SET_VIEW_KEYPOINTS = 3


@dataclass
class SceneReference:
    """The reference view: another instance of the category.

    ``names``/``keypoints`` [k, 2] hold only the keypoints visible in this view (what the reference YAML lists);
    ``all_names``, ``all_keypoints_2d`` [K, 2], ``visible`` [K] and ``keypoints_3d`` [K, 3] (camera frame) the
    whole set. ``depth`` is uint16 millimetres (0 = invalid), ``object_pose`` is ``T_camera_object``.
    """

    reference_id: str
    category: str
    instance: str
    image: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    names: list[str]
    keypoints: np.ndarray
    object_pose: np.ndarray
    all_names: list[str]
    all_keypoints_2d: np.ndarray
    visible: np.ndarray
    keypoints_3d: np.ndarray
    params: dict = field(default_factory=dict)
    view: dict = field(default_factory=dict)
    #: with ``SceneSpec.reference_views``: every view of the reference set (``views[0]`` is this view itself)
    views: list["SceneReference"] = field(default_factory=list)
    #: the object's id in a several-object scene (its category, ``mug_2`` for a second mug), else ""
    object_id: str = ""

    def to_reference_spec(self):
        """As a :class:`semcorr_ros.reference.ReferenceSpec` (depth in metres, NaN invalid), ready for the
        engine's ``set_reference``."""
        from semcorr_ros.reference import ReferenceSpec

        d = self.depth.astype(np.float32) * np.float32(0.001)
        d[self.depth == 0] = np.nan
        return ReferenceSpec(reference_id=self.reference_id, image=self.image, names=list(self.names),
                             keypoints=self.keypoints.copy(), depth=d, intrinsics=self.K.copy())


# reference views tried in order (object-frame azimuth, elevation in degrees): front three-quarter views first
_REFERENCE_VIEWS = [(35, 30), (-35, 30), (50, 35), (-50, 35), (25, 40), (-25, 40), (65, 30), (-65, 30), (0, 35),
                    (90, 35), (-90, 35), (35, 50), (-35, 50), (135, 35), (-135, 35), (180, 35)]


def _make_reference(spec: SceneSpec, K: np.ndarray, category: str | None = None,
                    extra: tuple[int, ...] = ()) -> SceneReference:
    """The reference instance of ``category`` (default ``spec.category``; ``extra`` = ``(k,)`` for the k-th
    repeat of a category in a several-object scene) and its view; with ``spec.reference_views`` its set."""
    c, s = category or spec.category, spec.seed
    cat = get_category(c)
    model = cat.instance(_rng(s, c, "ref-instance", *extra))
    instance = f"{c}_{s:04d}" + (f"_{extra[0] + 1}" if extra else "") + "_ref"
    rng = _rng(s, c, "ref-view", *extra)
    yaw = float(rng.uniform(0, 2 * np.pi))
    T_wo = _pose(_rot_z(yaw), [0.0, 0.0, 0.0])
    centre = T_wo[:3, :3] @ model.centre
    target = float(rng.uniform(0.12, 0.18))
    fx_over_w = K[0, 0] / spec.width
    d_guess = model.radius * K[0, 0] / np.sqrt(target * spec.width * spec.height / np.pi) * 0.8
    deg = np.pi / 180
    az0, el0 = _REFERENCE_VIEWS[0]
    k = _calibrate_distance(_target_only_world(model, yaw),
                            lambda t, kk: view_pose(centre, yaw, az0 * deg, el0 * deg, d_guess * kk), [0.0],
                            target, spec.width / spec.height, fx_over_w, 1.0)
    dist = max(d_guess * k, _fit_distance(model.radius, K, spec.width, spec.height))
    world, _ = _build_world(model, _rng(s, c, "ref-materials", *extra), _rng(s, c, "ref-room", *extra), None, yaw,
                            max(2.5, (dist + 0.3) / 0.7), max(2.6, centre[2] + dist + 0.5), (0.0, 0.0),
                            spec.shadows)
    kp_h = np.concatenate([model.keypoints, np.ones((len(model.keypoints), 1))], 1)
    kp_w = (T_wo @ kp_h.T).T[:, :3]
    best = None
    for az, el in _REFERENCE_VIEWS:
        T_wc = view_pose(centre, yaw, az * deg, el * deg, dist)
        gt = _ground_truth_points(world, T_wc, T_wo, kp_h, kp_w, K, spec.width, spec.height)
        n = int(gt.sum())
        if best is None or n > best[0]:
            best = (n, az, el, T_wc)
        if n >= 6:
            break
    _, az, el, T_wc = best
    rgb, z, gid = world.render(T_wc, K, spec.width, spec.height)
    if spec.depth_noise:
        depth = noisy_depth_mm(z, _rng(s, c, "ref-depth-noise", *extra))
    else:
        depth = clean_depth_mm(z)
    ref = _scene_reference(instance, instance, c, model, world, T_wc, T_wo, K, spec, rgb, depth, gid, az, el, dist)
    if spec.reference_views:
        ref.views = [ref]
        n = int(spec.reference_views)
        for i in range(1, n):
            ref_i = _set_view(spec, world, model, instance, c, T_wo, kp_h, kp_w, centre, yaw, K, dist,
                              az + 360.0 * i / n, el, i, extra)
            if ref_i is not None:
                ref.views.append(ref_i)
    return ref


def _scene_reference(reference_id: str, instance: str, c: str, model: Model, world: World, T_wc, T_wo, K,
                     spec: SceneSpec, rgb, depth, gid, az: float, el: float, dist: float) -> SceneReference:
    g = _ground_truth(world, model, T_wc, T_wo, K, gid, spec.width, spec.height)
    vis = g["visible"]
    names = [n for n, v in zip(model.names, vis) if v]
    return SceneReference(reference_id=reference_id, category=c, instance=instance, image=rgb, depth=depth,
                          K=K.copy(), names=names, keypoints=g["keypoints_2d"][vis].copy(),
                          object_pose=g["object_pose"], all_names=list(model.names),
                          all_keypoints_2d=g["keypoints_2d"], visible=vis, keypoints_3d=g["keypoints_3d"],
                          params=dict(model.params),
                          view=dict(azimuth_deg=az, elevation_deg=el, distance_m=round(float(dist), 4),
                                    object_fraction=round(g["object_fraction"], 5)))


def _set_view(spec: SceneSpec, world: World, model: Model, instance: str, c: str, T_wo, kp_h, kp_w, centre, yaw,
              K, dist: float, az: float, el: float, i: int, extra: tuple[int, ...]) -> SceneReference | None:
    """View ``i`` of the reference set at azimuth ``az`` (degrees, normalised to -180..180): raised by 15 and
    30 degrees when fewer than :data:`MIN_SET_VIEW_KEYPOINTS` keypoints are visible there; None if still too
    few (the set then has fewer views)."""
    deg = np.pi / 180
    az = float((az + 180.0) % 360.0 - 180.0)
    for el_i in (el, el + 15, el + 30):
        T_wc = view_pose(centre, yaw, az * deg, el_i * deg, dist)
        if int(_ground_truth_points(world, T_wc, T_wo, kp_h, kp_w, K, spec.width, spec.height).sum()) >= \
                MIN_SET_VIEW_KEYPOINTS:
            break
    else:
        return None
    rgb, z, gid = world.render(T_wc, K, spec.width, spec.height)
    if spec.depth_noise:
        depth = noisy_depth_mm(z, _rng(spec.seed, c, "ref-depth-noise", *extra, i))
    else:
        depth = clean_depth_mm(z)
    return _scene_reference(f"{instance}_view{i}", instance, c, model, world, T_wc, T_wo, K, spec, rgb, depth, gid,
                            az, el_i, dist)
