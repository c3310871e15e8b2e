"""The ray-cast world of the synthetic scenes: static geometry in one ``open3d.t.geometry.RaycastingScene``
(:class:`World`, built from :class:`_Entity` meshes with their materials) and its shading (Lambert + ambient
under one directional light, with cast shadows), object-fraction and keypoint-visibility queries.

Shapes and units: images are ``[H, W]`` (``rgb`` uint8 ``[H, W, 3]``, depth ``z`` float32 metres along the
camera z axis, inf = no hit, geometry ids uint32); ``K`` [3, 3] in pixels; poses ``T_world_camera`` 4x4 in
metres; points ``[K, 3]`` in metres, world frame.

Frames: the world has +z up (floor at z = 0); meshes are given in world coordinates, materials are evaluated in
each entity's ``frame`` (``T_world_frame``); cameras use the optical convention (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semcorr_ros.lab.synth.materials import Material
from semcorr_ros.lab.synth.mesh import Mesh
from semcorr_ros.lab.synth.o3d import open3d

#: visibility test tolerance: a keypoint is occluded when something is hit closer than its distance minus
#: ``VIS_TOL_M + VIS_TOL_REL * distance``.
VIS_TOL_M = 0.003
VIS_TOL_REL = 0.002


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
