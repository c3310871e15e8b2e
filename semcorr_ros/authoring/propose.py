"""Keypoints for a new view of an object proposed by the engine from a view already annotated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semcorr_ros.authoring.document import PROPOSAL_KEY, Draft, read_draft, save_draft


@dataclass
class Proposal:
    """Per keypoint of the source: where it landed, its score and whether it was written (valid match)."""

    names: list[str]
    xy: list[list[float]]
    scores: list[float]
    written: list[bool]
    uncertain: list[str]


def propose(source: str | Path, target: str | Path, engine, *, threshold: float = 0.5,
            keep_existing: bool = False) -> tuple[Draft, Proposal]:
    """Match every keypoint of ``source`` (a loadable reference) into the image of ``target`` (a reference YAML,
    keypoints or not) with ``engine.match_pair`` and write them into ``target``.

    Matches that fall outside the image (``valid`` false with a score of 0) are not written; the others are, with
    their score in ``proposal.scores``; those below ``threshold`` are listed in ``proposal.uncertain``.
    ``keep_existing``: keypoints already in ``target`` stay as they are.
    """
    from semcorr_ros.reference import load_reference

    src = load_reference(source)
    draft = read_draft(target)
    res = engine.match_pair(src.image, src.keypoints, draft.image)
    h, w = draft.image.shape[:2]
    names, xys, scores, written, unsure = [], [], [], [], []
    for name, (x, y), s in zip(src.names, res.xy, res.score):
        inside = 0 <= x <= w - 1 and 0 <= y <= h - 1
        names.append(name)
        xys.append([float(x), float(y)])
        scores.append(float(s))
        write = bool(inside) and not (keep_existing and name in draft.keypoints)
        written.append(write)
        if write:
            draft.keypoints[name] = [float(x), float(y)]
            draft.scores[name] = float(s)
            if s < threshold:
                unsure.append(name)
    draft.doc[PROPOSAL_KEY] = {"from": str(Path(source)), "threshold": float(threshold)}
    save_draft(draft, threshold)
    return draft, Proposal(names, xys, scores, written, unsure)
