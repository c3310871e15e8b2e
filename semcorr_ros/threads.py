"""Process-level CPU threading set-up, done once at the edge (CLI, node) before torch is imported.

PyTorch's CPU wheels use GNU OpenMP. Its worker threads spin while they wait for work; with the default spin
count a 2-thread forward pass next to one other busy process took 1.5-4 s instead of 0.1 s on a 2-core
machine, while never spinning (``OMP_WAIT_POLICY=PASSIVE``) costs ~25% on an idle machine. A short spin is the
compromise (measured with ``semcorr bench``, 640x480 RGB-D frame, 2 threads)::

    setting                      idle p50   next to one busy process p50
    OMP_WAIT_POLICY=PASSIVE      106 ms     143 ms
    GOMP_SPINCOUNT=1000           84 ms     179 ms      <- default here
    GOMP_SPINCOUNT=100000         78 ms     1527 ms
    OMP_WAIT_POLICY=ACTIVE        77 ms     (seconds)

A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is left alone.
"""

from __future__ import annotations

import os

DEFAULT_SPINCOUNT = "1000"


def configure_openmp() -> None:
    """Bound OpenMP spin-waiting unless the environment already chose a policy. Call before importing torch."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT
