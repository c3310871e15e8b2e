"""The engine's per-frame pipeline: one small interface, one function per stage.

::

    Frame.start(image, depth, K, ...)          validated inputs
      -> encode          fmap [C, G, G] of the live frame (centred with the reference's means)
      -> prior           consensus prior [K, 2] (3D similarity or 2D affine of the whole object), optional
      -> match           first pass: Matches (xy [K, 2] pixels, score [K], feats [K, 5])
      -> depth_rematch   fit the object's depth model at the matches -> cell weights -> match again
      -> crop            KBC: crop reference and frame around the object, match inside (same prior and
                         depth-aware re-match), map back (kbc.kbc_refine)
      -> lift            validity; 3D points in the live camera frame (metres) from depth + intrinsics
      -> pose            RANSAC + Umeyama pose reference -> live (optionally seeded by the 3D prior)
    Frame.result(ref)                          MatchResult

Every stage is ``stage(ctx: Context, frame: Frame) -> None``: it reads what earlier stages left on the frame,
adds its own part, records its time under its key in ``frame.timings`` and does nothing when it does not apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import depth_aware, geometry, kbc, prior3d
from semcorr_ros.engine.consensus import coarse_map, consensus_prior
from semcorr_ros.engine.inputs import validate_image
from semcorr_ros.engine.matcher import Matches, ViewMatcher
from semcorr_ros.engine.matching import pixels_to_uv, uv_to_pixels
from semcorr_ros.engine.pose import estimate_pose
from semcorr_ros.engine.types import MatchResult, PoseResult
from semcorr_ros.engine.views import Reference, View
from semcorr_ros.errors import InputError

__all__ = ["Context", "Frame", "Stage", "PIPELINE", "encode", "prior", "match", "depth_rematch", "crop", "lift",
           "pose", "rematch", "consensus"]


@dataclass
class Context:
    """What the stages share across a frame: options, the active reference and the engine's models."""

    config: EngineConfig
    ref: Reference
    device: torch.device
    encode: Callable[..., torch.Tensor]         # (uint8 [H, W, 3], means, cache_key=None) -> fmap [C, G, G]
    matcher: ViewMatcher                        # (view, fmap, size, weights, prior) -> Matches
    reference_crop: Callable[[], View]          # the reference's KBC crop view (computed on first use)


