"""Semantic-correspondence benchmarks as lazy pair datasets (PF-WILLOW, SPair-71k, PF-PASCAL, AP-10K) and your own
annotated views (reference files, ``references``).

Every loader yields :class:`PairSample` (images ``uint8 [H, W, 3]`` RGB, keypoints ``[K, 2]`` 0-based ``(x, y)``
pixels, boxes ``(x0, y0, x1, y1)``); :func:`build_dataset` picks one by name.
"""

from semcorr_ros.data.ap10k import AP10KDataset
from semcorr_ros.data.base import DATASETS, PairDataset, PairInfo, PairSample, build_dataset, keypoint_bbox, load_rgb
from semcorr_ros.data.pfpascal import PFPascalDataset
from semcorr_ros.data.pfwillow import PFWillowDataset
from semcorr_ros.data.spair import SPairDataset

__all__ = ["DATASETS", "AP10KDataset", "PairDataset", "PairInfo", "PairSample", "PFPascalDataset",
           "PFWillowDataset", "SPairDataset", "build_dataset", "keypoint_bbox", "load_rgb"]
