"""Compare the consensus priors (none / 2d / 3d) on synthetic RGB-D scenes (semcorr_ros.lab.synth), offline.

For each scene the reference (another instance of the category) is set once with its depth and intrinsics; every
frame is encoded once (engine cache) and matched with the prior off, the 2D affine prior and the 3D similarity
prior (consensus_mode 3d: no prior on frames where the 3D fit fails), and the 3D prior with pose_from_prior.
Reported per setting, over the visible
keypoints that the reference has: PCK@ALPHA (threshold alpha x the longer side of the object's pixel box), median
3D error of the lifted matches (metres, valid matches with depth), the share of frames where the prior was used,
valid-pose rate, the median rotation (degrees) and translation (metres) error of the valid poses against the
ground-truth reference-camera -> live-camera transform (the two instances share the category's object frame; a
rigid pose between different instances is approximate by nature) and the mean consensus time.

Not part of the package. Usage (from outside the repository root):
    python lab/dev/compare_priors.py [--categories mug,bottle,lamp] [--seeds 0,1] [--frames 8] [--alpha 0.1]
"""

import argparse
import time

import numpy as np

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.eval.pck import box_unit, normalised_errors, within
from semcorr_ros.groundtruth import relative_pose
from semcorr_ros.lab.synth import SceneSpec, render_scene

SETTINGS = {"none": dict(consensus_prior=False), "2d": dict(consensus_mode="2d"), "3d": dict(consensus_mode="3d"),
            "auto": dict(consensus_mode="auto"), "3d+pose": dict(consensus_mode="3d", pose_from_prior=True),
            "3d-t05": dict(consensus_mode="3d", consensus_threshold=0.05),
            "3d-t15": dict(consensus_mode="3d", consensus_threshold=0.15)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--categories", default="mug,bottle,lamp")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--small-object", action="store_true")
    ap.add_argument("--rate", type=float, default=15.0,
                    help="frame rate of the rendered trajectory: lower = larger viewpoint change between frames")
    ap.add_argument("--same-instance", action="store_true",
                    help="reference = the scene's first frame (same object, the robot case; its visible keypoints), "
                         "matched into the other frames, instead of the scene's other-instance reference")
    ap.add_argument("--settings", default="none,2d,3d,3d+pose")
    args = ap.parse_args()
    settings = args.settings.split(",")
    engine = CorrespondenceEngine(EngineConfig())
    engine.cache_size = 4
    base = engine.config
    stats = {s: {"ok": [], "err3d": [], "used": 0, "pose": 0, "n": 0, "t": [], "rot": [], "trans": []}
             for s in settings}
    t0 = time.perf_counter()
    for cat in args.categories.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            scene = render_scene(SceneSpec(cat, seed=seed, frames=args.frames, small_object=args.small_object,
                                         rate=args.rate))
            ref = scene.reference
            frames = list(scene.frames)
            engine.config = base
            if args.same_instance:
                rgb0, depth0, k0, gt0 = frames.pop(0)
                ref_pose, ref_names = gt0.object_pose, [n for n, v in zip(gt0.names, gt0.visible) if v]
                engine.set_reference(rgb0, gt0.keypoints_2d[gt0.visible], names=ref_names, depth=depth0,
                                     intrinsics=k0)
            else:
                ref_pose, ref_names = ref.object_pose, list(ref.names)
                engine.set_reference(ref.image, ref.keypoints, names=ref.names, depth=ref.depth, intrinsics=ref.K)
            for i, (rgb, depth, K, gt) in enumerate(frames):
                idx = [gt.names.index(n) for n in ref_names]
                vis = gt.visible[idx]
                unit = box_unit(gt.object_box)
                if not vis.any() or not np.isfinite(unit):
                    continue
                for name in settings:
                    engine.config = base.replace(**SETTINGS[name])
                    r = engine.match(rgb, depth, K, cache_key=(cat, seed, i))
                    st = stats[name]
                    err = normalised_errors(r.xy, gt.keypoints_2d[idx], unit)
                    st["ok"].extend(within(err[vis], args.alpha).tolist())
                    m = vis & r.has_3d & r.valid
                    st["err3d"].extend(np.linalg.norm(r.points3d[m] - gt.keypoints_3d[idx][m], axis=1).tolist())
                    st["used"] += int(r.prior_used)
                    if r.pose is not None and r.pose.valid:
                        st["pose"] += 1
                        gt_rel = relative_pose(gt.object_pose, ref_pose)
                        cos = (np.trace(gt_rel[:3, :3].T @ r.pose.R) - 1) / 2
                        st["rot"].append(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
                        st["trans"].append(float(np.linalg.norm(gt_rel[:3, 3] - r.pose.t)))
                    st["n"] += 1
                    st["t"].append(r.timings.get("consensus", 0.0))
            print(f"{cat} seed {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"{'prior':<6} {'frames':>6} {'PCK@' + str(args.alpha):>9} {'3D err med (m)':>15} {'prior used':>11} "
          f"{'pose valid':>11} {'rot err med':>12} {'t err med':>10} {'consensus ms':>13}")
    for name, st in stats.items():
        e3 = float(np.median(st["err3d"])) if st["err3d"] else float("nan")
        print(f"{name:<6} {st['n']:>6} {np.mean(st['ok']):>9.3f} {e3:>15.4f} {st['used'] / max(st['n'], 1):>11.2f} "
              f"{st['pose'] / max(st['n'], 1):>11.2f} {np.median(st['rot']) if st['rot'] else np.nan:>12.1f} "
              f"{np.median(st['trans']) if st['trans'] else np.nan:>10.3f} {1000 * np.mean(st['t']):>13.1f}")


if __name__ == "__main__":
    main()
