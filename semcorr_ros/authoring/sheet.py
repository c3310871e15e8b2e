"""Checking a reference, set or objects file and drawing its contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def summarise(objects) -> list[dict]:
    """Per object: id, names and per view its id, size, keypoints, depth/intrinsics and the missing names."""
    out = []
    for obj in objects:
        views = []
        for v in obj.views:
            views.append({"view_id": v.reference_id, "size": [int(v.image.shape[1]), int(v.image.shape[0])],
                          "keypoints": len(v.names), "depth": v.depth is not None,
                          "intrinsics": v.intrinsics is not None,
                          "missing": [n for n in obj.names if n not in v.names]})
        out.append({"object_id": obj.object_id, "names": list(obj.names), "views": views})
    return out


def contact_sheet(objects, path: str | Path, *, thumb: float = 3.2) -> Path:
    """One row per object, one panel per view: the image, its keypoints with names, the missing names below."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = max(len(o.views) for o in objects)
    fig, axes = plt.subplots(len(objects), cols, figsize=(thumb * cols, thumb * 0.9 * len(objects)),
                             squeeze=False)
    cmap = matplotlib.colormaps["tab20"]
    for r, obj in enumerate(objects):
        colour = {n: cmap(i % 20) for i, n in enumerate(obj.names)}
        for c in range(cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(obj.views):
                continue
            v = obj.views[c]
            ax.imshow(v.image)
            for n, (x, y) in zip(v.names, np.asarray(v.keypoints)):
                ax.plot([x], [y], "o", ms=5, mfc=colour[n], mec="black", mew=0.8)
                ax.annotate(n, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=5, color="white",
                            bbox={"fc": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
            missing = [n for n in obj.names if n not in v.names]
            ax.set_title(f"{obj.object_id} / {v.reference_id}: {len(v.names)} kp", fontsize=7)
            ax.text(0.0, -0.02, ("missing: " + ", ".join(missing)) if missing else "all keypoints",
                    transform=ax.transAxes, fontsize=5, va="top", wrap=True)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