@dataclass
class Frame:
    """One live frame on its way through the stages: the inputs, then what each stage adds."""

    image: np.ndarray                           # uint8 [H, W, 3] RGB
    depth: np.ndarray | None                    # [H, W] metres, NaN invalid
    K: np.ndarray | None                        # [3, 3] live intrinsics
    distortion: geometry.Distortion | None
    object_box: Sequence[float] | None          # (x0, y0, x1, y1) pixels
    cache_key: Hashable | None
    t0: float
    timings: dict[str, float] = field(default_factory=dict)
    fmap: torch.Tensor | None = None            # encode: [C, G, G]
    prior: torch.Tensor | None = None           # prior: [K, 2] normalised live coordinates
    prior_mode: str = "none"                    # prior: "none", "2d" or "3d"
    p3d: prior3d.Prior3D | None = None          # prior: the 3D fit when one was attempted
    m: Matches | None = None                    # match / depth_rematch / crop
    depth_model: depth_aware.DepthModel | None = None  # depth_rematch (re-fitted in the crop)
    kbc_used: bool = False                      # crop
    valid: np.ndarray | None = None             # lift: [K] bool
    points: np.ndarray | None = None            # lift: [K, 3] metres, NaN where none
    has_3d: np.ndarray | None = None            # lift: [K] bool
    pose: PoseResult | None = None              # pose

    @staticmethod
    def start(image: np.ndarray, depth: np.ndarray | None, intrinsics: np.ndarray | None,
              distortion: geometry.Distortion | None, object_box: Sequence[float] | None,
              cache_key: Hashable | None, cfg: EngineConfig) -> "Frame":
        """Validate the inputs (typed errors) into a new frame."""
        t0 = time.perf_counter()
        image = validate_image(image)
        h, w = image.shape[:2]
        depth_m = None if depth is None else geometry.validate_depth(depth, (h, w), cfg.depth_scale)
        K = None if intrinsics is None else geometry.validate_intrinsics(intrinsics)
        if distortion is not None and not isinstance(distortion, geometry.Distortion):
            raise InputError(f"distortion must be a geometry.Distortion or None, got {type(distortion).__name__}")
        return Frame(image, depth_m, K, distortion, object_box, cache_key, t0)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` pixels."""
        return self.image.shape[1], self.image.shape[0]

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the seconds the block takes to ``timings[key]``."""
        t = time.perf_counter()
        yield
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t

    def result(self, ref: Reference) -> MatchResult:
        self.timings["total"] = time.perf_counter() - self.t0
        return MatchResult(names=list(ref.names), ref_xy=ref.keypoints.copy(), xy=self.m.xy, score=self.m.score,
                           valid=self.valid, points3d=self.points, has_3d=self.has_3d, pose=self.pose,
                           kbc_used=self.kbc_used, depth_weighted=self.depth_model is not None,
                           prior_used=self.prior is not None, prior_mode_used=self.prior_mode,
                           prior_transform=_prior_transform(self.p3d), score_features=self.m.feats,
                           timings=self.timings)


Stage = Callable[[Context, Frame], None]


# ---------------------------------------------------------------------------------------------------- stages
def encode(ctx: Context, f: Frame) -> None:
    """The live frame's fused map, centred with the reference's means (``features``: since the frame started)."""
    f.fmap = ctx.encode(f.image, ctx.ref.full.means, f.cache_key)
    f.timings["features"] = time.perf_counter() - f.t0


def prior(ctx: Context, f: Frame) -> None:
    """The consensus prior of the full frame (``consensus_prior`` with a positive ``consensus_weight``)."""
    if _prior_on(ctx.config):
        with f.timed("consensus"):
            f.prior, f.prior_mode, f.p3d = consensus(ctx, ctx.ref.full, f.fmap, f.depth, f.K)


def match(ctx: Context, f: Frame) -> None:
    """First pass: the reference keypoints into the full frame."""
    with f.timed("match"):
        f.m = ctx.matcher(ctx.ref.full, f.fmap, f.size, None, f.prior)


def depth_rematch(ctx: Context, f: Frame) -> None:
    """Depth-aware pass of the full frame (``depth_aware`` and a depth image)."""
    if ctx.config.depth_aware and f.depth is not None:
        with f.timed("match"):
            f.m, f.depth_model = rematch(ctx, ctx.ref.full, f.fmap, f.size, f.depth, f.m, f.prior)


def crop(ctx: Context, f: Frame) -> None:
    """KBC (``kbc`` on, or auto for a small object): match again inside crops around the object."""
    cfg = ctx.config
    if ctx.ref.crop_box is None:
        return
    with f.timed("kbc"):
        max_fraction = 1.0 if cfg.kbc == "on" else cfg.kbc_max_fraction
        out = kbc.kbc_refine(lambda src_box, box: _match_crop(ctx, f, box), ctx.ref.keypoints, ctx.ref.full.size,
                             f.m.xy, f.m.score, f.size, cfg.kbc_margin, max_fraction, cfg.score_threshold,
                             object_box=f.object_box)
        if out is not None:
            f.m = replace(out[1], xy=out[0])
            f.kbc_used = True


def lift(ctx: Context, f: Frame) -> None:
    """Validity (score and inside the image); with depth and intrinsics the valid matches' 3D points."""
    cfg, (w, h), xy = ctx.config, f.size, f.m.xy
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
    f.valid = (f.m.score >= cfg.score_threshold) & inside
    k = len(ctx.ref.names)
    f.points, f.has_3d = np.full((k, 3), np.nan), np.zeros(k, bool)
    if f.depth is not None and f.K is not None:
        with f.timed("lift"):
            f.points, f.has_3d = geometry.lift(f.depth, xy, f.K, cfg.depth_radius, distortion=f.distortion)
            f.has_3d &= f.valid
            f.points[~f.has_3d] = np.nan


def pose(ctx: Context, f: Frame) -> None:
    """Pose reference -> live from the 3D-3D keypoint pairs (the reference has 3D, the frame depth + K)."""
    cfg, ref = ctx.config, ctx.ref
    if f.depth is None or f.K is None or ref.points3d is None:
        return
    with f.timed("pose"):
        use = f.has_3d & ref.has_3d
        f.pose = estimate_pose(ref.points3d, f.points, mask=use, threshold=cfg.pose_threshold,
                               iterations=cfg.pose_iterations, min_inliers=cfg.pose_min_inliers)
        if cfg.pose_from_prior and not f.pose.valid and f.p3d is not None and f.p3d.active:
            seeded = prior3d.pose_from_prior(f.p3d, ref.points3d, f.points, use, cfg.pose_threshold,
                                             cfg.pose_min_inliers)
            f.pose = seeded or f.pose


PIPELINE: tuple[Stage, ...] = (encode, prior, match, depth_rematch, crop, lift, pose)


# ---------------------------------------------------------------------------------------------------- parts
def rematch(ctx: Context, view: View, fmap: torch.Tensor, size: tuple[int, int], depth: np.ndarray, m: Matches,
            prior_uv: torch.Tensor | None, fallback: depth_aware.DepthModel | None = None
            ) -> tuple[Matches, depth_aware.DepthModel | None]:
    """Depth-aware re-match: fit the object's depth model at the matches ``m`` (``fallback`` when none can be
    fitted), weight ``fmap``'s cells by depth plausibility and match ``view`` into it again.

    Args:
        fmap: ``[C, G, G]`` target map of a ``size = (width, height)`` image with ``depth [H, W]`` metres.

    Returns:
        ``(matches, model)``; ``(m, None)`` when there is no model.
    """
    model = depth_aware.model_at(depth, m.xy, m.score, ctx.ref.depth_extent, ctx.config) or fallback
    if model is None:
        return m, None
    weights = depth_aware.cell_weights(depth, model, fmap.shape[-1], ctx.config, ctx.device)
    return ctx.matcher(view, fmap, size, weights, prior_uv), model


def consensus(ctx: Context, view: View, fmap: torch.Tensor, depth: np.ndarray | None,
              K: np.ndarray | None) -> tuple[torch.Tensor | None, str, prior3d.Prior3D | None]:
    """The consensus prior of one pass: ``(prior uv [K, 2] or None, mode used, the 3D fit or None)``.

    ``consensus_mode`` 3d/auto: a 3D similarity from the coarse mutual matches lifted with both depths
    (:mod:`semcorr_ros.engine.prior3d`); auto falls back to the 2D affine when either side lacks depth or
    intrinsics or the 3D fit fails its checks.
    """
    cfg, ref = ctx.config, ctx.ref
    live = coarse_map(fmap)
    p3d = None
    if cfg.consensus_mode != "2d" and ref.depth is not None and ref.intrinsics is not None \
            and depth is not None and K is not None:
        p3d = prior3d.consensus_prior_3d(_coarse(view), live, view.uv, ref.depth, ref.intrinsics, ref.points3d,
                                         depth, K, threshold=cfg.consensus_threshold,
                                         min_inliers=cfg.consensus_min_inliers)
        if p3d.active:
            return p3d.uv, "3d", p3d
    if cfg.consensus_mode == "3d":
        return None, "none", p3d
    uv = _affine_prior(ctx, view, live)
    return (uv, "2d", p3d) if uv is not None else (None, "none", p3d)


def _match_crop(ctx: Context, f: Frame, box: kbc.Box) -> tuple[np.ndarray, Matches]:
    """Match the reference crop into the frame's crop ``box``: ``(crop pixels [K, 2], matches)``."""
    cfg = ctx.config
    cimg = kbc.crop(f.image, box)
    view = ctx.reference_crop()
    cfmap = ctx.encode(cimg, view.means)
    csize = (cimg.shape[1], cimg.shape[0])
    cprior = None
    if cfg.consensus_in_crop and _prior_on(cfg):
        with f.timed("consensus_crop"):
            cprior = _crop_prior(ctx, view, cfmap, f, box, csize)
    m = ctx.matcher(view, cfmap, csize, None, cprior)
    if f.depth_model is not None:
        # Depth-aware pass inside the crop, with the object's depth model re-fitted at the crop's own matches:
        # for a small object the full-frame matches (and so the full-frame model) often sit on the background
        # around it, the crop's are mostly on the object.
        m, f.depth_model = rematch(ctx, view, cfmap, csize, kbc.crop(f.depth, box), m, cprior, f.depth_model)
    return m.xy, m


def _crop_prior(ctx: Context, view: View, cfmap: torch.Tensor, f: Frame, box: kbc.Box,
                csize: tuple[int, int]) -> torch.Tensor | None:
    """Consensus prior in the live crop's normalised coordinates: the full-frame 3D prior mapped into the crop;
    else a 2D affine fitted between the reference and live crops; else the full-frame 2D prior mapped in."""

    def mapped() -> torch.Tensor:
        xy = uv_to_pixels(f.prior, *f.size).double().cpu().numpy()
        return pixels_to_uv(torch.as_tensor(kbc.to_crop(xy, box), dtype=torch.float32, device=ctx.device), *csize)

    if f.prior is not None and f.prior_mode == "3d":
        return mapped()
    uv = _affine_prior(ctx, view, coarse_map(cfmap))
    if uv is not None:
        return uv
    return mapped() if f.prior is not None else None


def _affine_prior(ctx: Context, view: View, live: torch.Tensor) -> torch.Tensor | None:
    """2D affine consensus prior ``[K, 2]`` from ``view`` into the coarse live map, or ``None``."""
    cfg = ctx.config
    cp = consensus_prior(_coarse(view), live, view.uv, threshold=cfg.consensus_threshold,
                         min_inliers=cfg.consensus_min_inliers)
    return cp.uv if cp.active else None


def _coarse(view: View) -> torch.Tensor:
    if view.coarse is None:
        view.coarse = coarse_map(view.fmap)
    return view.coarse


def _prior_on(cfg: EngineConfig) -> bool:
    return cfg.consensus_prior and cfg.consensus_weight > 0


def _prior_transform(p3d: prior3d.Prior3D | None) -> PoseResult | None:
    """The 3D prior's similarity as a :class:`PoseResult` (``valid`` = the fit passed its checks), or None."""
    if p3d is None:
        return None
    return PoseResult(R=p3d.R, t=p3d.t, valid=p3d.active, inliers=np.zeros(0, bool), n_inliers=p3d.n_inliers,
                      rmse=p3d.rmse, scale=p3d.scale)
