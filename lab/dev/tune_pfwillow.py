"""Developer sweep on pf-willow-dev: cache per-map features once, then score fusion/matching settings fast.

Not part of the package; used to choose the embedded default's settings (figures in the issue notes).
Usage: python lab/dev/tune_pfwillow.py ROOT [--effnet-layers 14,19] [--effnet-size 320] ...
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from semcorr_ros.data import build_dataset
from semcorr_ros.engine.features import build_source
from semcorr_ros.engine.inputs import image_to_tensor
from semcorr_ros.engine.matching import match_keypoints, pixels_to_uv, sample_descriptors, uv_to_pixels
from semcorr_ros.eval.pck import PCKAccumulator, normalisers

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--effnet-layers", default="14,19")
p.add_argument("--effnet-size", type=int, default=320)
p.add_argument("--dino-layers", default="7,8,9")
p.add_argument("--dino-size", type=int, default=224)
p.add_argument("--grid", type=int, default=40)
args = p.parse_args()

ds = build_dataset("pf-willow", args.root)
sources = [build_source("effnet-lite2", layers=[int(x) for x in args.effnet_layers.split(",")],
                        input_size=args.effnet_size),
           build_source("dinov2-s-imgfocus", layers=[int(x) for x in args.dino_layers.split(",")],
                        input_size=args.dino_size)]
keys = [f"{s.name}/{layer}" for s in sources for layer in s.layer_names]
if os.environ.get("QUANT"):
    sources[1] = torch.ao.quantization.quantize_dynamic(sources[1], {torch.nn.Linear}, dtype=torch.qint8)
amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(os.environ.get("BF16")))

cache_file = (f"/tmp/tune_cache_{os.environ.get('BF16', '')}{os.environ.get('QUANT', '')}_{args.effnet_layers}_"
              f"{args.effnet_size}_{args.dino_layers}_{args.dino_size}_{args.grid}.pt")
cache, sizes = {}, {}
t = time.time()
samples = [ds[i] for i in range(len(ds))]
if os.path.exists(cache_file):
    cache, sizes = torch.load(cache_file)
for s in samples:
    for name, img in ((s.src_name, s.src_image), (s.tgt_name, s.tgt_image)):
        k = (s.category, name)
        if k in cache:
            continue
        x = image_to_tensor(img, torch.device("cpu"))
        with torch.inference_mode(), amp:
            maps = [m.float() for src in sources for m in src(x)]
        cache[k] = [F.normalize(F.interpolate(m, size=(args.grid, args.grid), mode="bilinear"), dim=1)[0]
                    for m in maps]
        sizes[k] = (img.shape[1], img.shape[0])
torch.save((cache, sizes), cache_file)
print(f"encoded {len(cache)} images in {time.time() - t:.1f}s; maps {keys}")


def score(weights, radius=2, temp=0.02, center=False):
    w = torch.tensor(weights, dtype=torch.float32)
    w = w / w.sum()
    fused = {}
    for k, maps in cache.items():
        ms = maps
        if center is True:
            ms = [F.normalize(m - m.mean(dim=(1, 2), keepdim=True), dim=0) for m in maps]
        fused[k] = torch.cat([m * w[i].sqrt() for i, m in enumerate(ms) if w[i] > 0], 0)
    acc = PCKAccumulator()
    for s in samples:
        ks, kt = (s.category, s.src_name), (s.category, s.tgt_name)
        if center == "src":
            means = [m.mean(dim=(1, 2), keepdim=True) for m in cache[ks]]
            fused[ks], fused[kt] = (
                torch.cat([F.normalize(m - mu, dim=0) * w[i].sqrt() for i, (m, mu) in enumerate(zip(cache[k], means))
                           if w[i] > 0], 0) for k in (ks, kt))
        uv = pixels_to_uv(torch.as_tensor(s.src_kps, dtype=torch.float32), *sizes[ks])
        desc = sample_descriptors(fused[ks], uv)
        m = match_keypoints(desc, uv, fused[ks], fused[kt], radius=radius, temperature=temp)
        pred = uv_to_pixels(m.uv, *sizes[kt]).numpy()
        acc.add(pred, s.tgt_kps, float(normalisers(s.tgt_bbox[None], "bbox")[0]), s.category)
    return acc.pck()


if os.environ.get("SWEEP"):
    exec(open(os.environ["SWEEP"]).read())
    sys.exit(0)
for name, wts in [("uniform", [1] * len(keys)),
                  ("per-source", [1 / 2 / len(sources[0].layer_names)] * len(sources[0].layer_names)
                   + [1 / 2 / len(sources[1].layer_names)] * len(sources[1].layer_names))]:
    for center in (False, True):
        r = score(wts, center=center)
        print(f"{name:12s} center={center}: " + " ".join(f"{a}:{v:.4f}" for a, v in r.items()))
for i, k in enumerate(keys):
    wts = [0] * len(keys)
    wts[i] = 1
    print(f"only {k}: {score(wts)[0.1]:.4f}  centered {score(wts, center=True)[0.1]:.4f}")
