"""``semcorr synth``: category-level synthetic RGB-D scenes with ground truth, ray cast on the CPU.

Python API (no bag needed)::

    from semcorr_ros.lab.synth import SceneSpec, render_scene
    scene = render_scene(SceneSpec("mug", seed=3, frames=30))
    for rgb, depth_mm, K, gt in scene.frames:      # gt: semcorr_ros.groundtruth.FrameGroundTruth
        ...
    ref = scene.reference                          # SceneReference: image, depth, K, names, keypoints, object_pose

See docs/synth.md.
"""

from semcorr_ros.lab.synth.categories import CATEGORIES, Category, Model, get_category
from semcorr_ros.lab.synth.scene import START_NS, Frame, Scene, SceneReference, SceneSpec, intrinsics, render_scene

__all__ = ["CATEGORIES", "Category", "Model", "get_category", "START_NS", "Frame", "Scene", "SceneReference",
           "SceneSpec", "intrinsics", "render_scene"]
