"""README.md stays true: its Python API example runs for real and gives the right answer; its links resolve.

The example matches the example reference (config/example_reference.yaml) into itself moved by a known shift,
with the embedded default model, so every keypoint's true match and the pose's translation are known.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def _section(text: str, heading: str) -> str:
    """The text of a ``## heading`` section, up to the next ``## ``."""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, f"README.md has no '## {heading}' section"
    return m.group(1)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def readme_api_example() -> str:
    blocks = _python_blocks(_section(README.read_text(encoding="utf-8"), "Python API"))
    assert len(blocks) == 1, f"expected one python block under '## Python API', found {len(blocks)}"
    return blocks[0]


def test_api_example_is_short() -> None:
    code = readme_api_example()
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert 5 <= len(lines) <= 16, f"the README's API example has {len(lines)} lines"
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_api_example_runs_and_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the README's block as written (from the repository root, where its relative path points) and check
    the answer: the shift is 12 px right and 5 px down, the example robot stands at 0.8 m, fx = fy = 600."""
    monkeypatch.chdir(REPO)
    namespace: dict = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_api_example(), str(README), "exec"), namespace)  # noqa: S102 -- our own README
    printed = out.getvalue()
    ref, result = namespace["ref"], namespace["result"]
    assert list(result.names) == list(ref.names)
    assert all(name in printed for name in ref.names)
    assert "pose t:" in printed

    expected = ref.keypoints + np.array([12.0, 5.0])
    err = np.linalg.norm(result.xy - expected, axis=1)
    # the fused map is a 32-cell grid (20 px cells at 640x480), refined by a soft-argmax: a few pixels off
    assert np.median(err) < 8.0, f"pixel errors {err.round(1)}"
    assert (err < 12.0).mean() >= 0.8, f"pixel errors {err.round(1)}"
    assert result.valid.mean() >= 0.8
    assert result.has_3d.all()
    ok = err < 12.0
    assert np.nanmedian(result.points3d[ok, 2]) == pytest.approx(0.8, abs=0.03)

    assert result.pose is not None and result.pose.valid
    np.testing.assert_allclose(result.pose.t, [12 * 0.8 / 600, 5 * 0.8 / 600, 0.0], atol=0.01)
    np.testing.assert_allclose(result.pose.R, np.eye(3), atol=0.05)


def test_readme_links_and_picture() -> None:
    """Relative links and images in README.md point at files that exist; the picture stays small."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "README.md links to nothing"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert len(images) == 1, images
    assert (REPO / images[0]).stat().st_size < 300_000
    assert README.stat().st_size <= 10_240, f"README.md is {README.stat().st_size} bytes"
