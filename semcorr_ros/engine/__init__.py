"""ROS-free core: feature sources, fusion, depth-aware weighting, matching, KBC, 3D lifting and pose."""

from semcorr_ros.engine.engine import CorrespondenceEngine, Reference, resolve_device
from semcorr_ros.engine.types import MatchResult, PoseResult

__all__ = ["CorrespondenceEngine", "MatchResult", "PoseResult", "Reference", "resolve_device"]
