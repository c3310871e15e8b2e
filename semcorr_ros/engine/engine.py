"""The correspondence engine: reference in, per-frame keypoint matches (2D, 3D, pose) out. ROS-free.

Pipeline per live frame (the reference's features are computed once by :meth:`set_reference`):

1. encode: every feature source -> multi-layer normalised maps -> centring with the reference's mean vectors
   -> learned fusion -> ``[C, G, G]``;
2. first pass: reference keypoint descriptors vs the live map (cosine), argmax + window soft-argmax, score from
   peak similarity and cycle consistency;
3. depth-aware pass (when depth is given): fit the object's depth distribution at the first-pass matches,
   weight the live map's cells by depth plausibility, match again;
4. KBC (when the object is small): crop reference and live frame around the keypoints / first-pass matches,
   match inside the crops at full model resolution (with depth: a plain pass, the depth model re-fitted at its
   matches, a depth-aware pass), map back;
5. lift valid matches to 3D with the depth image and intrinsics; rigid pose (RANSAC + Umeyama) against the
   reference's 3D keypoints when it has depth.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from torch import nn

from semcorr_ros.config import DEFAULT_SCORE_CALIBRATION, EngineConfig
from semcorr_ros.engine import confidence, depth_aware, geometry, kbc, multiscale, prior3d
from semcorr_ros.engine.consensus import coarse_map, consensus_prior
from semcorr_ros.engine.features import build_source, preferred_cpu_dtype
from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.fusion import FeatureFusion, load_fusion
from semcorr_ros.engine.kbcnet import KBCNetHead, kbcnet_match, load_kbcnet
from semcorr_ros.engine.inputs import image_to_tensor, validate_image, validate_keypoints
from semcorr_ros.engine.matching import match_keypoints, pixels_to_uv, sample_descriptors, uv_to_pixels
from semcorr_ros.engine.pose import estimate_pose
from semcorr_ros.engine.types import MatchResult
from semcorr_ros.errors import ConfigError, InputError, NoReferenceError, WeightsError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without CUDA raises :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use 'cpu' or 'auto')")
    return torch.device(name)


@dataclass
class _View:
    """Features of one image (or crop) around a set of keypoints."""

    size: tuple[int, int]          # (width, height)
    fmap: torch.Tensor             # [C, G, G], possibly depth-weighted (used for the cycle check)
    desc: torch.Tensor             # [K, C] keypoint descriptors
    uv: torch.Tensor               # [K, 2] normalised keypoints
    means: list[torch.Tensor]      # per-map centering vectors [1, C_m, 1, 1], reused for live maps
    coarse: torch.Tensor | None = None  # fmap pooled for the consensus fit, computed on first use


@dataclass
class Reference:
    """A cached reference: keypoints, optional 3D, features of the full image and (once KBC first needs them)
    of its KBC crop."""

    reference_id: str
    names: list[str]
    keypoints: np.ndarray          # [K, 2] pixels
    image: np.ndarray              # uint8 [H, W, 3], kept for the lazily computed crop
    depth: np.ndarray | None       # [H, W] metres (NaN invalid)
    full: _View
    crop_box: kbc.Box | None
    crop: _View | None
    points3d: np.ndarray | None    # [K, 3] reference camera frame, metres (NaN where unknown)
    has_3d: np.ndarray | None      # [K] bool
    depth_extent: float            # depth range of the reference keypoints, metres (0 when unknown)
    intrinsics: np.ndarray | None = None  # [3, 3] reference camera K (for the 3D consensus prior)


class CorrespondenceEngine:
    """Semantic keypoint correspondence between a cached reference and live RGB(-D) frames.

    Args:
        config: options (defaults: :class:`EngineConfig`, the embedded default model).
        sources: feature sources to use instead of building ``config.sources`` (tests, custom models).
        fusion: fusion module to use instead of the configured one.
    """

    def __init__(self, config: EngineConfig | None = None, *, sources: Sequence[FeatureSource] | None = None,
                 fusion: FeatureFusion | None = None) -> None:
        self.config = config or EngineConfig()
        cfg = self.config
        self.device = resolve_device(cfg.device)
        built = sources is None
        if sources is None:
            dtype = preferred_cpu_dtype() if self.device.type == "cpu" and cfg.cpu_bf16 else None
            sources = [build_source(n, weights=cfg.weights.get(n), layers=cfg.layers.get(n),
                                    input_size=cfg.input_sizes.get(n), dtype=dtype) for n in cfg.sources]
        if tuple(cfg.multiscale) != (1.0,):
            sources = multiscale.expand_sources(
                sources, cfg.multiscale, built=built, weights=cfg.weights, layers=cfg.layers,
                dtype=preferred_cpu_dtype() if self.device.type == "cpu" and cfg.cpu_bf16 else None)
        self.sources = nn.ModuleList(sources).eval().requires_grad_(False).to(self.device)
        keys = [f"{s.name}/{layer}" for s in self.sources for layer in s.layer_names]
        if fusion is None:
            init = [cfg.source_weights.get(multiscale.base_name(s.name), 1.0) / len(s.layer_names)
                    for s in self.sources for _ in s.layer_names]
            fusion = _configured_fusion(FeatureFusion(keys, grid=cfg.grid, weights=init, center=cfg.center_features),
                                        cfg.fusion_weights)
        self.fusion = fusion.to(self.device)
        if cfg.matcher == "kbcnet" and getattr(self.fusion, "projected", False):
            raise ConfigError("matcher 'kbcnet' needs a plain fusion (semcorr-fusion-v1): its head was trained on "
                              "the unprojected fused features, and the fusion weights file is a projected "
                              "semcorr-fusion-v2 one; use matcher 'nn' with it")
        self.kbcnet = _configured_kbcnet(cfg, keys, self.device) if cfg.matcher == "kbcnet" else None
        self._amp_dtype = torch.float16 if self.device.type == "cuda" and cfg.fp16 else None
        self.reference: Reference | None = None
        self._cache: OrderedDict[Hashable, list[torch.Tensor]] = OrderedDict()
        self.cache_size = 32
        if getattr(self.fusion, "projected", False):
            self._check_projections()

    def _check_projections(self) -> None:
        """Fail at start-up, not at the first frame, when a projected fusion does not fit the sources' maps
        (one encode of a small grey image)."""
        maps = self.encode_maps(np.full((64, 64, 3), 128, np.uint8))
        for key, m, p in zip(self.fusion.keys, maps, self.fusion.projections):
            if p.shape[1] != m.shape[1]:
                raise WeightsError(f"fusion weights {self.config.fusion_weights}: the projection of {key} expects "
                                   f"{p.shape[1]} channels, the source gives {m.shape[1]} (trained for another "
                                   "model?)")

    # ------------------------------------------------------------------ features
    @torch.inference_mode()
    def encode_maps(self, image: np.ndarray, cache_key: Hashable | None = None) -> list[torch.Tensor]:
        """Every source's normalised maps ``[1, C_m, h_m, w_m]`` for one ``uint8 [H, W, 3]`` RGB image.

        With ``cache_key`` the maps are kept in a small LRU cache (evaluation encodes each image once).
        """
        if cache_key is not None and cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        x = image_to_tensor(validate_image(image), self.device)
        with torch.autocast(self.device.type, dtype=self._amp_dtype or torch.float32,
                            enabled=self._amp_dtype is not None):
            maps = [m.float() for src in self.sources for m in src(x)]
        if cache_key is not None:
            self._cache[cache_key] = maps
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return maps

    @torch.inference_mode()
    def encode_maps_batch(self, images: Sequence[np.ndarray],
                          cache_keys: Sequence[Hashable] | None = None) -> list[list[torch.Tensor]]:
        """Batched :meth:`encode_maps` (the evaluation path): one forward pass per source for all images.

        Images may differ in size: each is resized to each source's square input before stacking (the
        sources' own resize is then the identity), so the maps equal those of :meth:`encode_maps`.
        With ``cache_keys`` the results are stored in the cache as :meth:`encode_maps` would.
        """
        if len(images) == 0:
            return []
        xs = [image_to_tensor(validate_image(im), self.device) for im in images]
        per_image: list[list[torch.Tensor]] = [[] for _ in xs]
        with torch.autocast(self.device.type, dtype=self._amp_dtype or torch.float32,
                            enabled=self._amp_dtype is not None):
            for src in self.sources:
                size = (src.input_size, src.input_size)
                batch = torch.cat([torch.nn.functional.interpolate(x, size=size, mode="bilinear",
                                                                   align_corners=False, antialias=True) for x in xs])
                for layer_map in src(batch):
                    for i in range(len(xs)):
                        per_image[i].append(layer_map[i:i + 1].float())
        if cache_keys is not None:
            for key, maps in zip(cache_keys, per_image):
                self._cache[key] = maps
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return per_image

    def cached(self, key: Hashable) -> bool:
        """Whether maps for ``key`` are in the evaluation cache."""
        return key in self._cache

    @torch.inference_mode()
    def encode(self, image: np.ndarray, means: list[torch.Tensor] | None = None,
               cache_key: Hashable | None = None) -> torch.Tensor:
        """Fused feature map ``[C, G, G]`` of one image, centred with ``means`` (default: its own)."""
        return self.fusion(self.encode_maps(image, cache_key), means)[0]

    @torch.inference_mode()
    def _view(self, image: np.ndarray, xy: np.ndarray, cache_key: Hashable | None = None) -> _View:
        """Encode a reference image (or crop) and sample its keypoint descriptors."""
        maps = self.encode_maps(image, cache_key)
        means = self.fusion.map_means(maps)
        fmap = self.fusion(maps, means)[0]
        size = (image.shape[1], image.shape[0])
        uv = pixels_to_uv(torch.as_tensor(xy, dtype=torch.float32, device=self.device), *size)
        return _View(size=size, fmap=fmap, desc=sample_descriptors(fmap, uv), uv=uv, means=means)

    # ------------------------------------------------------------------ reference
    def set_reference(self, image: np.ndarray, keypoints: np.ndarray, names: Sequence[str] | None = None,
                      depth: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
                      reference_id: str = "reference", cache_key: Hashable | None = None) -> Reference:
        """Compute and cache the reference's features (full image and KBC crop).

        Args:
            image: ``uint8 [H, W, 3]`` RGB.
            keypoints: ``[K, 2]`` pixels ``(x, y)``, inside the image, ``K >= 1``.
            names: ``K`` keypoint names (default ``kp0..``).
            depth: optional ``[H, W]`` depth (float metres or uint16 millimetres), for 3D and pose.
            intrinsics: optional ``[3, 3]`` K of the reference camera (needed with ``depth``).
            reference_id: identifier carried into the results.
            cache_key: reuse cached full-image features under this key (evaluation).

        Returns:
            The new active :class:`Reference` (the previous one stays active if this raises).
        """
        image = validate_image(image, "reference image")
        h, w = image.shape[:2]
        kps = validate_keypoints(keypoints, (w, h), "reference keypoints")
        if len(kps) == 0:
            raise InputError("the reference has no keypoints")
        names = [f"kp{i}" for i in range(len(kps))] if names is None else [str(n) for n in names]
        if len(names) != len(kps):
            raise InputError(f"{len(names)} names given for {len(kps)} reference keypoints")
        points3d = has_3d = K_ref = None
        extent = 0.0
        depth_m = None
        if depth is not None:
            depth_m = geometry.validate_depth(depth, (h, w), self.config.depth_scale)
            extent = geometry.keypoint_depth_range(depth_m, kps, self.config.depth_radius)
            if intrinsics is not None:
                K_ref = geometry.validate_intrinsics(intrinsics)
                points3d, has_3d = geometry.lift(depth_m, kps, K_ref, self.config.depth_radius)
        full = self._view(image, kps, cache_key)
        if depth_m is not None and self.config.depth_aware:
            full.fmap = self._depth_weighted(full.fmap, depth_m, kps, None, extent)
        crop_box = None if self.config.kbc == "off" else kbc.keypoint_box(kps, (w, h), self.config.kbc_margin)
        ref = Reference(reference_id=reference_id, names=names, keypoints=kps, image=image, depth=depth_m,
                        full=full, crop_box=crop_box, crop=None, points3d=points3d, has_3d=has_3d,
                        depth_extent=extent, intrinsics=K_ref)
        if self.config.kbc == "on":
            self._reference_crop(ref)
        self.reference = ref
        return ref

    def _reference_crop(self, ref: Reference) -> _View:
        """Features of the reference's KBC crop, computed on first use and kept with the reference."""
        if ref.crop is None:
            box = ref.crop_box
            ckps = kbc.to_crop(ref.keypoints, box)
            view = self._view(kbc.crop(ref.image, box), ckps)
            if ref.depth is not None and self.config.depth_aware:
                view.fmap = self._depth_weighted(view.fmap, kbc.crop(ref.depth, box), ckps, None, ref.depth_extent)
            ref.crop = view
        return ref.crop

    def _depth_weighted(self, fmap: torch.Tensor, depth_m: np.ndarray, xy: np.ndarray,
                        score: np.ndarray | None, extent: float) -> torch.Tensor:
        model = self._depth_model(depth_m, xy, score, extent)
        if model is None:
            return fmap
        wts = depth_aware.depth_weights(torch.from_numpy(depth_m).to(self.device), model, fmap.shape[-1],
                                        self.config.depth_floor, self.config.depth_cells)
        return fmap * wts[None]

    def _depth_model(self, depth_m: np.ndarray, xy: np.ndarray, score: np.ndarray | None,
                     extent: float) -> depth_aware.DepthModel | None:
        z, ok = geometry.sample_depth(depth_m, xy, self.config.depth_radius)
        wts = ok.astype(float) if score is None else np.where(ok, score, 0.0)
        return depth_aware.fit_depth_model(z, wts, extent * self.config.depth_spread, self.config.depth_sigma_min)

    # ------------------------------------------------------------------ matching
    def _match_view(self, ref: _View, fmap: torch.Tensor, size: tuple[int, int],
                    weights: torch.Tensor | None = None,
                    prior: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Match into ``fmap``: pixels ``[K, 2]``, confidence ``[K]`` and its features ``[K, 5]``."""
        cfg = self.config
        if self.kbcnet is not None:  # matcher: kbcnet (dense learned correlation, same outputs)
            m = kbcnet_match(self.kbcnet, ref.fmap, fmap, ref.uv, radius=cfg.softargmax_radius,
                             cycle_sigma=cfg.cycle_sigma, tgt_weights=weights, prior=prior,
                             prior_weight=cfg.consensus_weight, prior_sigma=cfg.consensus_sigma)
        else:
            m = match_keypoints(ref.desc, ref.uv, ref.fmap, fmap, radius=cfg.softargmax_radius,
                                temperature=cfg.softargmax_temperature, cycle_sigma=cfg.cycle_sigma,
                                tgt_weights=weights, prior=prior, prior_weight=cfg.consensus_weight,
                                prior_sigma=cfg.consensus_sigma)
        feats = confidence.score_features(m.peak, m.cycle_error, m.uv, prior, cfg.cycle_sigma, cfg.consensus_sigma)
        coeffs = self.score_coefficients()
        score = m.score if coeffs is None else confidence.calibrated_score(feats, coeffs)
        xy = uv_to_pixels(m.uv, *size).double().cpu().numpy()
        return xy, score.double().cpu().numpy(), feats.double().cpu().numpy()

    def score_coefficients(self) -> tuple[float, ...] | None:
        """Calibration of the match confidence in use: the config's ``score_calibration``, except that a KBCNet
        head with its own calibration (written by ``semcorr train-kbcnet``) replaces the engine's default one (the
        default is fitted to the NN matcher's scores); ``None``: raw scores."""
        coeffs = self.config.score_calibration
        head = getattr(self.kbcnet, "score_calibration", None)
        if head is not None and coeffs is not None and tuple(coeffs) == DEFAULT_SCORE_CALIBRATION:
            return head
        return coeffs

    def _consensus(self, ref: Reference, view: _View, fmap: torch.Tensor, depth_m: np.ndarray | None,
                   K: np.ndarray | None) -> tuple[torch.Tensor | None, str, prior3d.Prior3D | None]:
        """The consensus prior of one pass: ``(prior uv [K, 2] or None, mode used, the 3D fit or None)``.

        ``consensus_mode`` 3d/auto: a 3D similarity from the coarse mutual matches lifted with both depths
        (:mod:`semcorr_ros.engine.prior3d`); auto falls back to the 2D affine when either side lacks depth or
        intrinsics or the 3D fit fails its checks.
        """
        cfg = self.config
        if view.coarse is None:
            view.coarse = coarse_map(view.fmap)
        live = coarse_map(fmap)
        p3d = None
        if cfg.consensus_mode != "2d" and ref.depth is not None and ref.intrinsics is not None \
                and depth_m is not None and K is not None:
            p3d = prior3d.consensus_prior_3d(view.coarse, live, view.uv, ref.depth, ref.intrinsics, ref.points3d,
                                             depth_m, K, threshold=cfg.consensus_threshold,
                                             min_inliers=cfg.consensus_min_inliers)
            if p3d.active:
                return p3d.uv, "3d", p3d
        if cfg.consensus_mode == "3d":
            return None, "none", p3d
        cp = consensus_prior(view.coarse, live, view.uv, threshold=cfg.consensus_threshold,
                             min_inliers=cfg.consensus_min_inliers)
        return (cp.uv, "2d", p3d) if cp.active else (None, "none", p3d)

    def _crop_prior(self, ref: Reference, crop_view: _View, cfmap: torch.Tensor, prior: torch.Tensor | None,
                    prior_mode: str, size: tuple[int, int], box: kbc.Box,
                    csize: tuple[int, int]) -> torch.Tensor | None:
        """Consensus prior in the live crop's normalised coordinates: the full-frame 3D prior mapped into the crop;
        else a 2D affine fitted between the reference and live crops; else the full-frame 2D prior mapped in."""

        def mapped() -> torch.Tensor:
            xy = uv_to_pixels(prior, *size).double().cpu().numpy()
            return pixels_to_uv(torch.as_tensor(kbc.to_crop(xy, box), dtype=torch.float32, device=self.device),
                                *csize)

        if prior is not None and prior_mode == "3d":
            return mapped()
        uv = self._crop_affine_prior(crop_view, cfmap)
        if uv is not None:
            return uv
        return mapped() if prior is not None else None

    def _crop_affine_prior(self, crop_view: _View, cfmap: torch.Tensor) -> torch.Tensor | None:
        """2D affine consensus prior fitted between the reference crop and the live crop (crop uv), or None."""
        cfg = self.config
        if crop_view.coarse is None:
            crop_view.coarse = coarse_map(crop_view.fmap)
        cp = consensus_prior(crop_view.coarse, coarse_map(cfmap), crop_view.uv, threshold=cfg.consensus_threshold,
                             min_inliers=cfg.consensus_min_inliers)
        return cp.uv if cp.active else None

    def match(self, image: np.ndarray, depth: np.ndarray | None = None,
              intrinsics: np.ndarray | None = None, cache_key: Hashable | None = None,
              object_box: Sequence[float] | None = None, *,
              distortion: geometry.Distortion | None = None) -> MatchResult:
        """Match the active reference's keypoints into one live frame.

        Args:
            image: ``uint8 [H, W, 3]`` RGB live frame.
            depth: optional ``[H, W]`` depth aligned to ``image`` (float metres, NaN/0 invalid, or uint16 mm).
            intrinsics: optional ``[3, 3]`` K of the live camera; with ``depth`` gives 3D points and pose.
            cache_key: reuse cached full-image features under this key (evaluation).
            object_box: optional ``(x0, y0, x1, y1)`` pixels of the object in the live frame (a detector, a
                tracker, a benchmark's box): KBC frames its crop around it instead of the first-pass matches.
            distortion: optional lens distortion of the live image (``image`` and ``depth`` unrectified, e.g.
                :func:`semcorr_ros.ros.convert.camera_info_to_camera`); used only to lift the matched pixels to
                3D (matching runs on the image as it is; the reference is taken as undistorted). None or
                all-zero coefficients: the pinhole lift, unchanged.

        Returns:
            :class:`MatchResult` (pixels, scores, validity, 3D points in the live camera optical frame).
        """
        ref = self.reference
        if ref is None:
            raise NoReferenceError("no reference set: call set_reference(image, keypoints) first")
        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        image = validate_image(image)
        h, w = image.shape[:2]
        depth_m = None if depth is None else geometry.validate_depth(depth, (h, w), cfg.depth_scale)
        K = None if intrinsics is None else geometry.validate_intrinsics(intrinsics)
        if distortion is not None and not isinstance(distortion, geometry.Distortion):
            raise InputError(f"distortion must be a geometry.Distortion or None, got {type(distortion).__name__}")
        fmap = self.encode(image, ref.full.means, cache_key)
        timings["features"] = time.perf_counter() - t0

        prior = p3d = None
        prior_mode = "none"
        if cfg.consensus_prior and cfg.consensus_weight > 0:
            t = time.perf_counter()
            prior, prior_mode, p3d = self._consensus(ref, ref.full, fmap, depth_m, K)
            timings["consensus"] = time.perf_counter() - t

        t = time.perf_counter()
        xy, score, feats = self._match_view(ref.full, fmap, (w, h), prior=prior)
        model = None
        if cfg.depth_aware and depth_m is not None:
            model = self._depth_model(depth_m, xy, score, ref.depth_extent)
            if model is not None:
                wts = depth_aware.depth_weights(torch.from_numpy(depth_m).to(self.device), model,
                                                fmap.shape[-1], cfg.depth_floor, cfg.depth_cells)
                xy, score, feats = self._match_view(ref.full, fmap, (w, h), wts, prior)
        timings["match"] = time.perf_counter() - t

        kbc_used = False
        if ref.crop_box is not None:
            t = time.perf_counter()
            max_fraction = 1.0 if cfg.kbc == "on" else cfg.kbc_max_fraction
            if object_box is not None:
                corners = np.asarray(object_box, dtype=np.float64).reshape(2, 2)
                box = kbc.keypoint_box(corners, (w, h), cfg.kbc_margin)
                small = box is not None and kbc.box_fraction(box, (w, h)) < max_fraction
                boxes = (ref.crop_box, box) if small else None
            else:
                boxes = kbc.kbc_boxes(ref.keypoints, ref.full.size, xy, score, (w, h), cfg.kbc_margin,
                                      max_fraction, min_score=cfg.score_threshold)
            if boxes is not None:
                box = boxes[1]
                cimg = kbc.crop(image, box)
                ref_crop = self._reference_crop(ref)
                cfmap = self.encode(cimg, ref_crop.means)
                csize = (cimg.shape[1], cimg.shape[0])
                cprior = None
                if cfg.consensus_in_crop and cfg.consensus_prior and cfg.consensus_weight > 0:
                    tc = time.perf_counter()
                    cprior = self._crop_prior(ref, ref_crop, cfmap, prior, prior_mode, (w, h), box, csize)
                    timings["consensus_crop"] = time.perf_counter() - tc
                cxy, score, feats = self._match_view(ref_crop, cfmap, csize, None, cprior)
                if model is not None:
                    # Depth-aware pass inside the crop, with the object's depth model re-fitted at the crop's
                    # own matches: for a small object the full-frame matches (and so the full-frame model) often
                    # sit on the background around it, the crop's are mostly on the object.
                    cdepth = kbc.crop(depth_m, box)
                    model = self._depth_model(cdepth, cxy, score, ref.depth_extent) or model
                    weights = depth_aware.depth_weights(torch.from_numpy(cdepth).to(self.device), model,
                                                        cfmap.shape[-1], cfg.depth_floor, cfg.depth_cells)
                    cxy, score, feats = self._match_view(ref_crop, cfmap, csize, weights, cprior)
                xy = kbc.from_crop(cxy, box)
                kbc_used = True
            timings["kbc"] = time.perf_counter() - t

        inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
        valid = (score >= cfg.score_threshold) & inside
        k = len(ref.names)
        points = np.full((k, 3), np.nan)
        has_3d = np.zeros(k, bool)
        pose = None
        if depth_m is not None and K is not None:
            t = time.perf_counter()
            points, has_3d = geometry.lift(depth_m, xy, K, cfg.depth_radius, distortion=distortion)
            has_3d &= valid
            points[~has_3d] = np.nan
            timings["lift"] = time.perf_counter() - t
            if ref.points3d is not None:
                t = time.perf_counter()
                pose = estimate_pose(ref.points3d, points, mask=has_3d & ref.has_3d,
                                     threshold=cfg.pose_threshold, iterations=cfg.pose_iterations,
                                     min_inliers=cfg.pose_min_inliers)
                if cfg.pose_from_prior and not pose.valid and p3d is not None and p3d.active:
                    seeded = prior3d.pose_from_prior(p3d, ref.points3d, points, has_3d & ref.has_3d,
                                                     cfg.pose_threshold, cfg.pose_min_inliers)
                    pose = seeded or pose
                timings["pose"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        return MatchResult(names=list(ref.names), ref_xy=ref.keypoints.copy(), xy=xy, score=score, valid=valid,
                           points3d=points, has_3d=has_3d, pose=pose, kbc_used=kbc_used,
                           depth_weighted=model is not None, prior_used=prior is not None,
                           prior_mode_used=prior_mode, prior_transform=_prior_transform(p3d),
                           score_features=feats, timings=timings)

    def match_pair(self, src_image: np.ndarray, src_keypoints: np.ndarray, tgt_image: np.ndarray,
                   src_key: Hashable | None = None, tgt_key: Hashable | None = None,
                   tgt_box: Sequence[float] | None = None) -> MatchResult:
        """Evaluation path: match ``src_keypoints`` of ``src_image`` into ``tgt_image``.

        Uses (and leaves) a temporary reference; full-image features are cached by ``src_key``/``tgt_key``
        so that every image of a benchmark is encoded once. The active reference is restored afterwards.
        Empty keypoints give an empty result.
        """
        src_image = validate_image(src_image, "source image")
        kps = validate_keypoints(src_keypoints, (src_image.shape[1], src_image.shape[0]), "source keypoints")
        if len(kps) == 0:
            return MatchResult.empty()
        active = self.reference
        try:
            self.set_reference(src_image, kps, cache_key=src_key)
            return self.match(tgt_image, cache_key=tgt_key, object_box=tgt_box)
        finally:
            self.reference = active


def _prior_transform(p3d: prior3d.Prior3D | None):
    """The 3D prior's similarity as a :class:`PoseResult` (``valid`` = the fit passed its checks), or None."""
    if p3d is None:
        return None
    from semcorr_ros.engine.types import PoseResult

    return PoseResult(R=p3d.R, t=p3d.t, valid=p3d.active, inliers=np.zeros(0, bool), n_inliers=p3d.n_inliers,
                      rmse=p3d.rmse, scale=p3d.scale)


def _configured_kbcnet(cfg: EngineConfig, keys: list[str], device: torch.device) -> KBCNetHead:
    """The KBCNet head of ``matcher: kbcnet``: from ``kbcnet_weights``, else the file shipped with the package."""
    path = cfg.kbcnet_weights
    if path is None:
        shipped = resources.files("semcorr_ros") / "models" / "kbcnet_default.safetensors"
        if not shipped.is_file():
            raise ConfigError("matcher 'kbcnet' needs a trained head and none ships with this package: train one "
                              "with `semcorr train-kbcnet --dataset pf-willow --root DIR --out head.safetensors` and "
                              "pass it with --kbcnet-weights (ROS parameter kbcnet_weights), or use matcher 'nn'")
        path = str(shipped)
    return load_kbcnet(path, keys=keys).to(device).eval().requires_grad_(False)


def _configured_fusion(fusion: FeatureFusion, path: str | None) -> FeatureFusion:
    """Load trained fusion weights into ``fusion``: from ``path``, else the shipped file when it fits."""
    if path == "none":
        return fusion
    if path is not None:
        load_fusion(fusion, path)
        return fusion
    shipped = resources.files("semcorr_ros") / "models" / "fusion_default.safetensors"
    if shipped.is_file():
        try:
            load_fusion(fusion, str(shipped))
        except WeightsError:
            pass  # shipped weights are for other maps: keep the source_weights initialisation
    return fusion
