"""Procedural object categories: shape families with named semantic keypoints.

Every category is a *family*: :meth:`Category.sample` draws a parameter vector (heights, radii, handle size and
shape, neck length, shade size, ...) and :meth:`Category.build` turns it into a mesh plus the category's keypoints.

Canonical object frame (shared by every instance of a category, so a keypoint sits in roughly the same place on
each): origin at the centre of the object's footprint on the ground plane, +z up, +x = the object's front (the
mug's handle side, the bottle's label side, the direction the lamp's arm reaches), +y = its left (right-handed).
Units are metres. Keypoints are exact mesh vertices, so they lie on the surface (ray-cast visibility is
meaningful); their order is fixed per category (:attr:`Category.names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semcorr_ros.errors import ConfigError
from semcorr_ros.lab.synth.mesh import Mesh, lathe, lathe_point, merge, sphere, superellipse_arc, tube, tube_point

SEGMENTS = 64  # lathe resolution around the axis (divisible by 4: keypoints at 0, 90, 180, 270 degrees)
_J = {"front": 0, "left": SEGMENTS // 4, "back": SEGMENTS // 2, "right": 3 * SEGMENTS // 4}


@dataclass
class Model:
    """One instance: a mesh in the canonical object frame, its part names, keypoints and parameters."""

    category: str
    mesh: Mesh
    part_names: list[str]
    names: list[str]
    keypoints: np.ndarray  # [K, 3] object frame, metres
    params: dict = field(default_factory=dict)

    @property
    def centre(self) -> np.ndarray:
        """Centre of the axis-aligned bounding box (the camera's look-at point)."""
        v = self.mesh.vertices
        return (v.min(0) + v.max(0)) / 2

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere about :attr:`centre`."""
        return float(np.linalg.norm(self.mesh.vertices - self.centre, axis=1).max())


class Category:
    """A shape family. Subclasses set :attr:`name`, :attr:`names`, :attr:`part_names` and implement
    :meth:`sample` and :meth:`build`."""

    name: str = ""
    names: tuple[str, ...] = ()
    part_names: tuple[str, ...] = ()

    def sample(self, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def build(self, params: dict) -> Model:
        raise NotImplementedError

    def instance(self, rng: np.random.Generator) -> Model:
        return self.build(self.sample(rng))

    def _model(self, mesh: Mesh, kps: dict[str, np.ndarray], params: dict) -> Model:
        missing = set(self.names) - set(kps)
        if missing:  # pragma: no cover - programming error
            raise RuntimeError(f"{self.name}: keypoints {sorted(missing)} not built")
        return Model(self.name, mesh, list(self.part_names), list(self.names),
                     np.asarray([kps[n] for n in self.names], dtype=np.float64),
                     {k: round(float(v), 6) for k, v in params.items()})


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


class Mug(Category):
    """A mug: a (tapered, slightly bulged) cup with wall thickness and a loop handle on +x."""

    name = "mug"
    names = ("rim_front", "rim_left", "rim_back", "rim_right", "base_front", "base_left", "base_back",
             "base_right", "handle_top", "handle_outer", "handle_bottom")
    part_names = ("body", "inside", "handle")

    def sample(self, rng):
        top = _u(rng, 0.66, 0.86)
        return dict(height=_u(rng, 0.08, 0.125), radius_top=_u(rng, 0.034, 0.05), taper=_u(rng, 0.76, 1.08),
                    bulge=_u(rng, -0.003, 0.006), wall=_u(rng, 0.0035, 0.007), floor=_u(rng, 0.006, 0.012),
                    handle_top=top, handle_bottom=_u(rng, 0.14, top - 0.3), handle_width=_u(rng, 0.02, 0.04),
                    handle_thickness=_u(rng, 0.0045, 0.0085), handle_squareness=_u(rng, 2.0, 5.0))

    def build(self, p):
        h, rt, wall, bev = p["height"], p["radius_top"], p["wall"], 0.0025
        rb = rt * p["taper"]

        def r_out(z):
            z = np.asarray(z, float)
            return rb + (rt - rb) * z / h + p["bulge"] * np.sin(np.pi * z / h)

        zo = np.linspace(bev, h, 11)
        zi = np.linspace(h, p["floor"], 9)
        prof = ([[0.0, 0.0], [float(r_out(0)) - bev, 0.0]] + [[float(r_out(z)), z] for z in zo]
                + [[rt - wall / 2, h], [rt - wall, h]] + [[float(r_out(z)) - wall, z] for z in zi[1:]]
                + [[0.0, p["floor"]]])
        prof = np.asarray(prof)
        n_out = 2 + len(zo)  # points 0 .. n_out-1 are the outside
        parts = np.where(np.arange(len(prof) - 1) < n_out - 1, 0, 1)
        smooth = np.zeros(len(prof), bool)
        smooth[3:n_out - 1] = True
        smooth[n_out + 3:len(prof) - 2] = True
        cup = lathe(prof, SEGMENTS, parts, smooth)
        kps = {}
        i_rim, i_base = n_out + 0, 2  # rim middle point, bevel top of the outside
        for side in ("front", "left", "back", "right"):
            kps[f"rim_{side}"] = lathe_point(*prof[i_rim], _J[side], SEGMENTS)
            kps[f"base_{side}"] = lathe_point(*prof[i_base], _J[side], SEGMENTS)
        # handle: superellipse loop in the xz plane, its ends buried in the wall
        zt, zb = p["handle_top"] * h, p["handle_bottom"] * h
        zm, half = (zt + zb) / 2, (zt - zb) / 2
        inset = wall
        ring, rad = 16, p["handle_thickness"]
        path = superellipse_arc(33, float(r_out(zm)) - inset, zm, p["handle_width"] + inset, half,
                                p["handle_squareness"])
        path[:, 0] += r_out(path[:, 2]) - r_out(zm)  # follow the (tapered) wall
        yb = np.array([0.0, 1.0, 0.0])
        handle = tube(path, rad, ring, binormal=yb, part=2)
        clear = path[:, 0] - r_out(path[:, 2]) - rad
        k_top = int(np.argmax(clear > 0.002))
        k_bot = len(path) - 1 - int(np.argmax(clear[::-1] > 0.002))
        # ring index ring/2 is the loop's outer side (up at the top, +x in the middle, down at the bottom)
        kps["handle_top"] = tube_point(path, rad, k_top, ring // 2, ring, yb)
        kps["handle_outer"] = tube_point(path, rad, len(path) // 2, ring // 2, ring, yb)
        kps["handle_bottom"] = tube_point(path, rad, k_bot, ring // 2, ring, yb)
        return self._model(merge([cup, handle]), kps, p)


class Bottle(Category):
    """A bottle: body (with an optional waist and a label facing +x), shoulder, neck and cap."""

    name = "bottle"
    names = ("cap_top", "cap_front", "neck_front", "shoulder_front", "shoulder_left", "shoulder_back",
             "shoulder_right", "label_centre", "base_front", "base_left", "base_back", "base_right")
    part_names = ("body", "label", "shoulder", "neck", "cap")

    def sample(self, rng):
        h = _u(rng, 0.17, 0.30)
        cap_h = _u(rng, 0.014, 0.028)
        body = _u(rng, 0.42, 0.64)
        shoulder = min(_u(rng, 0.09, 0.22), 1.0 - body - (cap_h + 0.02) / h)
        return dict(height=h, radius=_u(rng, 0.027, 0.045), body_fraction=body, shoulder_fraction=shoulder,
                    neck_ratio=_u(rng, 0.28, 0.5), cap_height=cap_h, cap_extra=_u(rng, 0.0008, 0.0025),
                    waist=_u(rng, 0.0, 0.12), shoulder_shape=_u(rng, 0.6, 1.8), label_low=_u(rng, 0.15, 0.35),
                    label_high=_u(rng, 0.65, 0.92))

    def build(self, p):
        h, R, bev = p["height"], p["radius"], 0.003
        zb = p["body_fraction"] * h
        zs = zb + p["shoulder_fraction"] * h
        rn = max(0.0095, p["neck_ratio"] * R)
        rc = rn + p["cap_extra"]
        zc = h - p["cap_height"]
        lo, hi = p["label_low"] * zb, p["label_high"] * zb
        mid = (lo + hi) / 2

        def r_body(z):
            return R * (1.0 - p["waist"] * np.sin(np.pi * z / zb) ** 2)

        zbody = np.unique(np.concatenate([np.linspace(bev, zb, 11), [lo, mid, hi]]))
        t = np.linspace(0, 1, 11)[1:]
        prof = [[0.0, 0.0], [R - bev, 0.0]] + [[r_body(z), z] for z in zbody]
        i_body_end = len(prof) - 1
        prof += [[rn + (R - rn) * np.cos(tt * np.pi / 2) ** p["shoulder_shape"], zb + tt * (zs - zb)] for tt in t]
        i_neck0 = len(prof) - 1
        prof += [[rn, zc], [rc, zc], [rc, h - 0.0015], [rc - 0.0015, h], [0.0, h]]
        prof = np.asarray(prof, float)
        zseg = (prof[:-1, 1] + prof[1:, 1]) / 2
        seg = np.arange(len(prof) - 1)
        parts = np.select([seg < i_body_end, seg < i_neck0, seg < i_neck0 + 1], [0, 2, 3], 4)
        parts = np.where((seg < i_body_end) & (zseg > lo) & (zseg < hi), 1, parts)
        smooth = np.zeros(len(prof), bool)
        smooth[3:i_neck0] = True
        m = lathe(prof, SEGMENTS, parts, smooth)
        idx = {tuple(np.round(q, 9)): i for i, q in enumerate(prof)}

        def at(r, z, side):
            i = idx[tuple(np.round([r, z], 9))]
            return lathe_point(*prof[i], _J[side], SEGMENTS)

        kps = {"cap_top": at(0.0, h, "front"), "cap_front": at(rc, h - 0.0015, "front"),
               "neck_front": lathe_point(*prof[i_neck0], 0, SEGMENTS),
               "label_centre": at(r_body(mid), mid, "front")}
        for side in ("front", "left", "back", "right"):
            kps[f"shoulder_{side}"] = lathe_point(*prof[i_body_end], _J[side], SEGMENTS)
            kps[f"base_{side}"] = lathe_point(*prof[2], _J[side], SEGMENTS)
        return self._model(m, kps, p)


class Lamp(Category):
    """A desk lamp: round base, vertical pole with a joint, an arm reaching towards +x and a conical shade
    hanging at its end (open at the bottom, with a bulb inside)."""

    name = "lamp"
    names = ("base_front", "base_left", "base_back", "base_right", "pole_base_front", "pole_top",
             "shade_top_front", "shade_rim_front", "shade_rim_left", "shade_rim_back", "shade_rim_right")
    part_names = ("base", "pole", "joint", "arm", "shade", "shade_inside", "bulb")

    def sample(self, rng):
        p = dict(base_radius=_u(rng, 0.055, 0.095), base_height=_u(rng, 0.012, 0.03), base_dome=_u(rng, 0.45, 0.9),
                 pole_height=_u(rng, 0.16, 0.32), pole_radius=_u(rng, 0.005, 0.011),
                 arm_angle_deg=_u(rng, -15.0, 30.0), arm_length=_u(rng, 0.07, 0.17),
                 shade_height=_u(rng, 0.055, 0.10), shade_top=_u(rng, 0.012, 0.028),
                 shade_bottom=_u(rng, 0.04, 0.075), shade_curve=_u(rng, 0.6, 1.6))
        a = np.radians(p["arm_angle_deg"])
        need = (p["shade_bottom"] + p["pole_radius"] + 0.012) / np.cos(a)
        if p["arm_length"] < need:
            p["arm_length"] = need + _u(rng, 0.0, 0.03)
        low = p["base_height"] + p["pole_height"] + p["arm_length"] * np.sin(a) - p["shade_height"]
        if low < p["base_height"] + 0.05:
            p["pole_height"] += p["base_height"] + 0.05 - low
        return p

    def build(self, p):
        Rb, hb, bev = p["base_radius"], p["base_height"], 0.003
        t = np.linspace(0, 1, 7)
        st = np.sin(t * np.pi / 2)
        dome = [[Rb * (1 - (1 - p["base_dome"]) * a * a), 0.5 * hb + 0.5 * hb * a] for a in st]
        bprof = np.asarray([[0.0, 0.0], [Rb - bev, 0.0], [Rb, bev]] + dome + [[0.0, hb]])
        bsm = np.zeros(len(bprof), bool)
        bsm[4:len(bprof) - 2] = True
        base = lathe(bprof, SEGMENTS, 0, bsm)
        rp, top = p["pole_radius"], hb + p["pole_height"]
        pprof = np.asarray([[0.0, hb - 0.002], [rp, hb - 0.002], [rp, hb + 0.004], [rp, top], [0.0, top]])
        pole = lathe(pprof, 32, 1)
        rj = 1.7 * rp
        joint = sphere(rj, (0.0, 0.0, top), 32, 16, part=2)
        a = np.radians(p["arm_angle_deg"])
        ax, zt = p["arm_length"] * np.cos(a), top + p["arm_length"] * np.sin(a)
        ra = 0.7 * rp
        sock_h = 0.014
        arm_path = np.linspace([0.0, 0.0, top], [ax, 0.0, zt + 0.7 * sock_h], 12)
        arm = tube(arm_path, ra, 12, binormal=np.array([0.0, 1.0, 0.0]), part=3)
        sock = lathe(np.asarray([[0, zt - 0.003], [1.3 * ra + 0.002, zt - 0.003], [1.3 * ra + 0.002, zt + sock_h],
                                 [0, zt + sock_h]]), 24, 3)
        hs, rt, rbs, th = p["shade_height"], p["shade_top"], p["shade_bottom"], 0.0025
        s = np.linspace(0, 1, 9)
        outer = [[rt + (rbs - rt) * ss ** p["shade_curve"], zt - hs * ss] for ss in s]
        inner = [[r - th, z] for r, z in outer[::-1]]
        inner[-1] = [rt - th, zt - th]
        sprof = np.asarray([[0.0, zt]] + outer + [[rbs - th, zt - hs]] + inner[1:] + [[0.0, zt - th]])
        sparts = np.where(np.arange(len(sprof) - 1) < len(outer), 4, 5)
        ssm = np.zeros(len(sprof), bool)
        ssm[2:len(outer)] = True
        ssm[len(outer) + 2:len(sprof) - 2] = True
        shift = np.array([ax, 0.0, 0.0])
        shade = lathe(sprof, SEGMENTS, sparts, ssm)
        shade.vertices = shade.vertices + shift
        sock.vertices = sock.vertices + shift
        bulb = sphere(0.8 * rt, (ax, 0.0, zt - 0.45 * hs), 24, 12, part=6)
        kps = {"pole_base_front": lathe_point(rp, hb + 0.004, 0, 32),
               "pole_top": np.array([0.0, 0.0, top + rj]),
               "shade_top_front": lathe_point(rt, zt, 0, SEGMENTS) + shift}
        for side in ("front", "left", "back", "right"):
            kps[f"base_{side}"] = lathe_point(Rb, bev, _J[side], SEGMENTS)
            kps[f"shade_rim_{side}"] = lathe_point(rbs, zt - hs, _J[side], SEGMENTS) + shift
        return self._model(merge([base, pole, joint, arm, sock, shade, bulb]), kps, p)


CATEGORIES: dict[str, Category] = {c.name: c for c in (Mug(), Bottle(), Lamp())}


def get_category(name: str) -> Category:
    """The category called ``name``; :class:`ConfigError` lists the choices otherwise."""
    try:
        return CATEGORIES[name]
    except KeyError:
        raise ConfigError(f"unknown category {name!r}; choose one of {', '.join(CATEGORIES)}") from None
