"""Synthetic RGB-D scenes with ground truth, ray cast on the CPU (``open3d.t.geometry.RaycastingScene``).

A scene: one target object (an instance of a category, :mod:`.categories`) with random materials standing on a
textured floor inside a textured room, some clutter behind it, a directional light (Lambert + ambient, with cast
shadows), and a smooth hand-held-like camera orbit looking at the object. :func:`render_scene` returns a
:class:`Scene`; its frames are rendered lazily (``scene.frames`` / ``scene.render(i)``), each as
``(rgb uint8 [H, W, 3], depth uint16 mm [H, W], K [3, 3], FrameGroundTruth)``. ``scene.reference`` is another
instance of the same category, seen from a canonical front three-quarter view (:class:`SceneReference`).

Everything is a deterministic function of :class:`SceneSpec` (the seed included): the same spec gives the same
arrays, frame by frame, in any order.

Frames: the world has +z up with the floor at z = 0; the target's object frame is the category's canonical frame
(:mod:`.categories`) yawed about z; cameras use the optical convention (x right, y down, z forward).

This module holds :class:`SceneSpec`, :class:`Frame`, :class:`Scene` and :func:`render_scene`; the parts live in
:mod:`.camera` (intrinsics, poses, the orbit, framing), :mod:`.world` (the ray-cast renderer), :mod:`.assembly`
(room, clutter, light, worlds), :mod:`.truth` (ground truth, the occluding panel), :mod:`.reference` (the
reference view and set) and :mod:`.streams` (random streams). The names other code uses are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from semcorr_ros.errors import ConfigError
from semcorr_ros.groundtruth import FrameGroundTruth
from semcorr_ros.lab.synth.assembly import _build_group_world, _build_world, _target_only_world
from semcorr_ros.lab.synth.camera import (
    DEFAULT_FX,
    Orbit,
    _calibrate_distance,
    _fit_distance,
    _fit_points_distance,
    _pose,
    _rot_z,
    intrinsics,
    look_at,
    view_pose,
)
from semcorr_ros.lab.synth.categories import get_category
from semcorr_ros.lab.synth.noise import DepthNoise, clean_depth_mm, noisy_depth_mm
from semcorr_ros.lab.synth.reference import MIN_SET_VIEW_KEYPOINTS, SceneReference, _make_reference
from semcorr_ros.lab.synth.streams import _rng
from semcorr_ros.lab.synth.truth import _ground_truth, _occlude
from semcorr_ros.lab.synth.world import VIS_TOL_M, VIS_TOL_REL, World

# the names other code imports from here (they live in the modules above)
__all__ = ["DEFAULT_FX", "MAX_OBJECTS", "MAX_REFERENCE_VIEWS", "MIN_SET_VIEW_KEYPOINTS", "ORBITS",
           "SMALL_OBJECT_MAX_FRACTION", "START_NS", "VIS_TOL_M", "VIS_TOL_REL", "Frame", "Orbit", "Scene",
           "SceneReference", "SceneSpec", "World", "intrinsics", "look_at", "render_scene", "view_pose"]


#: header stamp of frame 0 (2026-01-01T00:00:00Z); frame i is stamped START_NS + round(i * 1e9 / rate).
START_NS = 1_767_225_600 * 1_000_000_000
SMALL_OBJECT_MAX_FRACTION = 0.05
#: camera trajectories: ``swing`` (on the reference's side) and ``full`` (one turn around the object)
ORBITS = ("swing", "full")
#: at most this many views in a synthetic reference set (the reference set format's own limit)
MAX_REFERENCE_VIEWS = 16
#: at most this many objects in one scene (the objects file's limit)
MAX_OBJECTS = 8


@dataclass(frozen=True)
class SceneSpec:
    """Everything that defines a scene (and so its every pixel).

    Attributes:
        category: ``mug``, ``bottle`` or ``lamp``.
        seed: the random seed (instances, materials, room, clutter, light, trajectory, noise).
        frames: number of frames.
        small_object: camera pulled back so the object covers under 5 % of the image (about 1.5-3.5 %).
        depth_noise: apply the sensor model of :mod:`.noise` (else exact depth, quantised to mm).
        width, height: image size in pixels.
        rate: frame rate in Hz (the camera moves in physical time; stamps are ``start_ns + i / rate``).
        clutter: place background clutter objects.
        shadows: cast shadows of the directional light.
        fx: focal length in pixels (default ``615 * width / 640``).
        start_ns: stamp of frame 0.
        orbit: ``swing`` (default: a hand-held swing on the reference's side) or ``full`` (one 360-degree turn
            around the object over the sequence).
        reference_views: 0 (default) or N >= 1: also a reference set of N views of the reference instance,
            spread around it (azimuths ``a0 + 360 * i / N``; view 0 is the single reference view).
        objects: several categories in one scene (e.g. ``("mug", "bottle")``), placed apart; empty (default):
            the one ``category``. With objects, ``category`` is ignored.
        occlusion: ``(start, end)``: in frames ``start <= i < end`` a panel just in front of the camera hides the
            (first) object entirely (:func:`.truth._occlude`; its keypoints are not visible, its box is empty); ``()``
            (default): none. For testing track loss and re-acquisition.
    """

    category: str = "mug"
    seed: int = 0
    frames: int = 30
    small_object: bool = False
    depth_noise: bool = False
    width: int = 640
    height: int = 480
    rate: float = 15.0
    clutter: bool = True
    shadows: bool = True
    fx: float | None = None
    start_ns: int = START_NS
    orbit: str = "swing"
    reference_views: int = 0
    objects: tuple[str, ...] = ()
    occlusion: tuple[int, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories of the scene's objects, in order (``(category,)`` without ``objects``)."""
        return tuple(self.objects) if self.objects else (self.category,)

    def validate(self) -> None:
        """:class:`ConfigError` naming the first bad field."""
        for c in self.categories:
            get_category(c)
        if self.objects and not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ConfigError(f"objects must list 1 to {MAX_OBJECTS} categories, got {len(self.objects)}")
        if self.orbit not in ORBITS:
            raise ConfigError(f"orbit must be one of {', '.join(ORBITS)}, got {self.orbit!r}")
        if not isinstance(self.reference_views, (int, np.integer)) or not (
                0 <= self.reference_views <= MAX_REFERENCE_VIEWS):
            raise ConfigError(f"reference_views must be in [0, {MAX_REFERENCE_VIEWS}], got {self.reference_views!r}")
        if self.occlusion and not (len(self.occlusion) == 2 and 0 <= int(self.occlusion[0]) < int(self.occlusion[1])):
            raise ConfigError(f"occlusion must be (start, end) frames with 0 <= start < end, got {self.occlusion!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 1 <= int(self.frames) <= 1_000_000:
            raise ConfigError(f"frames must be in [1, 1000000], got {self.frames!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not 16 <= int(v) <= 8192:
                raise ConfigError(f"{name} must be in [16, 8192] pixels, got {v!r}")
        if not (np.isfinite(self.rate) and 0.01 <= float(self.rate) <= 10_000):
            raise ConfigError(f"rate must be in [0.01, 10000] Hz, got {self.rate!r}")
        if self.fx is not None and not (np.isfinite(self.fx) and self.fx > 0):
            raise ConfigError(f"fx must be a positive number of pixels, got {self.fx!r}")

    def stamp_ns(self, i: int) -> int:
        return int(self.start_ns) + int(round(i * 1e9 / float(self.rate)))


class Frame(NamedTuple):
    """One rendered frame."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # uint16 [H, W] millimetres, 0 = invalid
    K: np.ndarray  # [3, 3]
    gt: FrameGroundTruth


class Scene:
    """A rendered-on-demand scene (see the module docstring). Build it with :func:`render_scene`.

    With ``spec.objects`` the scene holds several objects: :attr:`models`, :attr:`T_world_objects`,
    :attr:`instances`, :attr:`object_ids` and :attr:`references` list them in order (the first one is also
    :attr:`model`, :attr:`T_world_object`, :attr:`instance` and :attr:`reference`), and :meth:`render_objects`
    gives every object's ground truth.
    """

    def __init__(self, spec: SceneSpec):
        spec.validate()
        self.spec = spec
        cats = spec.categories
        s, c = spec.seed, cats[0]
        self.category = c
        self.K = intrinsics(spec.width, spec.height, spec.fx)
        self._noise_model = DepthNoise()
        dups = _duplicate_index(cats)
        self.object_ids = [ci if k == 0 else f"{ci}_{k + 1}" for ci, k in zip(cats, dups)]
        self.instances = [f"{ci}_{s:04d}" + ("" if k == 0 else f"_{k + 1}") for ci, k in zip(cats, dups)]
        if len(cats) == 1 and not spec.objects:
            self._init_single(spec)
        else:
            self._init_group(spec, cats, dups)
        self.instance = self.instances[0]
        self.names = list(self.model.names)

    def _init_single(self, spec: SceneSpec) -> None:
        s, c = spec.seed, self.category
        cat = get_category(c)
        self.model = cat.instance(_rng(s, c, "instance"))
        rng_traj = _rng(s, c, "trajectory")
        yaw = float(rng_traj.uniform(0, 2 * np.pi))
        self.T_world_object = _pose(_rot_z(yaw), [0.0, 0.0, 0.0])
        centre_w = self.T_world_object[:3, :3] @ self.model.centre
        self.orbit = Orbit.sample(rng_traj, centre_w, yaw, self.model.radius, spec.small_object)
        if spec.orbit == "full":
            self.orbit.full_period = spec.frames / spec.rate
        if spec.small_object:
            self.target_fraction = float(rng_traj.uniform(0.018, 0.028))
        else:
            self.target_fraction = float(rng_traj.uniform(0.06, 0.12))
        # camera distance: calibrated on the object alone to the target fraction, then kept far enough for the
        # whole object (its bounding sphere plus the look-at wobble) to stay in view at the orbit's nearest point
        fx_over_w = self.K[0, 0] / spec.width
        d_guess = self.model.radius * self.K[0, 0] / np.sqrt(
            self.target_fraction * spec.width * spec.height / np.pi) * 0.8
        room_draw = float(rng_traj.uniform(2.2, 4.5))
        self.orbit.dist = d_guess
        duration = max(spec.frames - 1, 1) / spec.rate
        times = list(np.linspace(0, duration, 5))
        alone = _target_only_world(self.model, yaw)
        d = d_guess * _calibrate_distance(alone, self.orbit.pose, times, self.target_fraction,
                                          spec.width / spec.height, fx_over_w, 1.0)
        fit = _fit_distance(self.model.radius + float(np.linalg.norm(self.orbit.look_amp)), self.K, spec.width,
                            spec.height)
        self.orbit.dist = max(d, fit / (1 - self.orbit.dist_amp))
        # the room: the camera always inside it (walls at least ~0.3 m beyond the farthest camera position)
        reach = self.orbit.dist * (1 + self.orbit.dist_amp) + float(np.linalg.norm(self.orbit.look_amp))
        room_half = max(room_draw, (reach + 0.3) / 0.7)
        ceiling = max(2.6, self.orbit.max_height() + 0.5)
        free, ring = self._clutter_area(reach, room_half)
        self.world, _ = _build_world(self.model, _rng(s, c, "materials"), _rng(s, c, "room"),
                                     _rng(s, c, "clutter") if spec.clutter else None, yaw, room_half, ceiling,
                                     free, spec.shadows, ring)
        self.reference = _make_reference(spec, self.K)
        self.models, self.T_world_objects, self.references = [self.model], [self.T_world_object], [self.reference]

    def _clutter_area(self, reach: float, room_half: float) -> tuple[tuple[float, float], tuple | None]:
        """Where clutter may stand: outside the swing's sector, or (full orbits) in a ring outside the camera's
        circle (the room's centre is drawn within 30 % of its half size of the object, hence 0.7)."""
        if self.spec.orbit == "full":
            return (0.0, 0.0), (reach + 0.15, max(0.7 * room_half - 0.05, reach + 0.3))
        margin = 40 * np.pi / 180
        return (self.orbit.az0 - self.orbit.az_amp - margin, self.orbit.az0 + self.orbit.az_amp + margin), None

    def _init_group(self, spec: SceneSpec, cats: tuple[str, ...], dups: list[int]) -> None:
        """Several objects, all yawed alike, standing in a row across the central line of sight (so that they
        overlap little from the orbit's middle), the camera looking at the group's centre."""
        s, c = spec.seed, self.category
        extra = [() if k == 0 else (k,) for k in dups]
        self.models = [get_category(ci).instance(_rng(s, ci, "instance", *e)) for ci, e in zip(cats, extra)]
        rng_traj = _rng(s, c, "trajectory")
        yaw = float(rng_traj.uniform(0, 2 * np.pi))
        self.orbit = Orbit.sample(rng_traj, np.zeros(3), yaw, 1.0, spec.small_object)
        if spec.orbit == "full":
            self.orbit.full_period = spec.frames / spec.rate
        feet = [float(np.hypot(m.mesh.vertices[:, 0], m.mesh.vertices[:, 1]).max()) for m in self.models]
        gap = 0.04 + 0.5 * max(feet)
        along = [0.0]
        for a, b in zip(feet[:-1], feet[1:]):
            along.append(along[-1] + a + b + gap)
        mid = 0.5 * (along[0] - feet[0] + along[-1] + feet[-1])
        d_line = yaw + self.orbit.az0 + np.pi / 2
        u = np.array([np.cos(d_line), np.sin(d_line), 0.0])
        R = _rot_z(yaw)
        self.T_world_objects = [_pose(R, (a - mid) * u) for a in along]
        self.model, self.T_world_object = self.models[0], self.T_world_objects[0]
        centres = [T[:3, 3] + R @ m.centre for m, T in zip(self.models, self.T_world_objects)]
        centre_w = np.mean(centres, axis=0)
        radius = max(float(np.linalg.norm(cj - centre_w)) + m.radius for cj, m in zip(centres, self.models))
        self.orbit.centre = centre_w
        self.orbit.look_amp = self.orbit.look_amp * radius
        per_object = (float(rng_traj.uniform(0.018, 0.028)) if spec.small_object
                      else float(rng_traj.uniform(0.06, 0.12)))
        self.target_fraction = min(per_object * len(cats), 0.35)
        fx_over_w = self.K[0, 0] / spec.width
        d_guess = radius * self.K[0, 0] / np.sqrt(self.target_fraction * spec.width * spec.height / np.pi) * 0.8
        room_draw = float(rng_traj.uniform(2.2, 4.5))
        self.orbit.dist = d_guess
        duration = max(spec.frames - 1, 1) / spec.rate
        times = list(np.linspace(0, duration, 5))
        alone = _target_only_world(self.model, yaw, list(zip(self.models, self.T_world_objects)))
        d = d_guess * _calibrate_distance(alone, self.orbit.pose, times, self.target_fraction,
                                          spec.width / spec.height, fx_over_w, 1.0)
        # the group's bounding sphere is far too loose for a row of objects: the distance is instead raised until
        # every vertex of every object projects inside the image (with a margin) all along the orbit
        verts = np.concatenate([(T[:3, :3] @ m.mesh.vertices[::max(1, len(m.mesh.vertices) // 1500)].T).T
                                + T[:3, 3] for m, T in zip(self.models, self.T_world_objects)])
        self.orbit.dist = _fit_points_distance(self.orbit, verts, self.K, spec.width, spec.height, d,
                                               list(np.linspace(0, duration, 13)))
        reach = self.orbit.dist * (1 + self.orbit.dist_amp) + float(np.linalg.norm(self.orbit.look_amp))
        room_half = max(room_draw, (reach + 0.3) / 0.7)
        ceiling = max(2.6, self.orbit.max_height() + 0.5)
        free, ring = self._clutter_area(reach, room_half)
        foot = max(float(np.linalg.norm(T[:2, 3])) + f for T, f in zip(self.T_world_objects, feet))
        self.world = _build_group_world(
            self.models, [_rng(s, ci, "materials", *e) for ci, e in zip(cats, extra)], self.T_world_objects,
            _rng(s, c, "room"), _rng(s, c, "clutter") if spec.clutter else None, yaw,
            float(np.mean([m.radius for m in self.models])), foot, room_half, ceiling, free, spec.shadows, ring)
        self.references = [_make_reference(spec, self.K, ci, e) for ci, e in zip(cats, extra)]
        for ref, oid in zip(self.references, self.object_ids):
            ref.object_id = oid
        self.reference = self.references[0]

    def __len__(self) -> int:
        return int(self.spec.frames)

    def camera_pose(self, i: int) -> np.ndarray:
        """``T_world_camera`` of frame ``i``."""
        return self.orbit.pose(i / self.spec.rate)

    def object_pose(self, i: int) -> np.ndarray:
        """``T_camera_object`` of frame ``i``."""
        return np.linalg.inv(self.camera_pose(i)) @ self.T_world_object

    @property
    def frames(self) -> Iterator[Frame]:
        """All frames in order (rendered as they are consumed)."""
        return (self.render(i) for i in range(len(self)))

    def render(self, i: int) -> Frame:
        """Frame ``i`` (0-based): deterministic, independent of the order frames are rendered in (the first
        object's ground truth; :meth:`render_objects` for every object's)."""
        frame, _ = self.render_objects(i)
        return frame

    def render_objects(self, i: int) -> tuple[Frame, list[FrameGroundTruth]]:
        """Frame ``i`` and the ground truth of every object (in :attr:`object_ids` order; ``frame.gt`` is the
        first)."""
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range 0..{len(self) - 1}")
        spec = self.spec
        T_wc = self.camera_pose(i)
        rgb, z, gid = self.world.render(T_wc, self.K, spec.width, spec.height)
        panel = None
        if spec.occlusion and spec.occlusion[0] <= i < spec.occlusion[1]:
            panel = _occlude(rgb, z, gid, self.world.target_ids[0])
        if spec.depth_noise:
            depth = noisy_depth_mm(z, _rng(spec.seed, self.category, "depth-noise", i), self._noise_model)
        else:
            depth = clean_depth_mm(z)
        gts = []
        for j, (model, T_wo, instance) in enumerate(zip(self.models, self.T_world_objects, self.instances)):
            g = _ground_truth(self.world, model, T_wc, T_wo, self.K, gid, spec.width, spec.height,
                              self.world.target_ids[j])
            if panel is not None:
                x0, y0, x1, y1 = panel
                kp = g["keypoints_2d"]
                g["visible"] = g["visible"] & ~((kp[:, 0] >= x0 - 0.5) & (kp[:, 0] <= x1 - 0.5)
                                                & (kp[:, 1] >= y0 - 0.5) & (kp[:, 1] <= y1 - 0.5))
            gts.append(FrameGroundTruth(stamp_ns=spec.stamp_ns(i), frame_index=i, category=model.category,
                                        instance=instance, names=list(model.names), **g))
        return Frame(rgb, depth, self.K.copy(), gts[0]), gts


def _duplicate_index(cats: tuple[str, ...]) -> list[int]:
    """Per entry, how many times its category came before (0 for the first of each category)."""
    seen: dict[str, int] = {}
    out = []
    for ci in cats:
        out.append(seen.get(ci, 0))
        seen[ci] = out[-1] + 1
    return out


def render_scene(spec: SceneSpec) -> Scene:
    """Build the scene of ``spec`` (geometry, materials, trajectory, reference); frames render lazily."""
    return Scene(spec)
