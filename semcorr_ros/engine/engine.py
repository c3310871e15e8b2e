"""The correspondence engine: reference in, per-frame keypoint matches (2D, 3D, pose) out. ROS-free.

:meth:`CorrespondenceEngine.set_reference` encodes the reference once (full image; its KBC crop on first use);
:meth:`CorrespondenceEngine.match` runs one live frame through the stages of :mod:`semcorr_ros.engine.stages`:
encode -> prior -> match -> depth-aware re-match -> crop -> lift -> pose.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import depth_aware, geometry, kbc, stages
from semcorr_ros.engine.tracking import Tracker
from semcorr_ros.engine.build import (configured_fusion, configured_kbcnet, configured_sources, default_fusion,
                                      layer_keys, resolve_device)
from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.fusion import FeatureFusion
from semcorr_ros.engine.inputs import image_to_tensor, validate_image, validate_keypoints
from semcorr_ros.engine.matcher import ViewMatcher
from semcorr_ros.engine.matching import pixels_to_uv, sample_descriptors
from semcorr_ros.engine.objects import ObjectModel, ObjectResult, match_object
from semcorr_ros.engine.types import MatchResult
from semcorr_ros.engine.views import Reference, View
from semcorr_ros.errors import ConfigError, InputError, NoReferenceError, WeightsError
from semcorr_ros.reference import ObjectSpec

__all__ = ["CorrespondenceEngine", "ObjectModel", "ObjectResult", "Reference", "resolve_device"]

_configured_fusion = configured_fusion  # the former private name


class CorrespondenceEngine:
    """Semantic keypoint correspondence between a cached reference and live RGB(-D) frames.

    Args:
        config: options (defaults: :class:`EngineConfig`, the embedded default model).
        sources: feature sources to use instead of building ``config.sources`` (tests, custom models).
        fusion: fusion module to use instead of the configured one.
    """

    def __init__(self, config: EngineConfig | None = None, *, sources: Sequence[FeatureSource] | None = None,
                 fusion: FeatureFusion | None = None) -> None:
        self.config = cfg = config or EngineConfig()
        self.device = resolve_device(cfg.device)
        #: per source name: ``torch`` or ``openvino`` (``EngineConfig.runtime``)
        self.sources, self.runtimes = configured_sources(cfg, self.device, sources)
        self.fusion = (fusion or default_fusion(cfg, self.sources)).to(self.device)
        if cfg.matcher == "kbcnet" and getattr(self.fusion, "projected", False):
            raise ConfigError("matcher 'kbcnet' needs a plain fusion (semcorr-fusion-v1): its head was trained on "
                              "the unprojected fused features, and the fusion weights file is a projected "
                              "semcorr-fusion-v2 one; use matcher 'nn' with it")
        self.kbcnet = configured_kbcnet(cfg, layer_keys(self.sources), self.device) \
            if cfg.matcher == "kbcnet" else None
        self._amp_dtype = torch.float16 if self.device.type == "cuda" and cfg.fp16 else None
        self.reference: Reference | None = None
        #: the active objects (:meth:`set_objects`; :meth:`set_reference` makes one object of one view)
        self.objects: list[ObjectModel] = []
        self._cache: OrderedDict[Hashable, list[torch.Tensor]] = OrderedDict()
        self.cache_size = 32
        #: number of image encodes so far (live frames, crops and references; cache hits not counted)
        self.encodes = 0
        #: the tracking mode's per-object state (:meth:`track`)
        self.tracker = Tracker()
        self._track_views: dict[int, tuple[Reference, kbc.Box, View]] = {}
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
        self.encodes += 1
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
        self.encodes += len(xs)
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
    def _view(self, image: np.ndarray, xy: np.ndarray, depth: np.ndarray | None = None, extent: float = 0.0,
              cache_key: Hashable | None = None) -> View:
        """Encode a reference image (or crop) and sample its keypoint descriptors ``[K, C]`` at ``xy [K, 2]``;
        with ``depth`` (metres) and ``depth_aware`` the view's map (not its descriptors) is weighted by the depth
        model fitted at the keypoints (it serves the cycle check)."""
        maps = self.encode_maps(image, cache_key)
        means = self.fusion.map_means(maps)
        fmap = self.fusion(maps, means)[0]
        size = (image.shape[1], image.shape[0])
        uv = pixels_to_uv(torch.as_tensor(xy, dtype=torch.float32, device=self.device), *size)
        view = View(size=size, fmap=fmap, desc=sample_descriptors(fmap, uv), uv=uv, means=means)
        if depth is not None and self.config.depth_aware:
            model = depth_aware.model_at(depth, xy, None, extent, self.config)
            if model is not None:
                view.fmap = fmap * depth_aware.cell_weights(depth, model, fmap.shape[-1], self.config,
                                                            self.device)[None]
        return view

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
            The new active :class:`Reference` (the previous one stays active if this raises); it is also the
            engine's only object (:attr:`objects`), with one view.
        """
        ref = self._build_reference(image, keypoints, names, depth, intrinsics, reference_id, cache_key)
        self.reference, self.objects = ref, [ObjectModel(reference_id, list(ref.names), [ref])]
        return ref

    def set_objects(self, objects: Sequence[ObjectSpec]) -> list[ObjectModel]:
        """Encode every view of every object (:func:`semcorr_ros.reference.load_objects`) and make them the
        active objects; :attr:`reference` becomes the first object's first view. If this raises, the previous
        objects stay active."""
        if not objects:
            raise InputError("no objects given")
        ids = [o.object_id for o in objects]
        if len(set(ids)) != len(ids):
            raise InputError(f"object ids must differ, got {ids}")
        models = []
        for obj in objects:
            if not obj.views:
                raise InputError(f"object {obj.object_id!r} has no views")
            views = [self._build_reference(v.image, v.keypoints, v.names, v.depth, v.intrinsics, v.reference_id)
                     for v in obj.views]
            models.append(ObjectModel(obj.object_id, list(obj.names), views))
        self.objects, self.reference = models, models[0].views[0]
        return models

    def _build_reference(self, image: np.ndarray, keypoints: np.ndarray, names: Sequence[str] | None,
                         depth: np.ndarray | None, intrinsics: np.ndarray | None, reference_id: str,
                         cache_key: Hashable | None = None) -> Reference:
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
        full = self._view(image, kps, depth_m, extent, cache_key)
        crop_box = None if self.config.kbc == "off" else kbc.keypoint_box(kps, (w, h), self.config.kbc_margin)
        ref = Reference(reference_id=reference_id, names=names, keypoints=kps, image=image, depth=depth_m,
                        full=full, crop_box=crop_box, crop=None, points3d=points3d, has_3d=has_3d,
                        depth_extent=extent, intrinsics=K_ref)
        if self.config.kbc == "on":
            self._reference_crop(ref)
        return ref

    def _reference_crop(self, ref: Reference) -> View:
        """Features of the reference's KBC crop, computed on first use and kept with the reference."""
        if ref.crop is None:
            box = ref.crop_box
            depth = None if ref.depth is None else kbc.crop(ref.depth, box)
            ref.crop = self._view(kbc.crop(ref.image, box), kbc.to_crop(ref.keypoints, box), depth, ref.depth_extent)
        return ref.crop

    def score_coefficients(self) -> tuple[float, ...] | None:
        """Calibration of the match confidence in use (:meth:`ViewMatcher.coefficients`); ``None``: raw scores."""
        return ViewMatcher(self.config, self.kbcnet).coefficients()

    # ------------------------------------------------------------------ matching
    def match(self, image: np.ndarray, depth: np.ndarray | None = None,
              intrinsics: np.ndarray | None = None, cache_key: Hashable | None = None,
              object_box: Sequence[float] | None = None, *,
              distortion: geometry.Distortion | None = None) -> MatchResult:
        """Match the active reference's keypoints into one live frame (:data:`stages.PIPELINE`).

        Args:
            image: ``uint8 [H, W, 3]`` RGB live frame.
            depth: optional ``[H, W]`` depth aligned to ``image`` (float metres, NaN/0 invalid, or uint16 mm).
            intrinsics: optional ``[3, 3]`` K of the live camera; with ``depth`` gives 3D points and pose.
            cache_key: reuse cached full-image features under this key (evaluation).
            object_box: optional ``(x0, y0, x1, y1)`` pixels of the object in the live frame (a detector, a
                tracker, a benchmark's box): KBC frames its crop around it instead of the first-pass matches.
            distortion: optional lens distortion of the live image (``image`` and ``depth`` unrectified, e.g.
                :func:`semcorr_ros.ros.camera.camera_info_to_camera`); used only to lift the matched pixels to
                3D (matching runs on the image as it is; the reference is taken as undistorted). None or
                all-zero coefficients: the pinhole lift, unchanged.

        Returns:
            :class:`MatchResult` (pixels, scores, validity, 3D points in the live camera optical frame).
        """
        ref = self.reference
        if ref is None:
            raise NoReferenceError("no reference set: call set_reference(image, keypoints) first")
        frame = stages.Frame.start(image, depth, intrinsics, distortion, object_box, cache_key, self.config)
        ctx = self._context(ref)
        for stage in stages.PIPELINE:
            stage(ctx, frame)
        return frame.result(ref)

    @torch.inference_mode()
    def match_objects(self, image: np.ndarray, depth: np.ndarray | None = None,
                      intrinsics: np.ndarray | None = None, *, cache_key: Hashable | None = None,
                      object_boxes: Mapping[str, Sequence[float]] | None = None,
                      distortion: geometry.Distortion | None = None) -> list[ObjectResult]:
        """Match every active object (:meth:`set_objects`) into one live frame: the frame's backbones run once,
        each object's views are matched into the shared maps and the best view is chosen per object
        (:mod:`semcorr_ros.engine.objects`). Arguments as :meth:`match`; ``object_boxes`` per object id.

        Returns:
            One :class:`ObjectResult` per object, in the order of :attr:`objects`; each result's timings hold the
            object's own stages, and ``features_shared`` the frame's backbone time.
        """
        if not self.objects:
            raise NoReferenceError("no objects set: call set_objects(load_objects(path)) or set_reference first")
        base = stages.Frame.start(image, depth, intrinsics, distortion, None, cache_key, self.config)
        t = time.perf_counter()
        maps = self.encode_maps(base.image, cache_key)
        shared = time.perf_counter() - t
        boxes = object_boxes or {}

        def context(ref: Reference) -> stages.Context:
            def encode(img: np.ndarray, means: list[torch.Tensor], key: Hashable | None = None) -> torch.Tensor:
                return self.fusion(maps, means)[0] if img is base.image else self.encode(img, means, key)
            return replace(self._context(ref), encode=encode)

        out = [match_object(obj, base, context, boxes.get(obj.object_id)) for obj in self.objects]
        for r in out:
            r.result.timings["features_shared"] = shared
        return out

    @torch.inference_mode()
    def track(self, image: np.ndarray, depth: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
              stamp: float | None = None, *, object_boxes: Mapping[str, Sequence[float]] | None = None,
              distortion: geometry.Distortion | None = None) -> list[ObjectResult]:
        """One frame of a stream for every active object: with ``tracking: on`` each object carries its state
        from frame to frame (:mod:`semcorr_ros.engine.tracking`: one encode of a crop around the predicted object
        per tracked frame, a full-frame detection when the track is lost, temporal filtering); with ``tracking:
        off`` this is :meth:`match_objects`.

        Args:
            image, depth, intrinsics, distortion: as :meth:`match`.
            stamp: the frame's time, seconds (e.g. the header stamp); ``None``: the time of the call. A stamp
                going backwards or a gap longer than ``tracking_max_gap`` restarts every track.
            object_boxes: optional boxes per object id, used by full-frame detections (as :meth:`match_objects`).

        Returns:
            One :class:`ObjectResult` per object (order of :attr:`objects`) with ``track_status`` and
            ``frames_since_detection``; with a filter the result's ``xy``/``points3d``/``pose`` are filtered and
            ``raw_xy``/``raw_points3d``/``raw_pose`` hold the frame's own measurements.
        """
        if self.config.tracking == "off":
            return self.match_objects(image, depth, intrinsics, object_boxes=object_boxes, distortion=distortion)
        if not self.objects:
            raise NoReferenceError("no objects set: call set_objects(load_objects(path)) or set_reference first")
        base = stages.Frame.start(image, depth, intrinsics, distortion, None, None, self.config)
        stamp = time.monotonic() if stamp is None else float(stamp)
        maps: list[torch.Tensor] = []

        def context(ref: Reference) -> stages.Context:
            def encode(img: np.ndarray, means: list[torch.Tensor], key: Hashable | None = None) -> torch.Tensor:
                if img is not base.image:
                    return self.encode(img, means, key)
                if not maps:  # the full frame: encoded once, on the first detection that needs it
                    maps.extend(self.encode_maps(base.image))
                return self.fusion(maps, means)[0]
            return replace(self._context(ref), encode=encode)

        return self.tracker.step(self.objects, base, stamp, self.config, context, self._tracking_view,
                                 dict(object_boxes or {}))

    def _tracking_view(self, ref: Reference) -> tuple[kbc.Box, View]:
        """The reference crop a tracked frame is matched against: the KBC crop (with ``kbc`` off a crop of the
        same margin, kept here); encoded on first use."""
        if ref.crop_box is not None:
            return ref.crop_box, self._reference_crop(ref)
        hit = self._track_views.get(id(ref))
        if hit is None or hit[0] is not ref:
            h, w = ref.image.shape[:2]
            box = kbc.keypoint_box(ref.keypoints, (w, h), self.config.kbc_margin)
            depth = None if ref.depth is None else kbc.crop(ref.depth, box)
            view = self._view(kbc.crop(ref.image, box), kbc.to_crop(ref.keypoints, box), depth, ref.depth_extent)
            hit = self._track_views[id(ref)] = (ref, box, view)
            if len(self._track_views) > 64:
                self._track_views.pop(next(iter(self._track_views)))
        return hit[1], hit[2]

    def _context(self, ref: Reference) -> stages.Context:
        """What the stages share for one frame (built per frame: ``self.config`` may change at run time)."""
        return stages.Context(self.config, ref, self.device, self.encode, ViewMatcher(self.config, self.kbcnet),
                              lambda: self._reference_crop(ref))

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
        active = self.reference, self.objects
        try:
            self.set_reference(src_image, kps, cache_key=src_key)
            return self.match(tgt_image, cache_key=tgt_key, object_box=tgt_box)
        finally:
            self.reference, self.objects = active
