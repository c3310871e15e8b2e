"""Synthetic RGB-D scenes (:mod:`semcorr_ros.lab.synth`) as a pair dataset for fusion training (``--dataset synth``).

Every scene (``SceneSpec(category, seed, frames)``) has a reference view of one instance of the category and a
camera trajectory around *another* instance; a pair is (reference -> frame ``i``): source = the reference image
with its visible keypoints, target = the frame with its ground-truth keypoints (``FrameGroundTruth``), rows
aligned by the category's keypoint names. Keypoints not visible in either view are NaN (not used). Scene seeds are
``seed * 1000 + j`` for ``j = 0..scenes-1``, so a seed picks a disjoint set of scenes from another seed's.
Images are rendered on first use (CPU ray casting, about 0.3 s per 640x480 frame) and kept in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semcorr_ros.data.base import PairDataset, PairInfo, PairSample, keypoint_bbox, select_categories, subsample_evenly
from semcorr_ros.errors import ConfigError


class SynthPairs(PairDataset):
    """(reference, frame) pairs of synthetic scenes.

    Args:
        categories: synth categories (default: all of ``semcorr_ros.lab.synth.CATEGORIES``).
        scenes: scenes per category.
        frames: frames per scene (pairs per scene).
        seed: scene seeds are ``seed * 1000 + j``.
        size: ``(width, height)`` of the frames.
        max_pairs: keep at most this many pairs, spread evenly (deterministic).
    """

    name = "synth"

    def __init__(self, categories: str | list[str] | tuple[str, ...] | None = None, scenes: int = 4,
                 frames: int = 6, seed: int = 0, size: tuple[int, int] = (640, 480),
                 max_pairs: int | None = None) -> None:
        super().__init__(Path("."))
        from semcorr_ros.lab.synth import CATEGORIES, SceneSpec

        if scenes < 1 or frames < 1:
            raise ConfigError(f"synth needs scenes >= 1 and frames >= 1, got {scenes}, {frames}")
        self._spec = SceneSpec
        self.size = (int(size[0]), int(size[1]))
        cats = select_categories(sorted(CATEGORIES), categories, self.name)
        infos = []
        self._where: dict[str, tuple[str, int, int]] = {}
        for cat in cats:
            for j in range(scenes):
                s = int(seed) * 1000 + j
                for i in range(frames):
                    pid = f"{cat}/s{s}/f{i:03d}"
                    infos.append(PairInfo(pid, cat, f"s{s}_ref", f"s{s}_f{i:03d}"))
                    self._where[pid] = (cat, s, i)
        self._frames = frames
        keep = subsample_evenly(len(infos), max_pairs)
        self._infos = [infos[i] for i in keep]
        self._scenes: dict[tuple[str, int], object] = {}
        self._rendered: dict[tuple[str, int, int], object] = {}

    def _scene(self, cat: str, s: int):
        key = (cat, s)
        if key not in self._scenes:
            from semcorr_ros.lab.synth import render_scene

            self._scenes[key] = render_scene(self._spec(category=cat, seed=s, frames=self._frames,
                                                        width=self.size[0], height=self.size[1], depth_noise=True))
        return self._scenes[key]

    def _load(self, index: int) -> PairSample:
        info = self._infos[index]
        cat, s, i = self._where[info.pair_id]
        scene = self._scene(cat, s)
        if (cat, s, i) not in self._rendered:
            self._rendered[(cat, s, i)] = scene.render(i)
        frame = self._rendered[(cat, s, i)]
        ref = scene.reference
        names = list(frame.gt.names)
        src = np.full((len(names), 2), np.nan)
        ref_row = {n: k for k, n in enumerate(ref.all_names)}
        for k, n in enumerate(names):
            r = ref_row.get(n)
            if r is not None and ref.visible[r]:
                src[k] = ref.all_keypoints_2d[r]
        tgt = np.where(np.asarray(frame.gt.visible, bool)[:, None], np.asarray(frame.gt.keypoints_2d, float), np.nan)
        both = np.isfinite(src).all(1) & np.isfinite(tgt).all(1)
        src[~both] = np.nan
        tgt[~both] = np.nan
        box = np.asarray(frame.gt.object_box, float)
        tgt_depth = frame.depth.astype(np.float32) * np.float32(0.001)
        tgt_depth[frame.depth == 0] = np.nan
        return PairSample(pair_id=info.pair_id, category=cat, src_name=info.src_name, tgt_name=info.tgt_name,
                          src_image=ref.image, tgt_image=frame.rgb, src_kps=src, tgt_kps=tgt,
                          src_bbox=keypoint_bbox(src), tgt_bbox=box if np.isfinite(box).all() else None,
                          kp_ids=np.arange(len(names)), kp_names=names,
                          meta={"reference_instance": ref.instance, "scene_instance": scene.instance},
                          src_depth=ref.to_reference_spec().depth, tgt_depth=tgt_depth)
