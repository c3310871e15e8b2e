"""The lab part of semcorr_ros: what makes and studies the product, not what a robot runs.

- :mod:`semcorr_ros.lab.synth`: procedural RGB-D scenes with ground truth (``semcorr synth``; needs open3d),
- :mod:`semcorr_ros.lab.train`: training of the small learned parts (``semcorr train-fusion``,
  ``semcorr train-kbcnet``; ``--dataset synth`` renders scenes, so it needs open3d too).

Ablations, sweeps and benchmarks over these live as scripts in the repository's top-level ``lab/`` folder.
The product (engine, node, references, ``semcorr match/eval/bench/bag-eval``) never imports this package; its
extra requirements are in ``requirements-lab.txt`` and a robot install (``requirements.txt``) does not pull them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from semcorr_ros.errors import SemcorrError

#: the requirements file of the lab part (relative to the repository root).
LAB_REQUIREMENTS = "requirements-lab.txt"

#: importable module name -> distribution name in requirements-lab.txt.
LAB_DISTRIBUTIONS = {"open3d": "open3d-cpu", "libusb_package": "libusb-package"}


class LabRequirementsError(SemcorrError, RuntimeError):
    """A lab feature was asked for but one of the lab requirements is not installed."""

    kind = "lab_requirements"


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The names of ``modules`` that cannot be imported here (checked without importing them)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def install_hint(modules: Sequence[str] = ()) -> str:
    """``pip install -r requirements-lab.txt`` and the missing distributions by name."""
    dists = ", ".join(LAB_DISTRIBUTIONS.get(m, m) for m in modules)
    return (f"install the lab requirements: pip install -r {LAB_REQUIREMENTS}" + (f" (missing: {dists})" if dists
                                                                                    else ""))


def require(modules: Sequence[str], purpose: str) -> None:
    """Raise :class:`LabRequirementsError` naming ``purpose`` and the install command when a module is missing.

    Args:
        modules: importable names (``"open3d"``).
        purpose: what needs them, for the message (``"semcorr synth"``).
    """
    missing = missing_modules(modules)
    if missing:
        raise LabRequirementsError(f"{purpose} is part of the lab and needs {', '.join(missing)}, which is not "
                                   f"installed: {install_hint(missing)}")
