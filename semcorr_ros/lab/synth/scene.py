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
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from semcorr_ros.errors import ConfigError
from semcorr_ros.groundtruth import FrameGroundTruth
from semcorr_ros.lab.synth.categories import Model, get_category
from semcorr_ros.lab.synth.materials import Material, object_materials, random_colour, random_material
from semcorr_ros.lab.synth.mesh import Mesh, box, cylinder, sphere
from semcorr_ros.lab.synth.noise import DepthNoise, clean_depth_mm, noisy_depth_mm
from semcorr_ros.lab.synth.o3d import open3d

#: header stamp of frame 0 (2026-01-01T00:00:00Z); frame i is stamped START_NS + round(i * 1e9 / rate).
START_NS = 1_767_225_600 * 1_000_000_000
#: RealSense D435-like colour intrinsics at 640x480 (scaled with the width for other sizes).
DEFAULT_FX = 615.0
#: visibility test tolerance: a keypoint is occluded when something is hit closer than its distance minus
#: ``VIS_TOL_M + VIS_TOL_REL * distance``.
VIS_TOL_M = 0.003
VIS_TOL_REL = 0.002
SMALL_OBJECT_MAX_FRACTION = 0.05
#: camera trajectories: ``swing`` (on the reference's side) and ``full`` (one turn around the object)
ORBITS = ("swing", "full")
#: at most this many views in a synthetic reference set (the reference set format's own limit)
MAX_REFERENCE_VIEWS = 16
#: at most this many objects in one scene (the objects file's limit)
MAX_OBJECTS = 8
#: in a reference set, a view needs at least this many visible keypoints (else it is raised, then left out)
MIN_SET_VIEW_KEYPOINTS = 3


def intrinsics(width: int, height: int, fx: float | None = None) -> np.ndarray:
    """``K`` [3, 3]: ``fx = fy = 615 * width / 640`` unless given, principal point at the image centre."""
    f = float(fx) if fx is not None else DEFAULT_FX * width / 640.0
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


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
            (first) object entirely (:func:`_occlude`; its keypoints are not visible, its box is empty); ``()``
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


# --------------------------------------------------------------------------------------------------------------
# random streams


def _rng(spec_seed: int, category: str, purpose: str, *extra: int) -> np.random.Generator:
    """An independent, stable stream per (seed, category, purpose[, index])."""
    return np.random.default_rng([int(spec_seed), zlib.crc32(category.encode()), zlib.crc32(purpose.encode()),
                                  *[int(e) for e in extra]])


