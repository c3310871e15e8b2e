"""Developer comparison of consensus-prior variants in the KBC crop pass, on the small-object setting.

Same pairs and protocol as `semcorr eval --dataset pf-willow --small-object F --kbc on` (PCK per keypoint, bbox
threshold of the shrunk target), but every variant runs on each pair in turn with that pair's encodings cached
(the crops do not depend on the crop pass's prior), so the variants cost one evaluation:
  off   no prior in the crop pass (consensus_in_crop false)
  both  the engine's rule: a 2D affine fitted between the two crops, else the full-frame prior mapped into the crop
  fit   only the affine fitted between the crops
  map   only the full-frame prior mapped into the crop

Not part of the package. Usage (from outside the repository root):
    python lab/dev/tune_crop_prior.py ROOT [--small-object 0.03] [--kbc on]
"""

import argparse
import time
import types

import numpy as np
import torch

from semcorr_ros.config import EngineConfig
from semcorr_ros.data import build_dataset
from semcorr_ros.data.small import SmallObjectPairs
from semcorr_ros.engine import CorrespondenceEngine, kbc, stages
from semcorr_ros.engine.consensus import coarse_map
from semcorr_ros.engine.matching import pixels_to_uv, uv_to_pixels
from semcorr_ros.eval.pck import normalised_errors, normalisers, pck_of_errors


def _variant(kind):
    def crop_prior(ctx, crop_view, cfmap, frame, box, csize):  # the signature of stages._crop_prior
        mapped = None
        if frame.prior is not None:
            xy = uv_to_pixels(frame.prior, *frame.size).double().cpu().numpy()
            mapped = pixels_to_uv(torch.as_tensor(kbc.to_crop(xy, box), dtype=torch.float32), *csize)
        if kind == "map":
            return mapped
        uv = stages._affine_prior(ctx, crop_view, coarse_map(cfmap))
        if uv is not None:
            return uv
        return mapped if kind == "both" else None
    return crop_prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--small-object", type=float, default=0.03)
    ap.add_argument("--kbc", default="on")
    ap.add_argument("--variants", default="off,both,fit,map")
    args = ap.parse_args()
    ds = SmallObjectPairs(build_dataset("pf-willow", args.root), fraction=args.small_object)
    engine = CorrespondenceEngine(EngineConfig(kbc=args.kbc))
    base = engine.config
    cache: dict = {}
    orig = engine.encode_maps

    def encode_maps(self, image, cache_key=None):
        key = cache_key if cache_key is not None else hash(np.ascontiguousarray(image).tobytes())
        if key not in cache:
            cache[key] = orig(image)
        return cache[key]

    engine.encode_maps = types.MethodType(encode_maps, engine)
    variants = args.variants.split(",")
    hits = {v: [] for v in variants}
    t0 = time.perf_counter()
    for i in range(len(ds)):
        s = ds[i]
        cache.clear()
        ok = np.isfinite(s.src_kps).all(1)
        norm = float(normalisers(s.tgt_bbox[None], "bbox")[0])
        for v in variants:
            engine.config = base.replace(consensus_in_crop=v != "off")
            stages._crop_prior = _variant(v)
            r = engine.match_pair(s.src_image, s.src_kps[ok], s.tgt_image)
            err = normalised_errors(r.xy, s.tgt_kps[ok], norm)
            hits[v].append(err)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(ds)} pairs, {time.perf_counter() - t0:.0f} s: "
                  + "  ".join(f"{v} {pck_of_errors(np.concatenate(h), 0.1):.4f}" for v, h in hits.items()),
                  flush=True)
    for v, h in hits.items():
        e = np.concatenate(h)
        print(f"{v:<5} " + "  ".join(f"PCK@{a:g} {pck_of_errors(e, a):.4f}" for a in (0.05, 0.1, 0.15)))


if __name__ == "__main__":
    main()
