"""Scene assembly for the synthetic scenes: the textured room (floor, walls, ceiling), background clutter, the
directional light, and the :class:`~.world.World` of one object or of several objects built from them (plus the
plain object-alone world used to calibrate the camera distance).

Units: metres and radians. Frames: world +z up with the floor at z = 0; each object stands at
``T_world_object`` (its category's canonical frame yawed by ``yaw`` about z); clutter azimuths are measured in
the object frame. Entity 0 (or entities ``0 .. n - 1`` with several objects) are the target objects.
"""

from __future__ import annotations

import numpy as np

from semcorr_ros.lab.synth.camera import _pose, _rot_z
from semcorr_ros.lab.synth.categories import Model
from semcorr_ros.lab.synth.materials import object_materials, random_colour, random_material
from semcorr_ros.lab.synth.mesh import box, cylinder, sphere
from semcorr_ros.lab.synth.world import World, _Entity


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
