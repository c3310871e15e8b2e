"""Product apart from lab: the robot's modules never pull in the lab part, lab commands name their requirements."""

from __future__ import annotations

import subprocess
import sys

import pytest

from semcorr_ros import lab
from semcorr_ros.cli import main

PRODUCT_MODULES = ["semcorr_ros.engine", "semcorr_ros.ros.node", "semcorr_ros.reference", "semcorr_ros.eval",
                   "semcorr_ros.eval.pck_plots", "semcorr_ros.bageval.offline", "semcorr_ros.bageval.plots",
                   "semcorr_ros.cli.match_cmd", "semcorr_ros.cli.eval_cmd", "semcorr_ros.cli.bench_cmd",
                   "semcorr_ros.cli.bag_eval_cmd"]


def test_product_modules_import_no_lab_code_or_requirements() -> None:
    code = ("import importlib, sys\n"
            f"for m in {PRODUCT_MODULES!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('semcorr_ros.lab', 'open3d', 'libusb_package')))\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stdout + run.stderr


def test_eval_modules_import_without_a_circle() -> None:
    """eval.benchmark -> eval.calibration -> eval.pck only; the plots depend on results, not the other way round."""
    for first in ("semcorr_ros.eval.calibration", "semcorr_ros.eval.benchmark", "semcorr_ros.eval.pck_plots"):
        code = (f"import sys, {first}\n"
                "sys.exit(1 if 'semcorr_ros.eval.pck_plots' in sys.modules and "
                f"{first!r} != 'semcorr_ros.eval.pck_plots' else 0)\n")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
        assert run.returncode == 0, (first, run.stderr)


def test_require_names_the_lab_requirements_file() -> None:
    lab.require(("json",), "anything")  # present: no error
    with pytest.raises(lab.LabRequirementsError, match=r"pip install -r requirements-lab\.txt.*semcorr_no_such"):
        lab.require(("json", "semcorr_no_such_module"), "semcorr synth")
    assert lab.install_hint(["open3d"]).endswith("requirements-lab.txt (missing: open3d-cpu)")


@pytest.mark.parametrize("argv", [["synth", "OUT"], ["train-fusion", "--dataset", "synth", "--out", "x.safetensors"]])
def test_lab_commands_without_lab_requirements_fail_clearly(argv: list[str], tmp_path, monkeypatch, capsys) -> None:
    real = lab.missing_modules
    monkeypatch.setattr(lab, "missing_modules", lambda mods: [m for m in mods if m == "open3d"] or real(mods))
    argv = [a if a != "OUT" else str(tmp_path / "out") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pip install -r requirements-lab.txt" in err and "open3d" in err
    assert not (tmp_path / "out").exists()
