"""Small numpy mesh toolkit for the procedural scenes: surfaces of revolution, swept tubes, boxes.

A :class:`Mesh` carries, next to vertices and triangles, one normal per triangle corner (so a ray hit's shading
normal is the barycentric blend of its triangle's three corner normals: smooth around a lathe and along curved
profile stretches, sharp at creases) and one part index per triangle (materials are assigned per part).
Winding is not kept consistent; the renderer shades both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """``vertices`` [N, 3] float64, ``triangles`` [M, 3] int64, ``normals`` [M, 3, 3] (corner normals),
    ``parts`` [M] int32 part index."""

    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    parts: np.ndarray

    def transformed(self, T: np.ndarray) -> "Mesh":
        """This mesh moved by the rigid transform ``T`` [4, 4]."""
        R, t = T[:3, :3], T[:3, 3]
        return Mesh(self.vertices @ R.T + t, self.triangles, self.normals @ R.T, self.parts)

    def with_part(self, part: int) -> "Mesh":
        return Mesh(self.vertices, self.triangles, self.normals, np.full(len(self.triangles), part, np.int32))


def merge(meshes: list[Mesh]) -> Mesh:
    """One mesh holding all of ``meshes`` (parts indices kept as they are)."""
    offs = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(np.concatenate([m.vertices for m in meshes]),
                np.concatenate([m.triangles + o for m, o in zip(meshes, offs)]),
                np.concatenate([m.normals for m in meshes]),
                np.concatenate([m.parts for m in meshes]))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def lathe_point(r: float, z: float, j: int, segments: int) -> np.ndarray:
    """Position of the lathe vertex of profile point ``(r, z)`` at angle index ``j`` (angle ``2 pi j / segments``
    from +x towards +y): the exact vertex :func:`lathe` makes, so keypoints defined with it lie on the surface."""
    a = 2.0 * np.pi * j / segments
    return np.array([r * np.cos(a), r * np.sin(a), z])


def lathe(profile: np.ndarray, segments: int = 64, parts: np.ndarray | int = 0,
          smooth: np.ndarray | None = None) -> Mesh:
    """Surface of revolution about +z of the polyline ``profile`` [P, 2] of ``(r, z)`` points.

    A profile that starts and ends on the axis (r = 0) gives a closed solid. Traverse it outside-up, then
    inside-down (e.g. axis at the bottom -> outer wall -> rim -> inner wall -> axis) and the corner normals point
    out of the solid. ``parts`` gives a part index per profile segment ([P-1]) or one for all; ``smooth`` [P]
    marks profile points whose normal is the mean of their two segments' normals (curved stretches).
    """
    prof = np.asarray(profile, dtype=np.float64)
    p = len(prof)
    ang = 2.0 * np.pi * np.arange(segments) / segments
    c, s = np.cos(ang), np.sin(ang)
    verts = np.stack([prof[:, :1] * c, prof[:, :1] * s, np.broadcast_to(prof[:, 1:2], (p, segments))], -1)
    verts = verts.reshape(-1, 3)
    # segment normals in the (r, z) half-plane: (dz, -dr) normalised
    d = np.diff(prof, axis=0)
    seg_n = _unit(np.stack([d[:, 1], -d[:, 0]], -1))  # [P-1, 2]
    smooth = np.zeros(p, bool) if smooth is None else np.asarray(smooth, bool)
    # normal at (segment k, its lower point k / upper point k+1)
    n_lo, n_hi = seg_n.copy(), seg_n.copy()
    for i in range(1, p - 1):
        if smooth[i]:
            avg = _unit(seg_n[i - 1] + seg_n[i])
            n_hi[i - 1] = avg
            n_lo[i] = avg
    i = np.arange(p - 1)[:, None]
    j = np.arange(segments)[None, :]
    j1 = (j + 1) % segments
    a, b, cc, dd = i * segments + j, (i + 1) * segments + j, (i + 1) * segments + j1, i * segments + j1
    tris = np.concatenate([np.stack([a, b, cc], -1), np.stack([a, cc, dd], -1)], 0).reshape(-1, 3)

    def n3(n2: np.ndarray, jj: np.ndarray) -> np.ndarray:  # [P-1, 2] x [1, S] -> [P-1, S, 3]
        return np.stack([n2[:, :1] * c[jj], n2[:, :1] * s[jj], np.broadcast_to(n2[:, 1:2], (p - 1, segments))], -1)

    na, nb, nc, nd = n3(n_lo, j[0]), n3(n_hi, j[0]), n3(n_hi, j1[0]), n3(n_lo, j1[0])
    normals = np.concatenate([np.stack([na, nb, nc], -2), np.stack([na, nc, nd], -2)], 0).reshape(-1, 3, 3)
    part_seg = np.broadcast_to(np.asarray(parts, np.int32), (p - 1,))
    part_tri = np.broadcast_to(part_seg[:, None], (p - 1, segments))
    parts_arr = np.concatenate([part_tri, part_tri], 0).reshape(-1)
    # drop triangles that collapse on the axis (two corners at r = 0)
    area2 = np.linalg.norm(np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]]),
                           axis=1)
    keep = area2 > 1e-14
    return Mesh(verts, tris[keep], normals[keep].astype(np.float64), parts_arr[keep].astype(np.int32))


def tube_frames(path: np.ndarray, binormal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per path point ``(normal, binormal)`` [P, 3] each, perpendicular to the path's tangent.

    With ``binormal`` given (a planar path's plane normal) the binormal is that fixed vector; otherwise frames
    are parallel-transported from an arbitrary start.
    """
    path = np.asarray(path, dtype=np.float64)
    tan = np.gradient(path, axis=0)
    tan = _unit(tan)
    if binormal is not None:
        b = np.broadcast_to(_unit(np.asarray(binormal, float)), path.shape).copy()
        n = _unit(np.cross(b, tan))
        return n, b
    ref = np.array([0.0, 0.0, 1.0]) if abs(tan[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    n = [_unit(np.cross(ref, tan[0]))]
    for k in range(1, len(path)):
        v = n[-1] - np.dot(n[-1], tan[k]) * tan[k]
        n.append(_unit(v))
    n = np.asarray(n)
    return n, np.cross(tan, n)


def tube_point(path: np.ndarray, radius, k: int, ring_index: int, ring: int,
               binormal: np.ndarray | None = None) -> np.ndarray:
    """The exact vertex :func:`tube` makes at path point ``k`` and ring index ``ring_index``."""
    n, b = tube_frames(path, binormal)
    r = np.broadcast_to(np.asarray(radius, float), (len(path),))
    a = 2.0 * np.pi * ring_index / ring
    return path[k] + r[k] * (np.cos(a) * n[k] + np.sin(a) * b[k])


def tube(path: np.ndarray, radius, ring: int = 16, binormal: np.ndarray | None = None, caps: bool = True,
         part: int = 0) -> Mesh:
    """A tube of ``radius`` (scalar or per point) swept along ``path`` [P, 3]; ring vertex ``q`` of point ``k``
    sits at angle ``2 pi q / ring`` from the frame's normal towards its binormal (:func:`tube_frames`)."""
    path = np.asarray(path, dtype=np.float64)
    p = len(path)
    n, b = tube_frames(path, binormal)
    r = np.broadcast_to(np.asarray(radius, float), (p,))
    a = 2.0 * np.pi * np.arange(ring) / ring
    dirs = np.cos(a)[None, :, None] * n[:, None, :] + np.sin(a)[None, :, None] * b[:, None, :]  # [P, R, 3]
    verts = (path[:, None, :] + r[:, None, None] * dirs).reshape(-1, 3)
    i = np.arange(p - 1)[:, None]
    q = np.arange(ring)[None, :]
    q1 = (q + 1) % ring
    a0, b0, c0, d0 = i * ring + q, (i + 1) * ring + q, (i + 1) * ring + q1, i * ring + q1
    tris = np.concatenate([np.stack([a0, b0, c0], -1), np.stack([a0, c0, d0], -1)], 0).reshape(-1, 3)
    vn = dirs.reshape(-1, 3)
    normals = vn[tris]
    meshes = [Mesh(verts, tris, normals, np.full(len(tris), part, np.int32))]
    if caps:
        tan = _unit(np.gradient(path, axis=0))
        for k, sign in ((0, -1.0), (p - 1, 1.0)):
            ring_v = verts[k * ring:(k + 1) * ring]
            cv = np.concatenate([ring_v, path[k:k + 1]])
            ct = np.stack([np.arange(ring), (np.arange(ring) + 1) % ring, np.full(ring, ring)], -1)
            cn = np.broadcast_to(sign * tan[k], (ring, 3, 3)).copy()
            meshes.append(Mesh(cv, ct, cn, np.full(ring, part, np.int32)))
    return merge(meshes)


def box(size, centre=(0.0, 0.0, 0.0), part: int = 0) -> Mesh:
    """An axis-aligned box of ``size`` (sx, sy, sz) centred on ``centre`` (flat face normals)."""
    sx, sy, sz = (float(v) / 2 for v in size)
    verts, tris, normals = [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            nrm = np.zeros(3)
            nrm[axis] = sign
            u, v = [a for a in range(3) if a != axis]
            quad = []
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = np.zeros(3)
                p[axis] = sign
                p[u], p[v] = du, dv
                quad.append(p * (sx, sy, sz))
            base = len(verts)
            verts.extend(quad)
            tris.extend([[base, base + 1, base + 2], [base, base + 2, base + 3]])
            normals.extend([[nrm] * 3] * 2)
    return Mesh(np.asarray(verts) + np.asarray(centre, float), np.asarray(tris, np.int64),
                np.asarray(normals, np.float64), np.full(12, part, np.int32))


def cylinder(radius: float, height: float, segments: int = 32, part: int = 0) -> Mesh:
    """Closed cylinder standing on z = 0."""
    return lathe(np.array([[0, 0], [radius, 0], [radius, height], [0, height]]), segments, part)


def sphere(radius: float, centre=(0.0, 0.0, 0.0), segments: int = 32, rings: int = 16, part: int = 0) -> Mesh:
    """UV sphere (smooth normals)."""
    t = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    prof = np.stack([radius * np.cos(t), radius * np.sin(t)], -1)
    prof[0, 0] = prof[-1, 0] = 0.0
    m = lathe(prof, segments, part, smooth=np.ones(len(prof), bool))
    m.vertices = m.vertices + np.asarray(centre, float)
    return m


def superellipse_arc(n_pts: int, centre_x: float, centre_z: float, width: float, half_height: float,
                     exponent: float) -> np.ndarray:
    """Points (x, 0, z) of the right half of a superellipse, from its top (theta = +90 deg) to its bottom."""
    th = np.linspace(np.pi / 2, -np.pi / 2, n_pts)
    e = 2.0 / exponent
    x = centre_x + width * np.abs(np.cos(th)) ** e
    z = centre_z + half_height * np.sign(np.sin(th)) * np.abs(np.sin(th)) ** e
    return np.stack([x, np.zeros_like(x), z], -1)
