"""OpenMP wait policy set-up at the edge: bounded spinning by default, the user's choice respected."""

import subprocess
import sys

import pytest

from semcorr_ros.threads import DEFAULT_SPINCOUNT, configure_openmp


@pytest.mark.parametrize("env, expect", [
    ({}, {"GOMP_SPINCOUNT": DEFAULT_SPINCOUNT}),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ({"GOMP_SPINCOUNT": "5"}, {"GOMP_SPINCOUNT": "5"}),
])
def test_configure_openmp(monkeypatch, env, expect):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    configure_openmp()
    import os

    assert {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if os.environ.get(k)} == expect


def test_cli_configures_before_torch_is_imported():
    code = ("import sys, os; os.environ.pop('OMP_WAIT_POLICY', None); os.environ.pop('GOMP_SPINCOUNT', None);\n"
            "from semcorr_ros.cli import main\n"
            "try:\n    main(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.stdout.split()[-2:] == ["False", DEFAULT_SPINCOUNT], r.stdout + r.stderr
