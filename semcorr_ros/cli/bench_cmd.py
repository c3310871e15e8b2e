"""``semcorr bench``: per-frame latency (p50/p95) and peak memory of ``match`` on a 640x480 RGB-D frame.

The reference is set once (its features cached, as in the node); each timed call is a full
``engine.match(image, depth, K)``: features, matching, depth-aware pass, KBC when triggered, 3D lifting, pose.
The frames are synthetic (a smooth random texture and a tilted depth plane), so the figure needs no data.

``--compare`` times two engines side by side in one run, torch and the configured ``--runtime`` (``auto`` when
that is ``torch``), in alternating blocks of ``--block`` frames (the speed of these machines drifts by tens of
percent between runs, so only ratios measured together mean anything): p50 per stage of each and the ratio.
``--random-weights`` builds the official ``dinov2_vit*`` sources without a weights file (a fixed random
initialisation: the same speed as the real weights, meaningless matches).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from semcorr_ros.cli.common import add_engine_arguments, add_json_argument, engine_config, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=30, help="timed frames (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--compare", action="store_true",
                        help="time torch and --runtime (auto when torch) side by side, in alternating blocks")
    parser.add_argument("--block", type=int, default=5, help="frames per block with --compare (default: %(default)s)")
    parser.add_argument("--objects", type=int, default=0, metavar="N",
                        help="time N objects in one frame (match_objects: one feature pass, N objects matched) side "
                             "by side with one object, in alternating blocks; 0 = a single reference (default)")
    parser.add_argument("--views", type=int, default=1, metavar="V",
                        help="views per object with --objects (a reference set each; default: %(default)s)")
    parser.add_argument("--random-weights", action="store_true",
                        help="official dinov2_vit* sources without a weights file: random weights, for timing only")
    add_engine_arguments(parser)
    add_json_argument(parser)


def synthetic_rgbd(width: int, height: int, seed: int = 0, shift: tuple[int, int] = (0, 0)):
    """A textured frame, its depth (uint16 mm, a tilted plane at ~1 m) and intrinsics."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 16 + 2, width // 16 + 2, 3))
    ys = np.linspace(0, small.shape[0] - 1.001, height)
    xs = np.linspace(0, small.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = (small[y0][:, x0] * (1 - fy) * (1 - fx) + small[y0 + 1][:, x0] * fy * (1 - fx)
           + small[y0][:, x0 + 1] * (1 - fy) * fx + small[y0 + 1][:, x0 + 1] * fy * fx)
    img = np.roll((img * 255).astype(np.uint8), shift, axis=(0, 1))
    depth = (1000 + 0.3 * np.arange(width)[None, :] + 0.2 * np.arange(height)[:, None]).astype(np.uint16)
    depth = np.broadcast_to(depth, (height, width)).copy()
    K = np.array([[600.0, 0, width / 2 - 0.5], [0, 600.0, height / 2 - 0.5], [0, 0, 1]])
    return img, depth, K


def _setup(cfg):
    """An engine for ``cfg`` with the synthetic reference set; the live frame; the load time."""
    from semcorr_ros.engine import CorrespondenceEngine

    t = time.perf_counter()
    engine = CorrespondenceEngine(cfg)
    load_s = time.perf_counter() - t
    return engine, load_s


def _frames(w: int, h: int):
    ref_img, ref_depth, K = synthetic_rgbd(w, h)
    gx, gy = np.meshgrid(np.linspace(0.3, 0.7, 4) * w, np.linspace(0.3, 0.7, 3) * h)
    frame, depth, _ = synthetic_rgbd(w, h, shift=(8, 16))
    return (ref_img, np.stack([gx.ravel(), gy.ravel()], 1), ref_depth, K), (frame, depth, K)


def _objects(ref, n: int, views: int):
    """``n`` synthetic objects of ``views`` views each: the reference frame with its keypoint grid moved per
    object and its image shifted per view (the matching work of real objects, whatever they show)."""
    from semcorr_ros.reference import ObjectSpec, ReferenceSpec

    img, kps, depth, K = ref
    out = []
    for i in range(n):
        vs = [ReferenceSpec(f"obj{i}_view{v}", np.roll(img, 4 * v, axis=1), [f"kp{j}" for j in range(len(kps))],
                            kps + [6.0 * i, 4.0 * i], depth=depth.astype(np.float32) / 1000.0, intrinsics=K)
              for v in range(views)]
        out.append(ObjectSpec(f"obj{i}", vs))
    return out


class _Timer:
    """Latencies and per-stage timings of one engine (``objects``: of match_objects with those objects)."""

    def __init__(self, engine, ref, live, objects=None) -> None:
        self.engine, self.live, self.multi = engine, live, objects is not None
        img, kps, depth, K = ref
        if objects is None:
            engine.set_reference(img, kps, depth=depth, intrinsics=K)
        else:
            engine.set_objects(objects)
        self.objects = engine.objects  # timers may share one engine: each matches its own objects
        self.lat: list[float] = []
        self.stages: dict[str, list[float]] = {}
        self.res = None

    def step(self, timed: bool) -> None:
        t = time.perf_counter()
        if self.multi:
            self.engine.objects = self.objects
            results = self.engine.match_objects(*self.live)
            self.res = results[0].result
            timings: dict[str, float] = {"features": results[0].result.timings["features_shared"]}
            for r in results:
                for k, v in r.result.timings.items():
                    if k not in ("features_shared", "total"):
                        timings[k] = timings.get(k, 0.0) + v
        else:
            self.res = self.engine.match(*self.live)
            timings = self.res.timings
        dt = time.perf_counter() - t
        if timed:
            self.lat.append(dt)
            for k, v in timings.items():
                self.stages.setdefault(k, []).append(v)

    def summary(self) -> dict:
        lat_ms = np.asarray(self.lat) * 1000.0
        return {"runtimes": dict(self.engine.runtimes), "frames": len(self.lat),
                "latency_ms": {"p50": float(np.percentile(lat_ms, 50)), "p95": float(np.percentile(lat_ms, 95)),
                               "mean": float(lat_ms.mean()), "min": float(lat_ms.min())},
                "fps_p50": float(1000.0 / np.percentile(lat_ms, 50)),
                "stages_ms_p50": {k: float(np.median(v) * 1000.0) for k, v in self.stages.items()}}


def _config(args: argparse.Namespace):
    cfg = engine_config(args)
    if args.random_weights:
        from semcorr_ros.engine.features.dinov2 import RANDOM_WEIGHTS

        random = {n: RANDOM_WEIGHTS for n in cfg.sources if n.startswith("dinov2_vit") and n not in cfg.weights}
        cfg = cfg.replace(weights={**cfg.weights, **random})
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.objects < 0 or args.views < 1:
        raise SystemExit("semcorr bench: --objects must be >= 0 and --views >= 1")
    if args.compare:
        return _compare(args, cfg)
    if args.objects:
        return _compare_objects(args, cfg)
    from tqdm import tqdm

    engine, load_s = _setup(cfg)
    w, h = args.width, args.height
    timer = _Timer(engine, *_frames(w, h))
    bar = tqdm(total=args.warmup + args.frames, desc="bench", unit="frame", disable=args.no_progress)
    for i in range(args.warmup + args.frames):
        timer.step(i >= args.warmup)
        bar.update(1)
    bar.close()
    res = timer.res
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary = timer.summary()
    out = {
        "device": str(engine.device),
        "sources": list(cfg.sources),
        "frame": [w, h],
        **summary,
        "peak_rss_mb": float(peak_rss_mb),
        "model_load_s": load_s,
        "kbc_used": bool(res.kbc_used),
        "depth_weighted": bool(res.depth_weighted),
        "prior_mode_used": res.prior_mode_used,
        "config": cfg.to_dict(),
    }
    runtimes = ",".join(f"{k}={v}" for k, v in engine.runtimes.items())
    print(f"device {out['device']}  sources {','.join(cfg.sources)}  frame {w}x{h}  frames {summary['frames']}  "
          f"runtimes {runtimes}")
    print(f"latency p50 {out['latency_ms']['p50']:.1f} ms  p95 {out['latency_ms']['p95']:.1f} ms  "
          f"({out['fps_p50']:.1f} FPS)  peak RSS {peak_rss_mb:.0f} MB  model load {load_s:.1f} s")
    print(f"consensus prior used: {res.prior_mode_used}")
    print("stages p50 (ms): " + "  ".join(f"{k} {v:.1f}" for k, v in out["stages_ms_p50"].items()))
    write_json(args.json, out)
    return 0


def _alternate(args: argparse.Namespace, timers: dict) -> int:
    """Warm-up, then ``args.frames`` timed frames per timer in alternating blocks of ``args.block``; the block."""
    from tqdm import tqdm

    for timer in timers.values():
        for _ in range(args.warmup):
            timer.step(False)
    block = max(1, args.block)
    bar = tqdm(total=2 * args.frames, desc="bench", unit="frame", disable=args.no_progress)
    done = 0
    while done < args.frames:
        n = min(block, args.frames - done)
        for timer in timers.values():
            for _ in range(n):
                timer.step(True)
            bar.update(n)
        done += n
    bar.close()
    return block


def _ratio_table(sums: dict, a_name: str, b_name: str) -> dict[str, float]:
    """Print p50 latency and stages of two summaries side by side; the ratios b / a."""
    a, b = sums[a_name], sums[b_name]
    stages = list(dict.fromkeys([*a["stages_ms_p50"], *b["stages_ms_p50"]]))
    rows = [("latency", a["latency_ms"]["p50"], b["latency_ms"]["p50"])]
    rows += [(k, a["stages_ms_p50"].get(k, float("nan")), b["stages_ms_p50"].get(k, float("nan"))) for k in stages]
    ratio = {k: (y / x if x > 0 else float("nan")) for k, x, y in rows}
    print(f"{'p50 (ms)':<14}{a_name:>12}{b_name:>12}{'ratio':>8}")
    for k, x, y in rows:
        print(f"{k:<14}{x:>12.1f}{y:>12.1f}{ratio[k]:>8.2f}")
    return ratio


def _compare_objects(args: argparse.Namespace, cfg) -> int:
    """One object and ``args.objects`` objects (``args.views`` views each) in one engine, alternating blocks."""
    engine, load_s = _setup(cfg)
    w, h = args.width, args.height
    ref, live = _frames(w, h)
    one, many = "1x1", f"{args.objects}x{args.views}"
    objs = _objects(ref, args.objects, args.views)
    timers = {one: _Timer(engine, ref, live, _objects(ref, 1, 1)), many: _Timer(engine, ref, live, objs)}
    block = _alternate(args, timers)
    sums = {k: t.summary() for k, t in timers.items()}
    print(f"device {engine.device}  sources {','.join(cfg.sources)}  frame {w}x{h}  frames {args.frames} each, "
          f"alternating blocks of {block}; objects x views: {one} vs {many}")
    ratio = _ratio_table(sums, one, many)
    write_json(args.json, {"device": str(engine.device), "sources": list(cfg.sources), "frame": [w, h],
                           "block": block, "objects": args.objects, "views": args.views,
                           "compare": sums, "ratio_p50": ratio, "model_load_s": load_s, "config": cfg.to_dict()})
    return 0


def _compare(args: argparse.Namespace, cfg) -> int:
    """Torch and the other runtime side by side: alternating blocks of ``args.block`` frames."""
    other = cfg.runtime if cfg.runtime != "torch" else "auto"
    w, h = args.width, args.height
    ref, live = _frames(w, h)
    timers, loads = {}, {}
    for name in ("torch", other):
        engine, loads[name] = _setup(cfg.replace(runtime=name))
        timers[name] = _Timer(engine, ref, live)
    block = _alternate(args, timers)
    sums = {k: t.summary() for k, t in timers.items()}
    engine = timers["torch"].engine
    print(f"device {engine.device}  sources {','.join(cfg.sources)}  frame {w}x{h}  frames {args.frames} each, "
          f"alternating blocks of {block}")
    for name, s in sums.items():
        print(f"  {name}: runtimes " + ",".join(f"{k}={v}" for k, v in s["runtimes"].items())
              + f"  model load {loads[name]:.1f} s")
    ratio = _ratio_table(sums, "torch", other)
    out = {"device": str(engine.device), "sources": list(cfg.sources), "frame": [w, h], "block": block,
           "compare": {"torch": sums["torch"], other: sums[other]}, "runtime": other,
           "ratio_p50": ratio, "model_load_s": loads, "config": cfg.to_dict()}
    write_json(args.json, out)
    return 0