# --------------------------------------------------------------------------------------------------------------
# geometry helpers


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """``T_world_camera`` of an optical-frame camera at ``position`` looking at ``target`` (world z up)."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-9:  # looking straight down/up
        x = np.array([1.0, 0.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        x, y = c * x + s * y, -s * x + c * y
    return _pose(np.stack([x, y, z], 1), position)


@dataclass
class Orbit:
    """Smooth camera motion around ``centre`` (world), azimuth measured in the object frame (yaw ``yaw``)."""

    centre: np.ndarray
    yaw: float
    az0: float
    az_amp: float
    az_speed: float
    az_phase: float
    el0: float
    el_amp: float
    el_period: float
    el_phase: float
    dist: float
    dist_amp: float
    dist_period: float
    dist_phase: float
    look_amp: np.ndarray
    look_period: np.ndarray
    look_phase: np.ndarray
    roll_amp: float
    roll_period: float
    roll_phase: float
    #: ``full`` orbits: seconds of one 360-degree turn (the azimuth then grows steadily from ``az0``)
    full_period: float | None = None

    @staticmethod
    def sample(rng: np.random.Generator, centre: np.ndarray, yaw: float, radius: float, small: bool) -> "Orbit":
        """A random orbit around the reference's side of the object: object-frame azimuth centred at 20-50 deg
        (the reference view is at 35 deg) swinging +-25-45 deg, i.e. within about -25..95 deg of the front (+x).
        A robot looks at the side its reference shows; the categories are near-symmetric about the x-z plane, so
        views from behind would make left/right keypoints ambiguous by construction."""
        deg = np.pi / 180
        return Orbit(centre=np.asarray(centre, float), yaw=yaw, az0=rng.uniform(20, 50) * deg,
                     az_amp=rng.uniform(25, 45) * deg, az_speed=rng.uniform(18, 35) * deg,
                     az_phase=rng.uniform(-1.0, 1.0),
                     el0=(rng.uniform(18, 34) if small else rng.uniform(22, 42)) * deg,
                     el_amp=rng.uniform(3, 8) * deg,
                     el_period=rng.uniform(5, 10), el_phase=rng.uniform(0, 2 * np.pi), dist=1.0,
                     dist_amp=rng.uniform(0.03, 0.06) if small else rng.uniform(0.05, 0.12),
                     dist_period=rng.uniform(4, 9), dist_phase=rng.uniform(0, 2 * np.pi),
                     look_amp=rng.uniform(0.05, 0.2, 3) * radius, look_period=rng.uniform(3, 8, 3),
                     look_phase=rng.uniform(0, 2 * np.pi, 3), roll_amp=rng.uniform(0, 4) * deg,
                     roll_period=rng.uniform(4, 9), roll_phase=rng.uniform(0, 2 * np.pi))

    def azimuth(self, t: float) -> float:
        """Object-frame azimuth (rad) of the camera at time ``t`` (s): bounded, smooth, moving at ~az_speed
        (``full``: ``az0 + 2 pi t / full_period``, one turn)."""
        if self.full_period is not None:
            return self.az0 + 2 * np.pi * t / self.full_period
        return self.az0 + self.az_amp * np.sin(self.az_speed * t / self.az_amp + self.az_phase)

    def pose(self, t: float, dist_scale: float = 1.0) -> np.ndarray:
        el = self.el0 + self.el_amp * np.sin(2 * np.pi * t / self.el_period + self.el_phase)
        d = self.dist * dist_scale * (1 + self.dist_amp * np.sin(2 * np.pi * t / self.dist_period + self.dist_phase))
        a = self.azimuth(t) + self.yaw
        pos = self.centre + d * np.array([np.cos(el) * np.cos(a), np.cos(el) * np.sin(a), np.sin(el)])
        look = self.centre + self.look_amp * np.sin(2 * np.pi * t / self.look_period + self.look_phase)
        roll = self.roll_amp * np.sin(2 * np.pi * t / self.roll_period + self.roll_phase)
        return look_at(pos, look, roll)

    def max_height(self) -> float:
        return float(self.centre[2] + self.dist * (1 + self.dist_amp) * np.sin(self.el0 + self.el_amp))


def view_pose(centre: np.ndarray, yaw: float, azimuth: float, elevation: float, distance: float) -> np.ndarray:
    """``T_world_camera`` of a static view at object-frame ``azimuth``/``elevation`` (rad) looking at ``centre``."""
    a = azimuth + yaw
    pos = centre + distance * np.array([np.cos(elevation) * np.cos(a), np.cos(elevation) * np.sin(a),
                                        np.sin(elevation)])
    return look_at(pos, centre)


# --------------------------------------------------------------------------------------------------------------
# the ray-cast world


@dataclass
class _Entity:
    mesh: Mesh  # world coordinates
    materials: list[Material]  # one per part index of the mesh
    frame: np.ndarray  # T_world_frame in which the materials are evaluated
    casts_shadow: bool = True


class World:
    """Static geometry in one ``RaycastingScene`` plus the per-triangle shading tables.

    Entity 0 is the target object; its geometry id is :attr:`target_id`. With several objects, entities
    ``0 .. n_targets - 1`` are the objects (geometry ids :attr:`target_ids`).
    """

    def __init__(self, entities: list[_Entity], light_dir: np.ndarray, light_rgb: np.ndarray, ambient: float,
                 diffuse: float, shadows: bool = True, n_targets: int = 1):
        o3d = open3d()
        o3c = o3d.core
        self.scene = o3d.t.geometry.RaycastingScene()
        self.shadow_scene = o3d.t.geometry.RaycastingScene() if shadows else None
        offs, normals, mat_idx, self.materials, frames = [], [], [], [], []
        n_tri = 0
        ids = []
        for e in entities:
            v = o3c.Tensor(np.ascontiguousarray(e.mesh.vertices, np.float32))
            f = o3c.Tensor(np.ascontiguousarray(e.mesh.triangles, np.uint32))
            ids.append(self.scene.add_triangles(v, f))
            if self.shadow_scene is not None and e.casts_shadow:
                self.shadow_scene.add_triangles(v, f)
            offs.append(n_tri)
            n_tri += len(e.mesh.triangles)
            normals.append(e.mesh.normals.astype(np.float32))
            mat_idx.append(len(self.materials) + e.mesh.parts.astype(np.int64))
            for m in e.materials:
                self.materials.append(m)
                frames.append(e.frame)
        if ids != list(range(len(entities))):  # pragma: no cover - open3d numbers geometries 0, 1, ...
            raise RuntimeError(f"unexpected open3d geometry ids {ids}")
        self.target_id = ids[0]
        self.target_ids = list(ids[:n_targets])
        self.tri_offset = np.asarray(offs, np.int64)
        cn = np.concatenate(normals)  # [M, 3 corners, 3 xyz]
        self.corner_normals = np.ascontiguousarray(cn.reshape(-1, 9).T)  # [9, M]
        self.tri_material = np.concatenate(mat_idx)
        self.frames_R = np.asarray([f[:3, :3] for f in frames], np.float32)
        self.frames_t = np.asarray([f[:3, 3] for f in frames], np.float32)
        self.light_dir = (light_dir / np.linalg.norm(light_dir)).astype(np.float32)
        self.light_rgb = np.asarray(light_rgb, np.float32)
        self.ambient, self.diffuse = float(ambient), float(diffuse)
        # Only points within this horizontal distance of the world origin can lie in a shadow (the casters'
        # extent plus the length of the tallest one's shadow); shadow rays are cast for those alone.
        cv = [e.mesh.vertices for e in entities if e.casts_shadow]
        if cv:
            cv = np.concatenate(cv)
            sin_el = float(np.clip(self.light_dir[2], 0.05, 1.0))
            reach = float(cv[:, 2].max()) * np.sqrt(1 - sin_el ** 2) / sin_el
            self.shadow_radius = float(np.hypot(cv[:, 0], cv[:, 1]).max()) + reach + 0.01
        else:
            self.shadow_radius = 0.0
        self._dirs_cache: dict = {}

    def _cast(self, rays: np.ndarray, shadow: bool = False) -> dict:
        o3c = open3d().core
        scene = self.shadow_scene if shadow else self.scene
        res = scene.cast_rays(o3c.Tensor.from_numpy(np.ascontiguousarray(rays, np.float32)))
        return {k: v.numpy() for k, v in res.items()}

    def _pixel_dirs(self, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel ``(x/z, y/z)`` of its centre's ray in the camera frame, flat float32 arrays."""
        key = (K.tobytes(), width, height)
        if key not in self._dirs_cache:
            u = ((np.arange(width, dtype=np.float64) - K[0, 2]) / K[0, 0]).astype(np.float32)
            v = ((np.arange(height, dtype=np.float64) - K[1, 2]) / K[1, 1]).astype(np.float32)
            self._dirs_cache = {key: (np.tile(u, height), np.repeat(v, width))}
        return self._dirs_cache[key]

    def cast_camera(self, T_wc: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[dict, list]:
        """Primary rays (one per pixel centre, direction with camera z = 1, so ``t_hit`` is the depth z).

        Returns the cast and the world ray directions as three flat arrays. (Everything per pixel is kept as
        separate x/y/z arrays: numpy's ``[N, 3] @ [3, 3]`` goes through BLAS and was 20-100x slower here.)
        """
        px, py = self._pixel_dirs(K, width, height)
        R = T_wc[:3, :3].astype(np.float32)
        dirs = [R[j, 0] * px + R[j, 1] * py + R[j, 2] for j in range(3)]
        rays = np.empty((len(px), 6), np.float32)
        rays[:, :3] = T_wc[:3, 3]
        for j in range(3):
            rays[:, 3 + j] = dirs[j]
        return self._cast(rays), dirs

    def render(self, T_wc: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
        """``(rgb uint8 [H, W, 3], z float32 [H, W] metres (inf = no hit), geometry ids uint32 [H, W])``."""
        res, dirs = self.cast_camera(T_wc, K, width, height)
        t = res["t_hit"]
        gid = res["geometry_ids"]
        hit = np.isfinite(t)
        all_hit = bool(hit.all())  # the usual case inside the closed room: no compaction needed
        idx = slice(None) if all_hit else np.flatnonzero(hit)
        n_hit = len(t) if all_hit else len(idx)

        def pick(a):
            return a if all_hit else a[idx]

        tt = pick(t)
        c = T_wc[:3, 3].astype(np.float32)
        d = [pick(dj) for dj in dirs]
        P = [c[j] + tt * d[j] for j in range(3)]
        tri = self.tri_offset[pick(gid)] + pick(res["primitive_ids"])
        uv = pick(res["primitive_uvs"])
        u, v = np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1])
        w = 1 - u - v
        C = self.corner_normals[:, tri]  # [9, n]: corner-major, xyz minor
        n = [w * C[j] + u * C[3 + j] + v * C[6 + j] for j in range(3)]
        ngm = pick(res["primitive_normals"])
        ng = [np.ascontiguousarray(ngm[:, j]) for j in range(3)]
        flip = np.where(n[0] * ng[0] + n[1] * ng[1] + n[2] * ng[2] < 0, -1.0, 1.0).astype(np.float32)
        back = (ng[0] * d[0] + ng[1] * d[1] + ng[2] * d[2]) > 0  # seen from behind: shade the side facing us
        sgn = np.where(back, np.float32(-1), np.float32(1))
        ng = [g * sgn for g in ng]
        flip *= sgn
        flip /= np.maximum(np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), np.float32(1e-12))
        n = [nj * flip for nj in n]
        mat = self.tri_material[tri]
        albedo = np.empty((n_hit, 3), np.float32)
        emissive = np.zeros(n_hit, bool)
        for mi in np.flatnonzero(np.bincount(mat, minlength=len(self.materials))):
            sel = np.flatnonzero(mat == mi)
            Rm, tm = self.frames_R[mi], self.frames_t[mi]
            q = [P[j][sel] - tm[j] for j in range(3)]
            local = [q[0] * Rm[0, k] + q[1] * Rm[1, k] + q[2] * Rm[2, k] for k in range(3)]
            albedo[sel] = self.materials[mi].albedo(local)
            if self.materials[mi].emissive:
                emissive[sel] = True
        L = self.light_dir
        ndl = np.clip(n[0] * L[0] + n[1] * L[1] + n[2] * L[2], 0.0, 1.0)
        if self.shadow_scene is not None:
            r2 = np.float32(self.shadow_radius ** 2)
            lit_idx = np.flatnonzero((ndl > 0) & (P[0] * P[0] + P[1] * P[1] < r2))
            srays = np.empty((len(lit_idx), 6), np.float32)
            for j in range(3):
                srays[:, j] = P[j][lit_idx] + ng[j][lit_idx] * np.float32(5e-4)
            srays[:, 3:] = L
            shadowed = np.isfinite(self._cast(srays, shadow=True)["t_hit"])
            ndl[lit_idx[shadowed]] *= np.float32(0.12)
        shade = np.float32(self.ambient) + np.float32(self.diffuse) * ndl
        col = albedo * shade[:, None] * self.light_rgb
        col[emissive] = albedo[emissive]
        rgb = np.zeros((height * width, 3), np.uint8)
        rgb[idx] = np.clip(col * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
        return rgb.reshape(height, width, 3), t.reshape(height, width), gid.reshape(height, width)

    def target_fraction(self, T_wc: np.ndarray, K: np.ndarray, width: int, height: int) -> float:
        res, _ = self.cast_camera(T_wc, K, width, height)
        gid = res["geometry_ids"]
        if len(self.target_ids) == 1:
            return float(np.mean(gid == self.target_id))
        return float(np.mean(np.isin(gid, self.target_ids)))

    def visibility(self, T_wc: np.ndarray, points_world: np.ndarray) -> np.ndarray:
        """[K] bool: nothing is hit between the camera and each point (up to the tolerance)."""
        c = T_wc[:3, 3]
        rays = np.concatenate([np.broadcast_to(c, points_world.shape), points_world - c], 1)
        t = self._cast(rays)["t_hit"]
        dist = np.linalg.norm(points_world - c, axis=1)
        tol = (VIS_TOL_M + VIS_TOL_REL * dist) / np.maximum(dist, 1e-9)
        return t >= 1.0 - tol


# --------------------------------------------------------------------------------------------------------------
# scene assembly


def _room(rng: np.random.Generator, centre: np.ndarray, half: float, ceiling: float) -> list[_Entity]:
    """Floor (z = 0), four walls and a ceiling around ``centre`` (thin boxes), textured in the world frame."""
    floor_mat = random_material(rng, ("checks", "bands", "stripes", "dots"), scale=(0.04, 0.25), s=(0.05, 0.6),
                                v=(0.35, 0.85), grain=(0.04, 0.12))
    # a floor in two related tones (wood, tiles) rather than two random colours
    floor_mat.colours[1] = np.clip(floor_mat.colours[0] * rng.uniform(0.45, 0.8)
                                   + rng.uniform(-0.06, 0.06, 3), 0.02, 0.98)
    wall_mat = random_material(rng, ("plain", "bands", "stripes", "checks"), scale=(0.15, 0.8), s=(0.0, 0.4),
                               v=(0.5, 0.95))
    ceil_mat = random_material(rng, ("plain",), s=(0.0, 0.1), v=(0.7, 0.95))
    cx, cy = float(centre[0]), float(centre[1])
    th = 0.02
    floor = box((2 * half, 2 * half, th), (cx, cy, -th / 2))
    walls = [box((th, 2 * half, ceiling), (cx + s * half, cy, ceiling / 2)) for s in (-1, 1)]
    walls += [box((2 * half, th, ceiling), (cx, cy + s * half, ceiling / 2)) for s in (-1, 1)]
    ceil = box((2 * half, 2 * half, th), (cx, cy, ceiling + th / 2))
    eye = np.eye(4)
    out = [_Entity(floor, [floor_mat], eye, casts_shadow=False)]
    out += [_Entity(w, [wall_mat], eye, casts_shadow=False) for w in walls]
    out.append(_Entity(ceil, [ceil_mat], eye, casts_shadow=False))
    return out


def _clutter(rng: np.random.Generator, centre: np.ndarray, yaw: float, obj_radius: float, foot: float,
             free_az: tuple[float, float], ring: tuple[float, float] | None = None) -> list[_Entity]:
    """4-8 random boxes/cylinders/spheres on the floor, behind and beside the object: their (object-frame)
    azimuths avoid the sector ``free_az`` the camera moves in. With ``ring = (r_in, r_out)`` (full orbits, where
    the camera goes all round) they stand at any azimuth between ``r_in`` and ``r_out`` of the centre instead,
    outside the camera's circle (the same random draws, mapped to that ring)."""
    lo, hi = free_az
    out = []
    n = int(rng.integers(4, 9))
    placed: list[tuple[float, float, float]] = []
    for _ in range(n * 4):
        if len(out) >= n:
            break
        size = obj_radius * rng.uniform(0.35, 1.3)
        az = rng.uniform(hi, lo + 2 * np.pi) + yaw  # outside [lo, hi]
        u = rng.uniform(0.03, 0.45)
        if ring is None:
            rho = foot + 0.5 * size + u * max(obj_radius * 3, 0.2)
        else:
            rho = ring[0] + 0.5 * size + (u - 0.03) / 0.42 * max(ring[1] - ring[0] - size, 0.02)
        pos = centre[:2] + rho * np.array([np.cos(az), np.sin(az)])
        if any(np.hypot(pos[0] - x, pos[1] - y) < 0.5 * (size + s) for x, y, s in placed):
            continue
        kind = int(rng.integers(3))
        if kind == 0:
            sx, sy, sz = size * rng.uniform(0.5, 1.0, 3)
            m = box((sx, sy, sz), (0.0, 0.0, sz / 2)).transformed(_pose(_rot_z(rng.uniform(0, np.pi)), [0, 0, 0]))
        elif kind == 1:
            m = cylinder(0.5 * size * rng.uniform(0.4, 1.0), size * rng.uniform(0.5, 1.4))
        else:
            r = 0.5 * size * rng.uniform(0.5, 1.0)
            m = sphere(r, (0.0, 0.0, r))
        m = m.transformed(_pose(np.eye(3), [pos[0], pos[1], 0.0]))
        mat = random_material(rng, scale=(0.01, 0.05))
        out.append(_Entity(m.with_part(0), [mat], np.eye(4)))
        placed.append((pos[0], pos[1], size))
    return out


def _light(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(35, 75) * np.pi / 180
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    tint = 0.85 + 0.15 * random_colour(rng, (0.0, 0.3), (1.0, 1.0))
    return d, tint / tint.max(), float(rng.uniform(0.25, 0.45)), float(rng.uniform(0.55, 0.8))


def _build_world(model: Model, rng_mat: np.random.Generator, rng_room: np.random.Generator,
                 rng_clutter: np.random.Generator | None, yaw: float, room_half: float, ceiling: float,
                 free_az: tuple[float, float], shadows: bool,
                 ring: tuple[float, float] | None = None) -> tuple[World, np.ndarray]:
    """The world of one object (at the world origin, yawed by ``yaw``) in its room, with clutter."""
    T_wo = _pose(_rot_z(yaw), [0.0, 0.0, 0.0])
    mats = object_materials(model.category, model.part_names, model.params, rng_mat)
    target = _Entity(model.mesh.transformed(T_wo), mats, T_wo)
    room_centre = rng_room.uniform(-0.3, 0.3, 2) * room_half
    entities = [target] + _room(rng_room, room_centre, room_half, ceiling)
    if rng_clutter is not None:
        v = model.mesh.vertices
        foot = float(np.hypot(v[:, 0], v[:, 1]).max())
        entities += _clutter(rng_clutter, np.zeros(3), yaw, model.radius, foot, free_az, ring)
    light = _light(rng_room)
    return World(entities, *light, shadows=shadows), T_wo


def _build_group_world(models: list[Model], rng_mats: list[np.random.Generator], poses: list[np.ndarray],
                       rng_room: np.random.Generator, rng_clutter: np.random.Generator | None, yaw: float,
                       obj_radius: float, foot: float, room_half: float, ceiling: float,
                       free_az: tuple[float, float], shadows: bool, ring: tuple[float, float] | None) -> World:
    """Several objects (``poses``: ``T_world_object`` each) in one room: entities 0..n-1 are the objects."""
    targets = []
    for model, rng_mat, T_wo in zip(models, rng_mats, poses):
        mats = object_materials(model.category, model.part_names, model.params, rng_mat)
        targets.append(_Entity(model.mesh.transformed(T_wo), mats, T_wo))
    room_centre = rng_room.uniform(-0.3, 0.3, 2) * room_half
    entities = targets + _room(rng_room, room_centre, room_half, ceiling)
    if rng_clutter is not None:
        entities += _clutter(rng_clutter, np.zeros(3), yaw, obj_radius, foot, free_az, ring)
    light = _light(rng_room)
    return World(entities, *light, shadows=shadows, n_targets=len(models))


def _target_only_world(model: Model, yaw: float, group: list[tuple[Model, np.ndarray]] | None = None) -> World:
    """The object alone (plain materials, no room, no shadows): for the distance calibration. ``group``: the
    objects ``(model, T_world_object)`` of a several-object scene instead (all of them count as the target)."""
    from semcorr_ros.lab.synth.materials import Material

    plain = Material("plain", np.full((3, 3), 0.5, np.float32), 0.01, np.eye(3), np.zeros(3), grain=0.0)
    if group is None:
        group = [(model, _pose(_rot_z(yaw), [0.0, 0.0, 0.0]))]
    ents = [_Entity(m.mesh.transformed(T), [plain] * len(m.part_names), T) for m, T in group]
    return World(ents, np.array([0.0, 0.0, 1.0]), np.ones(3), 0.5, 0.5, shadows=False, n_targets=len(ents))


def _calibrate_distance(world: World, pose_fn, times: list[float], target: float, aspect: float,
                        fx_over_w: float, d0: float) -> float:
    """Scale of the camera distance such that the mean object fraction over ``times`` is ``target``."""
    w = 128
    h = max(16, int(round(w / aspect)))
    K = intrinsics(w, h, fx_over_w * w)
    scale = d0
    for _ in range(4):
        f = np.mean([world.target_fraction(pose_fn(t, scale), K, w, h) for t in times])
        if f <= 0:
            scale *= 0.7
            continue
        ratio = float(np.clip(np.sqrt(f / target), 0.5, 2.0))
        scale *= ratio
        if abs(ratio - 1) < 0.02:
            break
    return scale


def _fit_points_distance(orbit: Orbit, points_world: np.ndarray, K: np.ndarray, width: int, height: int,
                         d0: float, times: list[float], margin: float = 0.04) -> float:
    """The smallest orbit distance >= ``d0`` (in 4 % steps) at which every point projects inside the image,
    ``margin`` x the image size away from its border, at each of ``times``."""
    dist0 = orbit.dist
    lo_x, hi_x = margin * width, (1 - margin) * width
    lo_y, hi_y = margin * height, (1 - margin) * height
    d = d0
    try:
        for _ in range(60):
            orbit.dist = d
            ok = True
            for t in times:
                T_cw = np.linalg.inv(orbit.pose(t))
                p = points_world @ T_cw[:3, :3].T + T_cw[:3, 3]
                if (p[:, 2] <= 1e-3).any():
                    ok = False
                    break
                uv = p @ K.T
                u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
                if u.min() < lo_x or u.max() > hi_x or v.min() < lo_y or v.max() > hi_y:
                    ok = False
                    break
            if ok:
                return d
            d *= 1.04
        return d
    finally:
        orbit.dist = dist0


def _fit_distance(radius: float, K: np.ndarray, width: int, height: int, margin: float = 1.08) -> float:
    """Distance at which a sphere of ``radius`` centred on the optical axis fits the narrower field of view."""
    half = min(np.arctan(width / 2 / K[0, 0]), np.arctan(height / 2 / K[1, 1]))
    return margin * radius / np.sin(half)


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


def _duplicate_index(cats: tuple[str, ...]) -> list[int]:
    """Per entry, how many times its category came before (0 for the first of each category)."""
    seen: dict[str, int] = {}
    out = []
    for ci in cats:
        out.append(seen.get(ci, 0))
        seen[ci] = out[-1] + 1
    return out


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


def render_scene(spec: SceneSpec) -> Scene:
    """Build the scene of ``spec`` (geometry, materials, trajectory, reference); frames render lazily."""
    return Scene(spec)
